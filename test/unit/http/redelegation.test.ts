/**
 * Re-delegation: an agent exchanges the Mandate token it holds for a narrower
 * one for a sub-agent (RFC 8693 §4.1 nested `act`). Scopes, audience and
 * lifetime only shrink; the parent's policy names who may receive; no cycles;
 * the chain stays within both policies' depth.
 */
import { decodeJwt, type JWTPayload } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashClientSecret } from '../../../src/tokens/client-auth.js'
import { AUDIENCE, basic, CLIENT_ASSERTION_TYPE_JWT, OTHER_AUDIENCE, SECRET, USER_ISSUER } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

type Fields = Record<string, string | string[] | undefined>

/** Helpers bound to one broker: a first-hop token and a re-delegation by any agent. */
function chainOps(get: () => TrackedBroker) {
  const asAgent = async (agent: string, fields: Record<string, string | string[]>) => {
    const b = get()
    if (agent === 'jwt-agent') {
      return b.token({ ...fields, client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: b.secret(await b.assertion()) })
    }
    return b.token(fields, basic(agent, SECRET))
  }
  return {
    asAgent,
    /** A token issued to `agent` for alice's user token. */
    async firstHop(agent = 'secret-agent', extra: Fields = {}): Promise<{ token: string; claims: JWTPayload }> {
      const b = get()
      const user = b.secret(await b.userToken({ groups: ['engineering'] }))
      const body = await expectToken(await asAgent(agent, exchange(user, { scope: 'read write', ...extra })))
      return { token: body.access_token, claims: decodeJwt(body.access_token) }
    },
    /** `agent` exchanges `parent` (a Mandate token). */
    redelegate: (agent: string, parent: string, extra: Fields = {}) => asAgent(agent, exchange(parent, { scope: 'read', ...extra })),
  }
}

describe('re-delegation to a sub-agent', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(() => b.close())
  const { firstHop, redelegate } = chainOps(() => b)

  it('issues a narrower token with nested act, the parent in chain, same audience, no longer life', async () => {
    const parent = await firstHop()
    const before = b.audit.events().length
    const body = await expectToken(await redelegate('sub-agent', parent.token, { scope: 'read' }))
    const child = decodeJwt(body.access_token)

    expect(child.sub).toBe('alice')
    expect(child['client_id']).toBe('sub-agent')
    // RFC 8693 §4.1: newest actor outermost.
    expect(child['act']).toEqual({ sub: 'sub-agent', act: { sub: 'secret-agent' } })
    expect(child['chain']).toEqual([parent.claims.jti])
    expect(child.aud).toBe(parent.claims.aud)
    const parentScopes = new Set(String(parent.claims['scope']).split(' '))
    for (const s of String(child['scope']).split(' ')) expect(parentScopes.has(s)).toBe(true)
    expect(child['scope']).toBe('read')
    expect(child.exp!).toBeLessThanOrEqual(parent.claims.exp!)
    expect(child.jti).not.toBe(parent.claims.jti)

    const added = b.audit.events().slice(before)
    expect(added).toHaveLength(1)
    expect(added[0]).toMatchObject({
      type: 'token.issued',
      agent: 'sub-agent',
      actors: ['sub-agent', 'secret-agent'],
      jti: child.jti,
      parentJti: parent.claims.jti,
      rootJti: parent.claims.jti,
    })
  })

  it('caps the child lifetime at the parent’s remaining life', async () => {
    const parent = await firstHop() // secret-agent: 300 s
    b.advance(250)
    const body = await expectToken(await redelegate('sub-agent', parent.token, { expires_in: '300' })) // sub-agent max 300
    expect(body.expires_in).toBeLessThanOrEqual(50)
    expect(decodeJwt(body.access_token).exp).toBe(parent.claims.exp)
  })

  it('nests three hops, root first in chain (jwt-agent → sub-agent → secret-agent)', async () => {
    const root = await firstHop('jwt-agent')
    const mid = await expectToken(await redelegate('sub-agent', root.token, { scope: 'read' }))
    const midClaims = decodeJwt(mid.access_token)
    const leaf = decodeJwt((await expectToken(await redelegate('secret-agent', mid.access_token, { scope: 'read' }))).access_token)
    expect(leaf['act']).toEqual({ sub: 'secret-agent', act: { sub: 'sub-agent', act: { sub: 'jwt-agent' } } })
    expect(leaf['chain']).toEqual([root.claims.jti, midClaims.jti])
    expect(leaf['client_id']).toBe('secret-agent')
  })

  it('refuses a scope broader than the parent token’s → invalid_scope', async () => {
    const parent = await firstHop('secret-agent', { scope: 'read' })
    // `write` is in sub-agent's policy, but not in the parent token.
    await expectOAuthError(await redelegate('sub-agent', parent.token, { scope: 'read write' }), 400, 'invalid_scope')
  })

  it('refuses an audience other than the parent’s → invalid_target', async () => {
    const root = await firstHop('jwt-agent')
    const mid = await expectToken(await redelegate('sub-agent', root.token, { scope: 'read' }))
    // secret-agent's own policy allows OTHER_AUDIENCE: only the parent's audience stands in the way.
    await expectOAuthError(await redelegate('secret-agent', mid.access_token, { audience: OTHER_AUDIENCE }), 400, 'invalid_target')
  })

  it('refuses an audience other than the parent’s even as a second, distinct audience → invalid_target', async () => {
    const parent = await firstHop()
    await expectOAuthError(await redelegate('sub-agent', parent.token, { audience: [AUDIENCE, OTHER_AUDIENCE] }), 400, 'invalid_target')
  })

  it('refuses a sub-agent the parent’s policy does not list → invalid_request', async () => {
    const parent = await firstHop('jwt-agent') // jwt-agent lists only sub-agent
    await expectOAuthError(await redelegate('secret-agent', parent.token), 400, 'invalid_request')
  })

  it('refuses a cycle (secret-agent → sub-agent → secret-agent) → invalid_request', async () => {
    const parent = await firstHop()
    const mid = await expectToken(await redelegate('sub-agent', parent.token))
    await expectOAuthError(await redelegate('secret-agent', mid.access_token), 400, 'invalid_request')
  })

  it('refuses a parent token that has expired → invalid_request', async () => {
    const parent = await firstHop()
    b.advance(300 + 31) // past exp and the 30 s skew
    await expectOAuthError(await redelegate('sub-agent', parent.token), 400, 'invalid_request')
  })

  it('logs no credential and a request_id on every request line', () => {
    expectCleanLogs(b)
  })
})

