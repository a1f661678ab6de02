/**
 * The introspection (RFC 7662) and holder revocation (RFC 7009) rules,
 * without HTTP: who sees a live token, what an unknown revocation state
 * does, and whose token an agent may revoke.
 */
import { describe, expect, it } from 'vitest'
import { actClaim, type AgentId, type Jti, type MandateClaims, type Subject } from '../../../src/core/claims.js'
import { OAuthError } from '../../../src/core/errors.js'
import { holderRevocation, introspection, maySee, tokenStatus, type Introspector, type TokenStatus } from '../../../src/core/token-access.js'
import type { RevocationStore, RevocationVerdict, TokenFacts } from '../../../src/revocation/port.js'
import type { ResourceServer } from '../../../src/tokens/port.js'

const claims: MandateClaims = {
  iss: 'https://mandate.test',
  sub: 'alice' as Subject,
  sub_id: { format: 'iss_sub', iss: 'https://idp.test', sub: 'alice' as Subject },
  aud: 'https://api.test',
  client_id: 'agent-a' as AgentId,
  act: actClaim(['agent-a' as AgentId]),
  scope: 'read',
  iat: 1_800_000_000,
  nbf: 1_800_000_000,
  exp: 1_800_000_600,
  jti: 'jti-1' as Jti,
}

const server = (audiences: string[]): ResourceServer => ({
  id: 'rs/api',
  audiences: new Set(audiences),
  authentication: { method: 'client_secret_basic', secretHashes: [] } as unknown as ResourceServer['authentication'],
})
const agent = (id: string): Introspector => ({ kind: 'agent', agent: id as AgentId, assertion: undefined })
const auditor: Introspector = { kind: 'auditor' }

const active: TokenStatus = { state: 'active', claims }
const unknown: TokenStatus = { state: 'unknown', claims, detail: 'mirror stale' }
const inactive: TokenStatus = { state: 'inactive' }

describe('tokenStatus', () => {
  const store = (verdict: RevocationVerdict) => {
    const asked: TokenFacts[] = []
    const revocations: RevocationStore = {
      check: () => verdict,
      checkToken: (facts) => {
        asked.push(facts)
        return verdict
      },
    }
    return { revocations, asked }
  }

  it('is inactive for a string that is no token of ours, without asking the revocation list', async () => {
    const { revocations, asked } = store({ state: 'clear' })
    await expect(tokenStatus('x', { verify: async () => undefined, revocations })).resolves.toEqual(inactive)
    expect(asked).toEqual([])
  })

  it('follows the revocation verdict on the token’s facts', async () => {
    const verify = async () => claims
    const clear = store({ state: 'clear' })
    await expect(tokenStatus('t', { verify, revocations: clear.revocations })).resolves.toEqual(active)
    expect(clear.asked[0]).toMatchObject({ jti: 'jti-1', sub: 'alice', subIssuer: 'https://idp.test', actors: ['agent-a'], chain: [] })
    await expect(tokenStatus('t', { verify, revocations: store({ state: 'revoked', what: 'agent', detail: 'd' }).revocations })).resolves.toEqual({
      state: 'inactive',
      revoked: true,
    })
    await expect(tokenStatus('t', { verify, revocations: store({ state: 'unknown', detail: 'stale' }).revocations })).resolves.toEqual({
      state: 'unknown',
      claims,
      detail: 'stale',
    })
  })
})

describe('maySee (RFC 7662 §2.2, §4)', () => {
  it('the agent the token was minted to, a resource server of its audience, an auditor; no one else', () => {
    expect(maySee(agent('agent-a'), claims)).toBe(true)
    expect(maySee(agent('agent-b'), claims)).toBe(false)
    expect(maySee({ kind: 'resource_server', server: server(['https://api.test']), assertion: undefined }, claims)).toBe(true)
    expect(maySee({ kind: 'resource_server', server: server(['https://other.test']), assertion: undefined }, claims)).toBe(false)
    expect(maySee(auditor, claims)).toBe(true)
  })
})

describe('introspection', () => {
  it('answers active with the claims only to a caller that may see a live token', () => {
    expect(introspection(agent('agent-a'), active)).toEqual({ active: true, claims })
    expect(introspection(agent('agent-b'), active)).toEqual({ active: false })
    expect(introspection(auditor, inactive)).toEqual({ active: false })
  })

  it('an unknown revocation state is 503 for who may see the token, and inactive for anyone else', () => {
    const thrown = (() => {
      try {
        introspection(auditor, unknown)
      } catch (err) {
        return err
      }
      return undefined
    })()
    expect(thrown).toBeInstanceOf(OAuthError)
    expect(thrown).toMatchObject({ code: 'temporarily_unavailable', retryAfter: 1, detail: 'mirror stale' })
    expect(introspection(agent('agent-b'), unknown)).toEqual({ active: false })
  })
})

describe('holderRevocation (RFC 7009)', () => {
  it('revokes a token issued to the agent, even while the revocation state is unknown', () => {
    expect(holderRevocation('agent-a', active)).toEqual({ revoke: true, claims })
    expect(holderRevocation('agent-a', unknown)).toEqual({ revoke: true, claims })
  })

  it('does nothing for an invalid, expired or revoked token (§2.2: still 200)', () => {
    expect(holderRevocation('agent-a', inactive)).toEqual({ revoke: false })
  })

  it('refuses a token issued to another agent', () => {
    expect(() => holderRevocation('agent-b', active)).toThrow(OAuthError)
    expect(() => holderRevocation('agent-b', active)).toThrow(/not issued to this client/)
  })
})
