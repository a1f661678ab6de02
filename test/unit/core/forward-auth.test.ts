/**
 * The forward-auth decision without HTTP: a live token passes only for its
 * own audience with every scope asked for; the audience and the scopes are
 * judged before an unknown revocation state, which is never allowed; a
 * DPoP-bound token passes only with the DPoP scheme, and DPoP only with a
 * bound token.
 */
import { describe, expect, it } from 'vitest'
import { actClaim, type AgentId, type Jti, type MandateClaims, type Subject } from '../../../src/core/claims.js'
import { forwardAuthorization } from '../../../src/core/forward-auth.js'
import type { TokenStatus } from '../../../src/core/token-access.js'

const claims: MandateClaims = {
  iss: 'https://mandate.test',
  sub: 'alice' as Subject,
  sub_id: { format: 'iss_sub', iss: 'https://idp.test', sub: 'alice' as Subject },
  aud: 'https://api.test',
  client_id: 'agent-a' as AgentId,
  act: actClaim(['agent-a' as AgentId]),
  scope: 'read write',
  iat: 1_800_000_000,
  nbf: 1_800_000_000,
  exp: 1_800_000_600,
  jti: 'jti-1' as Jti,
}
const active: TokenStatus = { state: 'active', claims }
const unknown: TokenStatus = { state: 'unknown', claims, detail: 'mirror stale' }

describe('forwardAuthorization', () => {
  it('allows a live token for its audience with every scope asked for', () => {
    expect(forwardAuthorization(active, 'https://api.test', [])).toEqual({ outcome: 'allowed', claims })
    expect(forwardAuthorization(active, 'https://api.test', ['write', 'read'])).toEqual({ outcome: 'allowed', claims })
  })

  it('refuses what is not a live token of ours, saying (for metrics) when it was revoked', () => {
    expect(forwardAuthorization({ state: 'inactive' }, 'https://api.test', [])).toMatchObject({ outcome: 'invalid_token', revoked: false })
    expect(forwardAuthorization({ state: 'inactive', revoked: true }, 'https://api.test', [])).toMatchObject({ outcome: 'invalid_token', revoked: true })
  })

  it('refuses another audience, compared exactly', () => {
    for (const audience of ['https://other.test', 'https://api.test/', 'HTTPS://API.TEST']) {
      expect(forwardAuthorization(active, audience, [])).toMatchObject({ outcome: 'invalid_token', detail: 'audience mismatch' })
    }
  })

  it('names the scopes missing; a scope is a whole token, never a prefix', () => {
    expect(forwardAuthorization(active, 'https://api.test', ['read', 'admin', 'rea'])).toEqual({
      outcome: 'insufficient_scope',
      claims,
      missing: ['admin', 'rea'],
    })
  })

  it('an unknown revocation state is never allowed, and does not hide a refusal that needs no revocation state', () => {
    expect(forwardAuthorization(unknown, 'https://api.test', ['read'])).toEqual({ outcome: 'unavailable', claims, detail: 'mirror stale' })
    expect(forwardAuthorization(unknown, 'https://other.test', [])).toMatchObject({ outcome: 'invalid_token' })
    expect(forwardAuthorization(unknown, 'https://api.test', ['admin'])).toMatchObject({ outcome: 'insufficient_scope' })
  })

  it('a DPoP-bound token only as DPoP (RFC 9449 §7.2), and the DPoP scheme only with a bound token (§7.1)', () => {
    const bound: TokenStatus = { state: 'active', claims: { ...claims, cnf: { jkt: 'thumbprint' } } }
    expect(forwardAuthorization(bound, 'https://api.test', ['read'], 'DPoP')).toMatchObject({ outcome: 'allowed' })
    expect(forwardAuthorization(bound, 'https://api.test', ['read'])).toMatchObject({ outcome: 'invalid_token', detail: 'DPoP-bound token sent as Bearer' })
    expect(forwardAuthorization(active, 'https://api.test', ['read'], 'DPoP')).toMatchObject({ outcome: 'invalid_token', detail: 'unbound token sent as DPoP' })
    // The audience first: a token for another resource is refused as such, whatever its scheme.
    expect(forwardAuthorization(bound, 'https://other.test', [], 'Bearer')).toMatchObject({ detail: 'audience mismatch' })
  })
})
