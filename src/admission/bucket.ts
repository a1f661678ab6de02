import type { RateLimit } from '../policy/port.js'

/**
 * Token-bucket arithmetic of the process-local store; the Redis store does
 * the same in its script. Times in epoch milliseconds.
 */
export interface BucketState {
  tokens: number
  at: number
}

/** Tokens in the bucket at `now`: what was left, refilled since, capped at the burst; full when new. */
export function tokensAt(state: BucketState | undefined, limit: RateLimit, now: number): number {
  if (state === undefined) return limit.burst
  // A clock that stepped back refills nothing rather than draining.
  const elapsed = Math.max(0, now - state.at)
  return Math.min(limit.burst, state.tokens + (elapsed * limit.perSecond) / 1000)
}

/** Milliseconds until a bucket holding `tokens` (< 1) holds one, to the nearest ms (as the Redis script rounds). */
export function msUntilToken(tokens: number, limit: RateLimit): number {
  return Math.round(((1 - tokens) * 1000) / limit.perSecond)
}

/** Milliseconds an untouched bucket takes to fill up from empty: after that, forgetting it changes nothing. */
export function msToFill(limit: RateLimit): number {
  return Math.ceil((limit.burst * 1000) / limit.perSecond)
}
