import type { Redis } from 'ioredis'
import type { ReplayCache } from './port.js'

export interface RedisReplayCacheOptions {
  /** Longest `remember` waits for Redis before it rejects, whatever `redis` is configured with. Default 2000. */
  readonly timeoutMs?: number
}

/**
 * Replay cache shared by every instance (DESIGN.md "Decisions": client
 * assertion `jti`s, Redis set-if-absent, fail closed). `remember` is one
 * `SET <prefix>jti:<key> 1 PX <ms> NX`: the entry lives for the rest of
 * `expiresAt` by the injected clock (`now`, epoch seconds), at least 1 s.
 * Resolves true when the key was new, false when it existed; rejects when
 * Redis does not answer within `timeoutMs` (then the exchange fails closed).
 *
 * `redis` stays the caller's; give it `commandTimeout` (at most `timeoutMs`
 * spares a timer per call: the client's own then bounds the wait) and a small
 * `maxRetriesPerRequest` (or no offline queue) so that commands that timed out
 * here do not pile up while Redis is away. A SET that reaches Redis after its
 * call was rejected only marks a `jti` as used, which is the safe side.
 */
export function createRedisReplayCache(
  redis: Redis,
  prefix: string,
  now: () => number,
  options: RedisReplayCacheOptions = {},
): ReplayCache {
  const timeoutMs = options.timeoutMs ?? 2_000
  if (!(timeoutMs > 0)) throw new TypeError('timeoutMs must be positive')
  // A client whose own commandTimeout is as short already rejects in time: no second timer per call.
  const clientBound = (redis.options.commandTimeout ?? Infinity) <= timeoutMs
  return {
    async remember(key, expiresAt) {
      const ttlMs = Math.max(1_000, Math.ceil((expiresAt - now()) * 1_000))
      const set = redis.set(`${prefix}jti:${key}`, '1', 'PX', ttlMs, 'NX')
      if (clientBound) return (await set) === 'OK'
      set.catch(() => {})
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`replay cache: redis did not answer within ${timeoutMs} ms`)), timeoutMs)
      })
      try {
        return (await Promise.race([set, timeout])) === 'OK'
      } finally {
        clearTimeout(timer)
      }
    },
  }
}
