import { retryAfterSeconds } from '../core/errors.js'
import { msToFill, msUntilToken, tokensAt, type BucketState } from './bucket.js'
import type { Admission, AdmissionRequest, AdmissionStore, BucketCharge } from './port.js'

/** How often, by the injected clock, spent `jti`s and refilled buckets are dropped. */
const SWEEP_EVERY_MS = 10_000

function bucketKey(b: BucketCharge): string {
  return b.scope === 'agent' ? `a\n${b.agent}` : `u\n${b.agent}\n${b.issuer}\n${b.sub}`
}

/**
 * The store of a single process (embedded mode). Its memory begins at
 * `since` (default: when it is created), which must not precede the moment
 * this process could first accept an assertion, e.g. the broker's start: an
 * assertion the previous process may have accepted is then refused, never
 * replayed. `clock` is epoch milliseconds.
 */
export function createMemoryAdmissionStore(clock: () => number, since = clock()): AdmissionStore {
  const spent = new Map<string, number>()
  const buckets = new Map<string, BucketState & { fullAt: number }>()
  let nextSweep = since + SWEEP_EVERY_MS

  function sweep(now: number): void {
    for (const [k, until] of spent) if (until <= now) spent.delete(k)
    for (const [k, b] of buckets) if (b.fullAt <= now) buckets.delete(k)
    nextSweep = now + SWEEP_EVERY_MS
  }

  function admit(request: AdmissionRequest): Admission {
    const now = clock()
    if (now >= nextSweep) sweep(now)
    const { assertion, proofs = [] } = request
    const uses = assertion === undefined ? proofs : [assertion, ...proofs]
    for (const [i, use] of uses.entries()) {
      if (use.earliestUse < since) return { outcome: 'predates_memory', retryAfter: retryAfterSeconds(since - use.earliestUse) }
      const until = spent.get(use.key)
      if (until !== undefined && until > now) return { outcome: i === 0 && assertion !== undefined ? 'replayed' : 'proof_replayed' }
      spent.set(use.key, Math.max(use.expiresAt, now + 1000))
    }
    if (request.buckets.length === 0) return { outcome: 'admitted' }
    const keys = request.buckets.map(bucketKey)
    const tokens = request.buckets.map((b, i) => tokensAt(buckets.get(keys[i]!), b.limit, now))
    for (let i = 0; i < tokens.length; i++) {
      if (tokens[i]! < 1) {
        const b = request.buckets[i]!
        return { outcome: 'limited', scope: b.scope, retryAfter: retryAfterSeconds(msUntilToken(tokens[i]!, b.limit)) }
      }
    }
    request.buckets.forEach((b, i) => {
      const left = tokens[i]! - 1
      buckets.set(keys[i]!, { tokens: left, at: now, fullAt: now + msToFill(b.limit) })
    })
    return { outcome: 'admitted' }
  }

  function peek(charges: readonly BucketCharge[]): Admission {
    const now = clock()
    for (const b of charges) {
      const tokens = tokensAt(buckets.get(bucketKey(b)), b.limit, now)
      if (tokens < 1) return { outcome: 'limited', scope: b.scope, retryAfter: retryAfterSeconds(msUntilToken(tokens, b.limit)) }
    }
    return { outcome: 'admitted' }
  }

  return { admit: (request) => Promise.resolve(admit(request)), peek: (charges) => Promise.resolve(peek(charges)) }
}
