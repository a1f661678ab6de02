import type { AgentId, Jti, MandateClaims, Subject } from '../core/claims.js'
import type { AssertionUse } from '../admission/port.js'
import type { AgentAuthentication, PolicyStore } from '../policy/port.js'

/** Credentials as they arrived at the token endpoint, before any check. */
export type ClientCredentials =
  | { readonly method: 'client_secret_basic'; readonly clientId: string; readonly secret: string }
  | { readonly method: 'private_key_jwt'; readonly assertion: string; readonly clientId: string | undefined }
  /** draft-ietf-oauth-spiffe-client-auth: a JWT-SVID as `client_assertion`. */
  | { readonly method: 'spiffe_jwt'; readonly assertion: string; readonly clientId: string | undefined }
  | {
      readonly method: 'workload_identity'
      readonly actorToken: string
      readonly actorTokenType: string
      readonly clientId: string | undefined
    }
  | { readonly method: 'none'; readonly clientId: string | undefined }

export interface AuthenticatedClient {
  readonly agent: AgentId
  readonly method: ClientCredentials['method']
  /**
   * The client assertion to spend (RFC 7523 §3 item 7) before anything is
   * answered on the strength of this authentication; undefined for methods
   * without one. Spending is the caller's: the token endpoint spends it in
   * the same admission call as its rate limits, others with `spend`.
   */
  readonly assertion: AssertionUse | undefined
  /**
   * The running copy of the agent that authenticated, from an attested
   * credential only (never from anything the client may choose): a JWT-SVID's
   * SPIFFE ID, or a workload token's subject (or the claim its issuer's
   * `instance_claim` names). Undefined for client secrets and private-key
   * assertions, which every copy of an agent shares. Matches `INSTANCE_ID`.
   */
  readonly instance?: string | undefined
}

/**
 * A resource server as configured (`resource_servers`): its own identity at
 * introspection and the revocation feed, never an agent's. Its id is
 * `rs/<name>`, a form no agent id can take.
 */
export interface ResourceServer {
  readonly id: string
  /** The token audiences it serves. */
  readonly audiences: ReadonlySet<string>
  readonly authentication: Extract<AgentAuthentication, { method: 'private_key_jwt' | 'client_secret_basic' }>
}

/** The authenticated caller of introspection or the revocation feed; `assertion` as in `AuthenticatedClient`. */
export type AuthenticatedCaller =
  | { readonly kind: 'agent'; readonly agent: AgentId; readonly assertion: AssertionUse | undefined }
  | { readonly kind: 'resource_server'; readonly server: ResourceServer; readonly assertion: AssertionUse | undefined }

/**
 * Authenticates an agent against the policies of `policies` (the request's
 * snapshot); throws `OAuthError('invalid_client')` with a fixed description
 * on any failure.
 */
export interface ClientAuthenticator {
  authenticate(credentials: ClientCredentials, policies: PolicyStore): Promise<AuthenticatedClient>
  /**
   * Authenticates a caller that may be a resource server: a configured one,
   * or an agent of `policies` when given (introspection; the revocation feed
   * passes none). Same checks, same failures, same work for an unknown id.
   */
  authenticateCaller(credentials: ClientCredentials, policies: PolicyStore | undefined): Promise<AuthenticatedCaller>
  /**
   * Spends the client's (or caller's) assertion, if it has one, drawing from no rate
   * limit. Rejects with `invalid_client` on a replay, or
   * `temporarily_unavailable` when the store cannot answer or the assertion
   * predates its memory.
   */
  spend(client: { readonly assertion: AssertionUse | undefined }): Promise<void>
}

/** A user token from an issuer trusted for user subjects, fully verified. */
export interface UserSubject {
  readonly kind: 'user'
  readonly issuer: string
  readonly sub: Subject
  readonly iat: number
  readonly exp: number
  /** The token's own authority (`scope` or `scp`), when it carries one. */
  readonly scopes: ReadonlySet<string> | undefined
  readonly claims: Readonly<Record<string, unknown>>
}

/** A Mandate token presented for re-delegation, fully verified. */
export interface MandateSubject {
  readonly kind: 'mandate'
  readonly claims: MandateClaims
}

export type VerifiedSubject = UserSubject | MandateSubject

/**
 * Verifies a `subject_token` for the user-subject role or as a Mandate token.
 * Throws `OAuthError('invalid_request')` with one fixed description whatever
 * check failed (RFC 8693 §2.2.2), or `temporarily_unavailable` when the
 * issuer's keys cannot be had.
 */
export interface SubjectVerifier {
  verify(token: string): Promise<VerifiedSubject>
  /**
   * A token string as a client sent it to a route that takes only this
   * broker's tokens (forward auth, RFC 7662 introspection, RFC 7009
   * revocation): its claims when it is one of ours, unaltered, signed by a
   * key still held, within its lifetime (no skew); undefined for any other
   * string. Never checks revocation.
   */
  verifyOwn(token: string): Promise<MandateClaims | undefined>
}

/**
 * A verified Identity Assertion JWT Authorization Grant
 * (draft-ietf-oauth-identity-assertion-authz-grant): the user it asserts, as
 * a user token's would be, and the limits it sets on what may be issued.
 */
export interface VerifiedIdJag {
  /** The asserted user (`iss`, `sub`); `scopes` is the ID-JAG's `scope`, when it carries one. */
  readonly user: UserSubject
  /** The ID-JAG's `resource` values, when it names any. */
  readonly resources: readonly string[] | undefined
  /** Its `jti` to spend (RFC 7523 §3 item 7), in a namespace no client assertion's key can take. */
  readonly use: AssertionUse
}

/**
 * Verifies an ID-JAG presented with the RFC 7523 JWT bearer grant by
 * `agent`. Throws `OAuthError('invalid_grant')` with one fixed description
 * whatever check failed (RFC 7523 §3.1), or `temporarily_unavailable` when
 * the issuer's keys cannot be had. Does not spend the `jti`.
 */
export interface IdJagVerifier {
  verify(assertion: string, agent: AgentId): Promise<VerifiedIdJag>
}

/** Signs Mandate access tokens with the current signing key. */
export interface TokenMinter {
  mint(claims: MandateClaims): Promise<string>
}

export type { AgentId, Jti }

/** A DPoP proof the token endpoint accepted (RFC 9449 §4.3): its key, and its `jti` to spend with the request's admission. */
export interface CheckedProof {
  /** RFC 7638 thumbprint of the proof's key: the new token's `cnf.jkt` (§6.1). */
  readonly jkt: string
  readonly use: AssertionUse
}

/**
 * Checks DPoP proofs sent to the token endpoint (`htm` POST, `htu` the token
 * endpoint). Throws `OAuthError` `invalid_dpop_proof` with one fixed text
 * whichever check failed, or `use_dpop_nonce` when nonces are on and the
 * proof has none or a stale one. Spending the `jti` is the caller's.
 */
export interface DpopProofVerifier {
  /**
   * A proof of the request's own key; with `accessToken`, the proof of that
   * token's holder (`ath` must match, RFC 9449 §4.3 item 12), such as a
   * DPoP-bound subject token's.
   */
  check(proof: string, accessToken?: string): Promise<CheckedProof>
  /** The nonce to send in `DPoP-Nonce` now; undefined (at once) when nonces are off. */
  nonce(): Promise<string> | undefined
  /** `dpop_signing_alg_values_supported` (RFC 9449 §5.1). */
  readonly algorithms: readonly string[]
}
