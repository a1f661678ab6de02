import type { ReplayCache } from './port.js'

/** Single-process replay cache. Entries leave once their `expiresAt` has passed. */
export function createMemoryReplayCache(now: () => number): ReplayCache {
  const seen = new Map<string, number>()
  let nextSweep = 0
  return {
    remember(key, expiresAt) {
      const t = now()
      if (t >= nextSweep) {
        for (const [k, exp] of seen) if (exp <= t) seen.delete(k)
        nextSweep = t + 10
      }
      const previous = seen.get(key)
      if (previous !== undefined && previous > t) return Promise.resolve(false)
      seen.set(key, expiresAt)
      return Promise.resolve(true)
    },
  }
}
