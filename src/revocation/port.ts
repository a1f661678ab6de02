import type { AgentId, Jti, Subject } from '../core/claims.js'

/** What the exchange asks before it issues: may this agent act for this user on this chain? */
export interface RevocationQuery {
  readonly agent: AgentId
  readonly sub: Subject
  /** Every agent already in the chain (for a re-delegation), newest first. */
  readonly actors: readonly AgentId[]
  /** `jti`s of every ancestor token, root first; empty on a first hop. */
  readonly ancestors: readonly Jti[]
  /**
   * Issue time (epoch seconds) of the subject token (the user's token, or the
   * parent Mandate token): kills are keyed on issue time, so a token issued
   * before a kill stays dead after the kill is lifted.
   */
  readonly subjectIssuedAt: number
}

export type RevocationVerdict =
  | { readonly state: 'clear' }
  /**
   * `agent`: the requesting agent itself is killed (`unauthorized_client`);
   * `subject`: the user, an ancestor token or an ancestor agent is (`invalid_request`).
   */
  | { readonly state: 'revoked'; readonly what: 'agent' | 'subject'; readonly detail: string }
  /** The list cannot be trusted right now (store unreachable, mirror stale): fail closed. */
  | { readonly state: 'unknown'; readonly detail: string }

/**
 * The revocation list as the hot path sees it: answered from memory, with no
 * network round trip. Adapters keep that memory in step with the shared store.
 */
export interface RevocationStore {
  check(query: RevocationQuery): RevocationVerdict
}
