/** How Mandate holds a Redis connection: reconnecting soon, and letting go within a bound. */
import { Redis } from 'ioredis'
import { settleWithin } from '../core/async.js'

/** Longest wait between two reconnect attempts. */
export const MAX_RECONNECT_DELAY_MS = 200

/**
 * ioredis `retryStrategy` for every connection the broker holds: the next
 * reconnect attempt within MAX_RECONNECT_DELAY_MS however long Redis has been
 * gone (ioredis's default grows to 2 s), so that the broker serves again
 * within about that much once Redis is back.
 */
export function redisReconnectDelay(times: number): number {
  return Math.min(times * 50, MAX_RECONNECT_DELAY_MS)
}

/** QUIT when connected (waiting at most 1 s), then disconnect whatever happened. Never rejects. */
export async function quitRedis(conn: Redis): Promise<void> {
  if (conn.status === 'ready') await settleWithin(conn.quit(), 1_000)
  conn.disconnect()
}

/**
 * The broker's command connection (admission, and the template the
 * revocation feed duplicates). Resolves once connected; rejects (fail closed
 * at start) when Redis cannot be reached within 5 s.
 */
export async function openRedis(url: string): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: false,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2000,
    commandTimeout: 2000,
    // The admission commands run on this connection: it must be back as soon as Redis is.
    retryStrategy: redisReconnectDelay,
    // The admission commands of one event-loop turn go out in one write and Redis answers them
    // in one read: one syscall each way for many exchanges, not one per exchange.
    enableAutoPipelining: true,
  })
  redis.on('error', () => undefined) // reported through freshness and failed calls, not per retry
  try {
    await waitReady(redis)
  } catch (err) {
    redis.disconnect()
    throw err
  }
  return redis
}

function waitReady(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new TypeError('cannot reach Redis (REDIS_URL) within 5 s')), 5000)
    redis.once('ready', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}
