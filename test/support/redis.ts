/**
 * The Redis the integration tests use (`REDIS_URL`, default
 * redis://127.0.0.1:6379), probed once per file. Unreachable under
 * `CI=true`: the file fails. Elsewhere its Redis suites are skipped, with a
 * warning naming the file.
 */
import { Redis, type RedisOptions } from 'ioredis'

export const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'

/** As compose.ts configures its connection: fail fast, never queue forever. */
export const REDIS_CLIENT_OPTIONS = {
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  connectTimeout: 2000,
  commandTimeout: 2000,
} satisfies RedisOptions

/** True when a Redis at `url` answers PING (one short-lived connection, no retry). */
export async function redisAnswers(url: string): Promise<boolean> {
  const r = new Redis(url, { ...REDIS_CLIENT_OPTIONS, lazyConnect: true, retryStrategy: () => null })
  r.on('error', () => {})
  try {
    await r.connect()
    return (await r.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

/** True when Redis answers; throws under CI=true when it does not. */
export async function redisAvailable(suite: string): Promise<boolean> {
  const reachable = await redisAnswers(REDIS_URL)
  if (!reachable && process.env['CI'] === 'true') {
    throw new Error(`${suite}: Redis is not reachable at ${REDIS_URL} (set REDIS_URL); CI must not skip these tests`)
  }
  if (!reachable) console.warn(`${suite}: Redis not reachable at ${REDIS_URL}; skipped (a failure under CI=true)`)
  return reachable
}

/** Deletes every key under `prefix` (SCAN + DEL, never FLUSH); returns how many. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    if (keys.length > 0) deleted += await redis.del(...keys)
    cursor = next
  } while (cursor !== '0')
  return deleted
}
