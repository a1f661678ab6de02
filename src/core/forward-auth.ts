/**
 * The forward-auth decision (GET /forward-auth): may the bearer of a token
 * reach a resource server of `audience` that needs `scopes`? A proxy in
 * front of that server asks it for every request. Whether the token is a
 * live one of ours is `tokenStatus` (core/token-access.ts), the same answer
 * introspection gives; this adds the audience and the scopes, as a resource
 * server would check them (RFC 9068 §4, RFC 6750 §3.1).
 */
import type { MandateClaims } from './claims.js'
import type { TokenStatus } from './token-access.js'

export type ForwardAuthDecision =
  | { readonly outcome: 'allowed'; readonly claims: MandateClaims }
  /** RFC 6750 §3.1 `invalid_token`: not ours, altered, expired, revoked, or for another audience. */
  | { readonly outcome: 'invalid_token'; readonly revoked: boolean; readonly claims: MandateClaims | undefined; readonly detail: string }
  /** RFC 6750 §3.1 `insufficient_scope`: `missing` are the scopes asked for that the token lacks. */
  | { readonly outcome: 'insufficient_scope'; readonly claims: MandateClaims; readonly missing: readonly string[] }
  /** The revocation state is unknown: never allowed then (fail closed). */
  | { readonly outcome: 'unavailable'; readonly claims: MandateClaims; readonly detail: string }

/**
 * Decides on a token's status for `audience` and the `scopes` the resource
 * needs (each must be in the token's `scope`: RFC 6749 §3.3), presented
 * with `scheme`: a DPoP-bound token (`cnf.jkt`) only as DPoP (RFC 9449
 * §7.2), and DPoP only with a bound token (§7.1); the caller checks the
 * proof of a DPoP one before it acts on any outcome but `invalid_token`.
 * The audience and the scopes are judged before an unknown revocation
 * state: a token that would be refused anyway is refused as such, not
 * answered 503.
 */
export function forwardAuthorization(
  status: TokenStatus,
  audience: string,
  scopes: readonly string[],
  scheme: 'Bearer' | 'DPoP' = 'Bearer',
): ForwardAuthDecision {
  if (status.state === 'inactive') {
    return { outcome: 'invalid_token', revoked: status.revoked === true, claims: undefined, detail: status.revoked === true ? 'revoked' : 'not a live token' }
  }
  const { claims } = status
  // RFC 9068 §4: the resource server must check that the token is meant for it.
  if (claims.aud !== audience) return { outcome: 'invalid_token', revoked: false, claims, detail: 'audience mismatch' }
  if (scheme === 'Bearer' && claims.cnf !== undefined) return { outcome: 'invalid_token', revoked: false, claims, detail: 'DPoP-bound token sent as Bearer' }
  if (scheme === 'DPoP' && claims.cnf === undefined) return { outcome: 'invalid_token', revoked: false, claims, detail: 'unbound token sent as DPoP' }
  const granted = new Set(claims.scope.split(' '))
  const missing = scopes.filter((s) => !granted.has(s))
  if (missing.length > 0) return { outcome: 'insufficient_scope', claims, missing }
  if (status.state === 'unknown') return { outcome: 'unavailable', claims, detail: status.detail }
  return { outcome: 'allowed', claims }
}
