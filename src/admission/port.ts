import type { AgentId } from '../core/claims.js'
import type { RateLimit } from '../policy/port.js'

/**
 * A client assertion to spend (RFC 7523 §3 item 7: a `jti` is used once).
 * Times are epoch milliseconds.
 */
export interface AssertionUse {
  /** The agent and the assertion's `jti`. */
  readonly key: string
  /**
   * The earliest moment the broker could have accepted this assertion
   * before: its `iat` less the clock skew allowed on `iat`, or its `exp` less
   * the longest lifetime an assertion may have when presented, whichever is
   * later. If the store's memory began after that moment, the assertion may
   * have been spent and forgotten.
   */
  readonly earliestUse: number
  /** Until when the `jti` must be remembered. */
  readonly expiresAt: number
}

/** One token bucket a request draws from. */
export type BucketCharge =
  | { readonly scope: 'agent'; readonly agent: AgentId; readonly limit: RateLimit }
  | {
      readonly scope: 'user'
      readonly agent: AgentId
      /** A user is its issuer and `sub`, not `sub` alone (RFC 9493 `iss_sub`). */
      readonly issuer: string
      readonly sub: string
      readonly limit: RateLimit
    }

export interface AdmissionRequest {
  readonly assertion: AssertionUse | undefined
  /** DPoP proofs to spend with it (RFC 9449 §11.1: a proof's `jti` is used once), after the assertion. */
  readonly proofs?: readonly AssertionUse[]
  readonly buckets: readonly BucketCharge[]
}

/** What the store decided; `retryAfter` is in seconds, at least 1. */
export type Admission =
  | { readonly outcome: 'admitted' }
  /** The `jti` was spent before. */
  | { readonly outcome: 'replayed' }
  /** A DPoP proof's `jti` was spent before. */
  | { readonly outcome: 'proof_replayed' }
  /** The assertion may have been spent before the store's memory began: a fresh one is needed. */
  | { readonly outcome: 'predates_memory'; readonly retryAfter: number }
  /** A bucket is empty; nothing was drawn from any. */
  | { readonly outcome: 'limited'; readonly scope: BucketCharge['scope']; readonly retryAfter: number }

/**
 * Single-use assertions and rate limits, shared by every instance, decided
 * in one step so that a request costs at most one round trip. `admit`
 * decides, as if atomically and in this order: refuse an assertion whose
 * `earliestUse` precedes the start of the store's memory
 * (`predates_memory`); spend its `jti`, refusing a second use
 * (`replayed`); the same for each DPoP proof (`proof_replayed`); draw one token from every bucket, or from none when one is
 * empty (`limited`). A refused request draws from no bucket; its assertion
 * may be left spent (one refused as predating stays refused anyway, and one
 * refused for a limit must not be retried). Resolves the decision; rejects
 * when the store cannot answer, and the caller then fails closed.
 *
 * The store's memory begins when it was found empty: at creation for a
 * process-local store, and for a shared one whenever its marker is missing
 * (a new, flushed or restarted store).
 */
export interface AdmissionStore {
  admit(request: AdmissionRequest): Promise<Admission>
  /**
   * What `admit` would say of `buckets` now, drawing from none and spending
   * nothing (policy explain). `admitted` or `limited` only. Absent: the store
   * cannot tell without drawing.
   */
  peek?(buckets: readonly BucketCharge[]): Promise<Admission>
}
