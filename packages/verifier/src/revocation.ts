/**
 * A revocation as the broker records and propagates it, and what a check
 * against the revocation list answers. The broker's revocation port
 * (src/revocation/port.ts) re-exports these: one definition of the records
 * that cross the wire.
 */
import { actorsOf, instancesOf, type ActorInstance, type AgentId, type Jti, type MandateClaims, type Subject } from './claims.js'

/**
 * The issuer a user kill names: a `sub` is unique only within its issuer
 * (RFC 9493 §3.2.5 `iss_sub`), so a user is the pair. `null` is "any
 * issuer": kills recorded before kills named one keep applying to that `sub`
 * at every issuer, so that no migration un-kills anyone.
 */
export type UserIssuer = string | null

/** What a revocation stops. */
export type RevocationTarget =
  /** One token. Tokens already derived from it stay valid; no new ones can be. */
  | { readonly kind: 'jti'; readonly jti: Jti }
  /** A token and every token delegated from it, at any depth. */
  | { readonly kind: 'chain'; readonly jti: Jti }
  /** Every live token of the agent, and no new issuance until lifted. */
  | { readonly kind: 'agent'; readonly agent: AgentId }
  /** Every delegation made for the user, and no new one until lifted. */
  | { readonly kind: 'sub'; readonly sub: Subject; readonly iss: UserIssuer }
  /** The agent, for one user only. */
  | { readonly kind: 'agent_sub'; readonly agent: AgentId; readonly sub: Subject; readonly iss: UserIssuer }
  /**
   * One running copy of the agent (its attested instance, as `act.instance`
   * names it): every live token a hop of which that copy asked for, and no
   * new issuance to it until lifted. The agent's other copies are untouched.
   */
  | { readonly kind: 'instance'; readonly agent: AgentId; readonly instance: string }

export type RevocationKind = RevocationTarget['kind']

/** Kinds that stay in force until lifted; the others end when their tokens have expired. */
export const KILL_KINDS: ReadonlySet<RevocationKind> = new Set(['agent', 'sub', 'agent_sub', 'instance'])

/** One revocation as stored, propagated and listed. Times are epoch seconds. */
export interface Revocation {
  /** UUID. */
  readonly id: string
  readonly target: RevocationTarget
  readonly reason: string
  /** Who made it: the admin key's name. */
  readonly createdBy: string
  /** Tokens issued at or before this instant are dead for good, even after a lift. */
  readonly createdAt: number
  /**
   * `jti`/`chain` only: when every affected token has expired (issue time +
   * longest token lifetime + skew), after which the entry may be dropped.
   */
  readonly expiresAt: number | undefined
  /** Kill kinds only: set once the kill is lifted. */
  readonly liftedAt: number | undefined
  readonly liftedBy: string | undefined
}

/** Whether a kill still stops new issuance. */
export function inForce(r: Revocation): boolean {
  return KILL_KINDS.has(r.target.kind) && r.liftedAt === undefined
}

/** What the exchange asks before it issues: may this agent act for this user on this chain? */
export interface RevocationQuery {
  readonly agent: AgentId
  /** The requesting agent's attested instance, when its authentication names one. */
  readonly instance?: string | undefined
  readonly sub: Subject
  /** Issuer of the user's upstream token (`sub_id.iss` down a chain). */
  readonly subIssuer: string
  /** Every agent already in the chain (for a re-delegation), newest first. */
  readonly actors: readonly AgentId[]
  /** `jti`s of every ancestor token, root first; empty on a first hop. */
  readonly ancestors: readonly Jti[]
  /** The instances the chain's earlier hops name (`act.instance`), newest first; absent: none. */
  readonly actorInstances?: readonly ActorInstance[] | undefined
  /**
   * Issue time (epoch seconds) of the subject token (the user's token, or the
   * parent Mandate token): kills are keyed on issue time, so a token issued
   * before a kill stays dead after the kill is lifted.
   */
  readonly subjectIssuedAt: number
}

/** A Mandate token as introspection and verifiers see it. */
export interface TokenFacts {
  readonly jti: Jti
  readonly sub: Subject
  /** The user's issuer, from the token's `sub_id` (RFC 9493). */
  readonly subIssuer: string
  /** Every agent in the token's `act`, newest first (the holder first). */
  readonly actors: readonly AgentId[]
  /** Ancestor `jti`s, root first. */
  readonly chain: readonly Jti[]
  readonly iat: number
  /** The instances the token's `act` hops name, newest first; absent: none. */
  readonly instances?: readonly ActorInstance[] | undefined
}

/** What the revocation list needs of a verified Mandate token. */
export function tokenFacts(claims: MandateClaims): TokenFacts {
  return {
    jti: claims.jti,
    sub: claims.sub,
    subIssuer: claims.sub_id.iss,
    actors: actorsOf(claims.act),
    chain: claims.chain ?? [],
    iat: claims.iat,
    instances: instancesOf(claims.act),
  }
}

export type RevocationVerdict =
  | { readonly state: 'clear' }
  /**
   * `agent`: the requesting agent itself is killed, for everyone or for this
   * user (`unauthorized_client`); `subject`: the user, an ancestor token or an
   * ancestor agent is (`invalid_request`).
   */
  | { readonly state: 'revoked'; readonly what: 'agent' | 'subject'; readonly detail: string }
  /** The list cannot be trusted right now (store unreachable, mirror stale): fail closed. */
  | { readonly state: 'unknown'; readonly detail: string }

/**
 * The revocation list as the hot path sees it: answered from memory, with no
 * network round trip. Adapters keep that memory in step with the shared store.
 */
export interface RevocationStore {
  /** May a new token be issued for this query? */
  check(query: RevocationQuery): RevocationVerdict
  /** Is this already-issued token still good? */
  checkToken(token: TokenFacts): RevocationVerdict
}

/**
 * The in-memory index every instance checks on the hot path. Applying a
 * record is idempotent (a record with a known id replaces the old version,
 * e.g. when a kill is lifted).
 */
export interface RevocationMirror extends RevocationStore {
  apply(record: Revocation): void
  /** Replaces the whole state (a full resync). */
  replaceAll(records: readonly Revocation[]): void
  /** Every record held, oldest first. */
  records(): readonly Revocation[]
}