/** secret-agent → sub-agent → jwt-agent is allowed by every policy here but max_depth. */
function depthPolicies(maxDepth: number): Record<string, string> {
  const hash = hashClientSecret(SECRET).toString('hex')
  const head = (agent: string) => `agent: ${agent}
owner: security@example.com
purpose: depth test
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hash} }`
  return {
    'secret-agent.yaml': `${head('secret-agent')}
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }]
token_ttl: { default: 300, max: 900 }
delegation: { max_depth: ${maxDepth}, sub_agents: [sub-agent] }
`,
    'sub-agent.yaml': `${head('sub-agent')}
grants: [{ audience: ${AUDIENCE}, scopes: [read, write] }]
token_ttl: { default: 120, max: 300 }
delegation: { max_depth: ${maxDepth}, sub_agents: [jwt-agent] }
`,
  }
}

describe.each([
  { maxDepth: 2, third: 'refused' },
  { maxDepth: 3, third: 'issued' },
])('delegation depth with max_depth $maxDepth', ({ maxDepth, third }) => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker({ policies: depthPolicies(maxDepth) })
  })
  afterAll(() => b.close())
  const { firstHop, redelegate } = chainOps(() => b)

  it(`a third hop is ${third}; the second always is`, async () => {
    const root = await firstHop('secret-agent')
    const mid = await expectToken(await redelegate('sub-agent', root.token))
    const res = await redelegate('jwt-agent', mid.access_token)
    if (third === 'refused') await expectOAuthError(res, 400, 'invalid_request')
    else expect(decodeJwt((await expectToken(res)).access_token)['act']).toEqual({ sub: 'jwt-agent', act: { sub: 'sub-agent', act: { sub: 'secret-agent' } } })
  })

  it('logs no credential', () => {
    expectCleanLogs(b)
  })
})
