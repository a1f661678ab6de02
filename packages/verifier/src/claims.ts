/**
 * The claims of a Mandate access token (RFC 9068 profile), as the broker
 * mints them and a resource server reads them. The broker imports these
 * from here: one definition of the wire shape.
 */

/** Look-alike strings, branded so that one is never passed as another. */
export type AgentId = string & { readonly __brand: 'AgentId' }
export type Subject = string & { readonly __brand: 'Subject' }
export type Jti = string & { readonly __brand: 'Jti' }

/**
 * RFC 8693 §4.1 actor claim: newest actor outermost. Beside `sub`, the
 * members that identify the actor at that hop (§4.1 allows them): the
 * running copy of the agent that asked (`instance`: its SPIFFE ID or its
 * workload token's subject) and the RFC 7638 thumbprint of the DPoP key the
 * hop's token was bound to (`jkt`, RFC 9449 §6.1), so an investigator sees
 * which key acted at each hop.
 */
export interface ActClaim {
  readonly sub: AgentId
  readonly instance?: string
  readonly jkt?: string
  readonly act?: ActClaim
}

/** RFC 7800 §3.1 confirmation: the DPoP key the token is bound to (RFC 9449 §6.1). */
export interface ConfirmationClaim {
  readonly jkt: string
}

/**
 * RFC 9493 §3.2.5 subject identifier: a `sub` is unique only within its
 * issuer, so a token names the user's issuer too.
 */
export interface SubjectIdentifier {
  readonly format: 'iss_sub'
  readonly iss: string
  readonly sub: Subject
}

/**
 * RFC 8693 §4.4: the only actor the user's token authorizes. Checked at the
 * first hop; never copied into a minted token (later hops are governed by
 * the first agent's policy).
 */
export interface MayActClaim {
  readonly sub: AgentId
  readonly iss?: string
}

/**
 * Claims of a Mandate access token (RFC 9068 profile, header `typ: at+jwt`),
 * and no other: nothing of a subject token is copied but what the exchange
 * decided. `chain` lists the `jti`s of every ancestor token, root first; it
 * is absent on a first-hop token. `sub_id` names the user's upstream issuer.
 */
export interface MandateClaims {
  readonly iss: string
  readonly sub: Subject
  readonly sub_id: SubjectIdentifier
  readonly aud: string
  readonly client_id: AgentId
  readonly act: ActClaim
  readonly scope: string
  readonly iat: number
  readonly nbf: number
  readonly exp: number
  readonly jti: Jti
  readonly chain?: readonly Jti[]
  /** RFC 9396 §9.1: the action a person approved, exactly as approved (a token issued after a CIBA approval). */
  readonly authorization_details?: readonly Readonly<Record<string, unknown>>[]
  /** The id of the approval that allowed this token (`GET /admin/approvals/{id}`). */
  readonly approval?: string
  /** RFC 9449 §6.1: present on a DPoP-bound token; only a proof signed by this key may present it. */
  readonly cnf?: ConfirmationClaim
}

/** Algorithms Mandate accepts anywhere: asymmetric only (RFC 8725 §3.1, §3.2); never `none`, never an HMAC. */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const
export type AsymmetricAlgorithm = (typeof ASYMMETRIC_ALGORITHMS)[number]

/** Claims every Mandate access token carries (verifiers check presence before any value). */
export const MANDATE_REQUIRED = ['iss', 'sub', 'sub_id', 'aud', 'exp', 'iat', 'jti', 'client_id', 'act', 'scope'] as const

/** Deeper `act` nesting is refused: the broker never mints one, and recursion on hostile input stays bounded. */
export const MAX_ACT_DEPTH = 16

/** Flattens a nested `act` claim to its actors, newest first. */
export function actorsOf(act: ActClaim): AgentId[] {
  const out: AgentId[] = []
  for (let a: ActClaim | undefined = act; a !== undefined; a = a.act) out.push(a.sub)
  return out
}

/**
 * An instance identifier as the broker takes one from an attested credential
 * (a SPIFFE ID, a workload token's subject or instance claim) and a kill
 * names it: 1 to 2048 printable ASCII characters without spaces (2048 bytes
 * is SPIFFE-ID §2.3's bound), so that it is safe in logs, headers and keys.
 */
export const INSTANCE_ID = /^[\x21-\x7e]{1,2048}$/

/** One hop of an `act` chain that names the running copy of its agent. */
export interface ActorInstance {
  readonly agent: AgentId
  readonly instance: string
}

/** The hops of a nested `act` claim that name an instance, newest first. */
export function instancesOf(act: ActClaim): ActorInstance[] {
  const out: ActorInstance[] = []
  for (let a: ActClaim | undefined = act; a !== undefined; a = a.act) if (a.instance !== undefined) out.push({ agent: a.sub, instance: a.instance })
  return out
}

/** RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/

/**
 * Parses a space-delimited scope string. Returns undefined when any token is
 * malformed (empty tokens from double spaces included).
 */
export function parseScope(scope: string): string[] | undefined {
  const parts = scope.split(' ')
  for (const p of parts) if (!SCOPE_TOKEN.test(p)) return undefined
  return [...new Set(parts)]
}

function isAct(value: unknown, depth: number): value is ActClaim {
  if (depth > MAX_ACT_DEPTH || typeof value !== 'object' || value === null) return false
  const { sub, act, instance, jkt } = value as Record<string, unknown>
  return (
    typeof sub === 'string' &&
    (instance === undefined || typeof instance === 'string') &&
    (jkt === undefined || typeof jkt === 'string') &&
    (act === undefined || isAct(act, depth + 1))
  )
}

/** Why a payload is not shaped as a Mandate token, in {@link mandateClaimsProblem}. */
export type MandateClaimsProblem = 'bad_mandate_claims' | 'bad_sub_id' | 'bad_act' | 'bad_chain' | 'bad_cnf'

/**
 * Shape checks of the Mandate-specific claims, on a payload whose signature
 * and registered claims (`iss`, `aud`, `exp`, `iat`, `jti`, presence of
 * {@link MANDATE_REQUIRED}) were already checked. Undefined when it is a
 * Mandate token; else the failed check. A `may_act` (tokens minted before it
 * stopped being copied) is accepted and never read.
 */
export function mandateClaimsProblem(payload: Record<string, unknown>): MandateClaimsProblem | undefined {
  const { aud, client_id, act, scope, chain, sub_id, sub, cnf } = payload
  // An empty scope grants nothing (RFC 6749 §3.3); an empty holder or audience is no claim at all.
  if (typeof aud !== 'string' || aud === '' || typeof client_id !== 'string' || client_id === '' || typeof scope !== 'string') return 'bad_mandate_claims'
  const id = sub_id as Record<string, unknown> | null
  if (typeof id !== 'object' || id === null || id['format'] !== 'iss_sub' || typeof id['iss'] !== 'string' || id['sub'] !== sub) return 'bad_sub_id'
  if (!isAct(act, 1)) return 'bad_act'
  if (chain !== undefined && !(Array.isArray(chain) && chain.every((j) => typeof j === 'string'))) return 'bad_chain'
  // RFC 9449 §6.1: a confirmation this package cannot check must not be ignored.
  if (cnf !== undefined && !(typeof cnf === 'object' && cnf !== null && typeof (cnf as Record<string, unknown>)['jkt'] === 'string')) return 'bad_cnf'
  return undefined
}
