/** How Mandate holds a Redis connection: reconnecting soon, and letting go within a bound. */
import type { Redis } from 'ioredis'

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
  try {
    if (conn.status === 'ready') {
      await Promise.race([conn.quit(), new Promise((resolve) => setTimeout(resolve, 1_000).unref())])
    }
  } catch {
    // Closing anyway.
  } finally {
    conn.disconnect()
  }
}
