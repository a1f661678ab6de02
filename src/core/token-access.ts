/**
 * Who may learn about a Mandate token, and who may revoke it: the rules of
 * introspection (RFC 7662) and of a holder's revocation (RFC 7009), apart
 * from HTTP. The routes authenticate the caller and render; these decide.
 */
import type { MandateClaims } from './claims.js'
import { OAuthError } from './errors.js'
import { tokenFacts, type RevocationStore } from '../revocation/port.js'
import type { AuthenticatedCaller } from '../tokens/port.js'

export type TokenStatus =
  | { readonly state: 'active'; readonly claims: MandateClaims }
  /** Not a live token of ours; `revoked` when it is genuine and unexpired but revoked (for metrics, never sent). */
  | { readonly state: 'inactive'; readonly revoked?: true }
  /** Revocation state unknown: the caller must not treat the token as active. */
  | { readonly state: 'unknown'; readonly claims: MandateClaims; readonly detail: string }

export interface TokenStatusDeps {
  /** The claims of a token of ours, unaltered and unexpired; undefined for any other string. */
  readonly verify: (token: string) => Promise<MandateClaims | undefined>
  readonly revocations: RevocationStore
}

/** Is this a live Mandate token: ours, unaltered, unexpired, unrevoked? */
export async function tokenStatus(token: string, deps: TokenStatusDeps): Promise<TokenStatus> {
  const claims = await deps.verify(token)
  if (claims === undefined) return { state: 'inactive' }
  const verdict = deps.revocations.checkToken(tokenFacts(claims))
  switch (verdict.state) {
    case 'clear':
      return { state: 'active', claims }
    case 'revoked':
      return { state: 'inactive', revoked: true }
    case 'unknown':
      return { state: 'unknown', claims, detail: verdict.detail }
  }
}

/** Who asks an introspection: an auditor (an admin key that may read), or an authenticated agent or resource server. */
export type Introspector = { readonly kind: 'auditor' } | AuthenticatedCaller

/**
 * Whether `caller` may learn anything about a token with these claims: the
 * agent it was minted to, a resource server serving its audience, an
 * auditor. RFC 7662 §2.2 lets the answer depend on who asks; §4: anyone
 * else must not learn the token is live.
 */
export function maySee(caller: Introspector, claims: MandateClaims): boolean {
  switch (caller.kind) {
    case 'auditor':
      return true
    case 'agent':
      return claims.client_id === caller.agent
    case 'resource_server':
      return caller.server.audiences.has(claims.aud)
  }
}

export type IntrospectionAnswer = { readonly active: false } | { readonly active: true; readonly claims: MandateClaims }

/**
 * The introspection answer for `caller` (RFC 7662 §2.2): `active` with the
 * claims only for a caller that may see a live token; inactive for everyone
 * else and for anything revoked, expired, altered or unknown. Throws
 * `temporarily_unavailable` when the revocation state is unknown and the
 * caller may see the token, never `active: true` then; who may not see it
 * is answered first, since a 503 would tell them the token is genuine.
 */
export function introspection(caller: Introspector, status: TokenStatus): IntrospectionAnswer {
  if (status.state === 'inactive' || !maySee(caller, status.claims)) return { active: false }
  if (status.state === 'unknown') {
    throw new OAuthError('temporarily_unavailable', 'revocation state is unknown; try again', { detail: status.detail, retryAfter: 1 })
  }
  return { active: true, claims: status.claims }
}

/**
 * What an agent's RFC 7009 request for `status` does: nothing for an
 * expired or invalid token (§2.2: still answered 200), the token's chain for
 * a token issued to `agent` (an unknown revocation state does not stop
 * one), and `unauthorized_client` for a token issued to another agent (§2.1).
 */
export function holderRevocation(agent: string, status: TokenStatus): { readonly revoke: false } | { readonly revoke: true; readonly claims: MandateClaims } {
  if (status.state === 'inactive') return { revoke: false }
  const { claims } = status
  if (claims.client_id !== agent) {
    throw new OAuthError('unauthorized_client', 'the token was not issued to this client', { detail: `jti=${claims.jti}` })
  }
  return { revoke: true, claims }
}
