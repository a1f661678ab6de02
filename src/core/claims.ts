/** Look-alike strings, branded so that one is never passed as another. */
export type AgentId = string & { readonly __brand: 'AgentId' }
export type Subject = string & { readonly __brand: 'Subject' }
export type Jti = string & { readonly __brand: 'Jti' }

/** Agent ids: short slugs, so an agent can never pass for an issuer URL or a user (policies and the admin API check it). */
export const AGENT_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/
export const AGENT_ID_RULE = 'must be 1-63 of a-z 0-9 . _ - starting with a letter or digit'

/** RFC 8693 §3 token type identifiers Mandate speaks. */
export const TOKEN_TYPE = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  idToken: 'urn:ietf:params:oauth:token-type:id_token',
} as const

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const CLIENT_ASSERTION_TYPE_JWT = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

/** RFC 8693 §4.1 actor claim: newest actor outermost. */
export interface ActClaim {
  readonly sub: AgentId
  readonly act?: ActClaim
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
}

/** Builds the nested `act` claim from actors listed newest first. */
export function actClaim(actorsNewestFirst: readonly AgentId[]): ActClaim {
  const [newest, ...older] = actorsNewestFirst
  if (newest === undefined) throw new TypeError('an act claim needs at least one actor')
  return older.length === 0 ? { sub: newest } : { sub: newest, act: actClaim(older) }
}

/** Flattens a nested `act` claim to its actors, newest first. */
export function actorsOf(act: ActClaim): AgentId[] {
  const out: AgentId[] = []
  for (let a: ActClaim | undefined = act; a !== undefined; a = a.act) out.push(a.sub)
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
