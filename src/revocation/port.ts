import type { Revocation } from '@mandate/verifier/revocation'

// The records and the mirror's contract are the verifier package's: resource servers read the same records off the feed.
export {
  inForce,
  KILL_KINDS,
  tokenFacts,
  type Revocation,
  type RevocationKind,
  type RevocationMirror,
  type RevocationQuery,
  type RevocationStore,
  type RevocationTarget,
  type RevocationVerdict,
  type TokenFacts,
  type UserIssuer,
} from '@mandate/verifier/revocation'

/** Durable record of every revocation (PostgreSQL, PGlite, or memory in tests). */
export interface RevocationLog {
  /** Resolves once the record is durable; rejects otherwise. */
  insert(record: Revocation): Promise<void>
  /**
   * Marks a kill lifted, once; resolves once durable with the record as
   * stored and whether this call lifted it (`changed: false`: it already
   * was, and the first lifter is kept). Resolves undefined when no record
   * has that id.
   */
  lift(id: string, by: string, at: number): Promise<LiftOutcome | undefined>
  get(id: string): Promise<Revocation | undefined>
  /** Every record still relevant at `now`: kills (in force or not) and unexpired jti/chain entries, oldest first. */
  listRelevant(now: number): Promise<readonly Revocation[]>
  /** Newest first, at most `limit`, before the `before` cursor (a record id) when given. */
  list(options: { limit: number; before?: string }): Promise<readonly Revocation[]>
}

export interface LiftOutcome {
  readonly record: Revocation
  /** False when the kill was already lifted: nothing was written. */
  readonly changed: boolean
}

/** Carries revocations between instances and keeps the local mirror in step. */
export interface RevocationFeed {
  /** Resolves once the shared store has the record (every mirror will apply it); rejects otherwise. */
  publish(record: Revocation): Promise<void>
  /** False when this instance has not heard from the shared store within the bound: fail closed. */
  fresh(): boolean
  /** Milliseconds since this instance last heard from the shared store. */
  lag(): number
  close(): Promise<void>
}
