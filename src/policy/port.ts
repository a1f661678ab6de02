import type { AnomalyRulesInput } from '../core/anomaly.js'
import type { DeclaredHours } from '../core/hours.js'
import type { AgentId } from '../core/claims.js'
import type { ApprovalRule, DetailTypes } from '../core/approval.js'

/** How an agent proves who it is at the token endpoint. */
export type AgentAuthentication =
  | {
      /** RFC 7523 client assertion signed with one of these public keys, or of the key set at `jwksUri`. */
      readonly method: 'private_key_jwt'
      /** Empty when the keys are published at `jwksUri`. */
      readonly keys: readonly AgentPublicKey[]
      /** Where the client publishes its JWK set (fetched within the config's JWKS bounds); undefined for inline keys. */
      readonly jwksUri?: string | undefined
    }
  | {
      /** RFC 6749 §2.3.1 Basic; the policy holds only each secret's SHA-256 (one, or several during a rollover). */
      readonly method: 'client_secret_basic'
      readonly secretHashes: readonly Buffer[]
    }
  | {
      /** A workload identity token from an issuer trusted for workloads, sent as `actor_token`. */
      readonly method: 'workload_identity'
      readonly issuer: string
      readonly subject: string
    }
  | {
      /** A SPIFFE JWT-SVID (draft-ietf-oauth-spiffe-client-auth) whose `sub` is `spiffeId`, or under it when `prefix`. */
      readonly method: 'spiffe'
      /** A SPIFFE ID; with `prefix`, one ending in `/`. */
      readonly spiffeId: string
      readonly prefix: boolean
    }

/** A public key imported once at load time, never per request. */
export interface AgentPublicKey {
  readonly kid: string | undefined
  readonly alg: string
  readonly key: import('node:crypto').KeyObject
}

/** Which users may delegate to an agent: their token's issuer, and claims it must carry. */
export interface DelegatorRule {
  readonly issuer: string
  /** Claim name → accepted values; the token's claim (string or array) must hold at least one. */
  readonly claims: Readonly<Record<string, readonly string[]>>
}

export interface AudienceGrant {
  readonly audience: string
  readonly scopes: ReadonlySet<string>
  /** Granted when the request leaves `scope` out. */
  readonly defaultScopes: readonly string[]
  /** A person approves each token first (CIBA); undefined: none needed. */
  readonly approval?: ApprovalRule | undefined
  /** RFC 9396 types a request may describe its action with; undefined: none. */
  readonly detailTypes?: DetailTypes | undefined
  /** When the grant applies (its `hours`, parsed at load); undefined: always. */
  readonly hours?: DeclaredHours | undefined
}

/** A token bucket: at most `burst` tokens, refilled at `perSecond`; a request takes one. */
export interface RateLimit {
  readonly perSecond: number
  readonly burst: number
}

/**
 * One agent's policy, validated and compiled. Plain readonly data: the core
 * evaluates it without I/O.
 */
export interface AgentPolicy {
  readonly agent: AgentId
  readonly owner: string
  readonly purpose: string
  /** Epoch seconds after which the agent gets nothing. */
  readonly expires: number
  readonly authentication: AgentAuthentication
  readonly delegators: readonly DelegatorRule[]
  readonly grants: ReadonlyMap<string, AudienceGrant>
  readonly ttl: { readonly default: number; readonly max: number }
  readonly delegation: {
    /** Longest chain of agents (this one included) a token issued to this agent may belong to. */
    readonly maxDepth: number
    /** Agents this one may hand a narrower token to. */
    readonly subAgents: ReadonlySet<AgentId>
  }
  /** Token-exchange limits, shared by every instance; undefined means none. */
  readonly rateLimit: {
    /** All of the agent's exchanges. */
    readonly agent: RateLimit | undefined
    /** The agent's exchanges for one user, a user being (issuer, `sub`). */
    readonly user: RateLimit | undefined
  }
  /** `require_dpop`: true or false as the policy says; undefined: the config's `dpop.required`. */
  readonly requireDpop?: boolean | undefined
  /** Seconds between two attestations by the owner (`attest_every`); undefined: none needed. */
  readonly attestEvery?: number | undefined
  /** `max_credential_age`, seconds; undefined: the config's (`governance.credentials.max_age`). */
  readonly maxCredentialAge?: number | undefined
  /** When the agent may get tokens at all (the policy's `hours`, parsed at load); undefined: always. */
  readonly hours?: DeclaredHours | undefined
  /**
   * Anomaly rules the policy declares over the config's, and the hours the `outside_hours` rule expects: its
   * own, else the policy's (absent: none of either).
   */
  readonly anomalies?: { readonly rules: AnomalyRulesInput | undefined; readonly hours: DeclaredHours | undefined } | undefined
  /** SHA-256 of the file the policy was loaded from, hex; ties an issuance to its policy text. */
  readonly sourceHash: string
  readonly source: string
}

/** The current, complete set of policies. Reads are synchronous and never see a half-loaded set. */
export interface PolicyStore {
  /**
   * The set as it is now, unchanged by later reloads: one request reads all
   * its policies from one snapshot, never from two versions.
   */
  snapshot(): PolicyStore
  get(agent: AgentId): AgentPolicy | undefined
  /** Agent whose workload identity is (issuer, subject), if any. */
  byWorkload(issuer: string, subject: string): AgentPolicy | undefined
  /** Agent whose policy names this SPIFFE ID: an exact `spiffe_id` first, else the longest `spiffe_id_prefix` it falls under. */
  bySpiffeId(id: string): AgentPolicy | undefined
  /** Every policy of the set, in no particular order (the inventory lists them). */
  agents(): readonly AgentPolicy[]
  readonly size: number
}

/** One problem in one policy file, located as precisely as the YAML allows. */
export interface PolicyIssue {
  readonly file: string
  readonly line: number
  readonly column: number
  /** Dotted path of the field, or '' for the whole file. */
  readonly field: string
  readonly message: string
}

/** `file:line:column: field: message`, as compilers print theirs (`/readyz`, `mandate policy check`, the reload log). */
export function formatIssue(i: PolicyIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.field === '' ? '' : `${i.field}: `}${i.message}`
}
