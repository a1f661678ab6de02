/**
 * The kill switch's HTTP surface: /admin/revocations (RBAC on every route),
 * /oauth2/introspect (RFC 7662) and /oauth2/revoke (RFC 7009), and the token
 * endpoint's refusals after each kind of revocation.
 */
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Subject } from '../../../src/core/claims.js'
import { ADMIN_KEYS, basic, bearer, encodeForm, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER, type TestBroker } from '../../support/broker.js'
import { expectOAuthError, expectToken } from './helpers.js'

describe('admin API, introspection and RFC 7009 revocation', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker()
  })
  afterAll(() => b.close())

  const admin = (method: string, path: string, key: string | undefined, body?: unknown) =>
    Promise.resolve(
      b.mandate.app.request(path, {
        method,
        headers: { ...(key === undefined ? {} : bearer(key)), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      }),
    )
  const form = (path: string, fields: Record<string, string>, headers: Record<string, string>) =>
    Promise.resolve(
      b.mandate.app.request(path, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: encodeForm(fields),
      }),
    )
  const issue = async (agent = 'secret-agent', extra: Record<string, string> = {}, subject?: string) => {
    const res = await b.token(b.exchangeForm(subject ?? (await b.userToken()), { scope: 'read', ...extra }), basic(agent, SECRET))
    return (await expectToken(res)).access_token
  }
  const introspect = (token: string) => form('/oauth2/introspect', { token }, basic('secret-agent', SECRET))
  // As an auditor: the tokens checked here belong to several agents, and an agent sees only its own.
  const active = async (token: string) =>
    ((await (await form('/oauth2/introspect', { token }, bearer(ADMIN_KEYS.auditor))).json()) as { active: boolean }).active

  describe('RBAC: every route refuses a missing key, a wrong key and a key without the role', () => {
    const routes: [string, string, keyof typeof ADMIN_KEYS, unknown?][] = [
      ['POST', '/admin/revocations', 'auditor', { agent: 'secret-agent', reason: 'rbac' }],
      ['GET', '/admin/revocations', 'responder'],
      ['GET', '/admin/revocations/00000000-0000-4000-8000-000000000000', 'responder'],
      ['DELETE', '/admin/revocations/00000000-0000-4000-8000-000000000000', 'auditor'],
    ]
    it.each(routes)('%s %s', async (method, path, lacking, body) => {
      for (const key of [undefined, 'not-a-key', `${ADMIN_KEYS.admin}x`]) {
        const res = await admin(method, path, key, body)
        expect(res.status).toBe(401)
        expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /)
        expect(((await res.json()) as { error: string }).error).toBe('unauthorized')
      }
      const res = await admin(method, path, ADMIN_KEYS[lacking], body)
      expect(res.status).toBe(403)
      expect(((await res.json()) as { error: string }).error).toBe('forbidden')
    })
    it('refuses a Basic header and a token-endpoint secret as admin credentials', async () => {
      const res = await Promise.resolve(b.mandate.app.request('/admin/revocations', { headers: basic('secret-agent', SECRET) }))
      expect(res.status).toBe(401)
    })
  })

  it('kills an agent: its live token goes inactive, it gets nothing, lifting restores issuance but not the old token', async () => {
    const before = await issue()
    expect(await active(before)).toBe(true)
    b.advance(1)
    const res = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { agent: 'secret-agent', reason: 'rogue' })
    expect(res.status).toBe(201)
    const record = (await res.json()) as { id: string; kind: string; in_force: boolean; created_by: string }
    expect(record).toMatchObject({ kind: 'agent', in_force: true, created_by: 'responder-holder' })

    await expectOAuthError(await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET)), 400, 'unauthorized_client')
    // Introspected by another agent: the killed agent may not authenticate to ask.
    expect(((await (await form('/oauth2/introspect', { token: before }, bearer(ADMIN_KEYS.auditor))).json()) as { active: boolean }).active).toBe(false)

    b.advance(1)
    const lifted = await admin('DELETE', `/admin/revocations/${record.id}`, ADMIN_KEYS.responder)
    expect(lifted.status).toBe(200)
    expect(await lifted.json()).toMatchObject({ in_force: false, lifted_by: 'responder-holder' })
    b.advance(1)
    const after = await issue()
    expect(await active(after)).toBe(true)
    expect(await active(before)).toBe(false)
    expect(
      b.audit
        .events()
        .filter((e) => e.type === 'revocation.created' || e.type === 'revocation.lifted')
        .map((e) => e.type),
    ).toEqual(expect.arrayContaining(['revocation.created', 'revocation.lifted']))
  })

  it('revokes a chain: the token and every token delegated from it, but not its parent', async () => {
    const root = await issue()
    const child = await issue('sub-agent', {}, root)
    const grandchild = await issue('secret-agent', {}, child).catch(() => undefined)
    const res = await admin('POST', '/admin/revocations', ADMIN_KEYS.admin, { chain: decodeJwt(child).jti, reason: 'leaked' })
    expect(res.status).toBe(201)
    expect(await active(root)).toBe(true)
    expect(await active(child)).toBe(false)
    if (grandchild !== undefined) expect(await active(grandchild)).toBe(false)
    await expectOAuthError(await b.token(b.exchangeForm(child, { scope: 'read' }), basic('secret-agent', SECRET)), 400, 'invalid_request')
  })

  it('kills an agent for one user only', async () => {
    const bob = await b.userToken({ sub: 'bob' })
    const carol = await b.userToken({ sub: 'carol' })
    const bobToken = await issue('secret-agent', {}, bob)
    const res = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { agent: 'secret-agent', sub: 'bob', reason: 'bob reported it' })
    expect(((await res.json()) as { kind: string }).kind).toBe('agent_sub')
    expect(await active(bobToken)).toBe(false)
    await expectOAuthError(await b.token(b.exchangeForm(bob, { scope: 'read' }), basic('secret-agent', SECRET)), 400, 'unauthorized_client')
    await issue('secret-agent', {}, carol)
  })

  it('lists newest first with keyset pagination, and reads one by id', async () => {
    for (let i = 0; i < 3; i++) await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { jti: `list-${i}`, reason: 'page' })
    const page1 = (await (await admin('GET', '/admin/revocations?limit=2', ADMIN_KEYS.auditor)).json()) as { revocations: { id: string }[]; next: string }
    expect(page1.revocations).toHaveLength(2)
    const page2 = (await (await admin('GET', `/admin/revocations?limit=2&before=${page1.next}`, ADMIN_KEYS.auditor)).json()) as {
      revocations: { id: string }[]
    }
    expect(page2.revocations.map((r) => r.id)).not.toContain(page1.revocations[0]!.id)
    const one = await admin('GET', `/admin/revocations/${page1.revocations[0]!.id}`, ADMIN_KEYS.auditor)
    expect(one.status).toBe(200)
  })

  it.each([
    ['two targets', { jti: 'a', agent: 'secret-agent', reason: 'x' }],
    ['no target', { reason: 'x' }],
    ['no reason', { agent: 'secret-agent' }],
    ['unknown field', { agent: 'secret-agent', reason: 'x', kind: 'agent' }],
    ['bad agent id', { agent: 'Not An Agent', reason: 'x' }],
    ['an issuer without a user', { iss: USER_ISSUER, reason: 'x' }],
    ['an issuer with an agent alone', { agent: 'secret-agent', iss: USER_ISSUER, reason: 'x' }],
    ['an issuer the broker does not trust', { sub: 'alice', iss: 'https://unknown-idp.test', reason: 'x' }],
    ['force on a token', { jti: 'a', force: true, reason: 'x' }],
    ['force that is not a boolean', { agent: 'secret-agent', force: 'yes', reason: 'x' }],
    ['not JSON', '{"agent":'],
    ['an array', '[]'],
  ])('refuses %s with 400 and changes nothing', async (_name, body) => {
    const before = (await b.revocations.service.list({ limit: 1000 })).length
    const res = await admin('POST', '/admin/revocations', ADMIN_KEYS.admin, body)
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request')
    expect((await b.revocations.service.list({ limit: 1000 })).length).toBe(before)
  })

  it('names the user by issuer and sub: the only trusted issuer when left out, echoed in the answer', async () => {
    const user = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { sub: 'dave', reason: 'r' })
    expect(user.status).toBe(201)
    expect(await user.json()).toMatchObject({ kind: 'sub', target: { sub: 'dave', iss: USER_ISSUER } })
    const pair = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { agent: 'secret-agent', sub: 'dave', iss: USER_ISSUER, reason: 'r' })
    expect(pair.status).toBe(201)
    expect(await pair.json()).toMatchObject({ kind: 'agent_sub', target: { agent: 'secret-agent', sub: 'dave', iss: USER_ISSUER } })
    // An issuer it does not trust, pre-emptively.
    const forced = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { sub: 'dave', iss: 'https://future-idp.test', force: true, reason: 'r' })
    expect(forced.status).toBe(201)
    expect(await forced.json()).toMatchObject({ target: { sub: 'dave', iss: 'https://future-idp.test' } })
  })

  it('shows a kill naming no issuer (recorded before kills named one) as iss null: any issuer', async () => {
    const { id } = await b.revocations.service.revoke({ target: { kind: 'sub', sub: 'erin' as Subject, iss: null }, reason: 'old', createdBy: 'test' })
    const one = (await (await admin('GET', `/admin/revocations/${id}`, ADMIN_KEYS.auditor)).json()) as { target: unknown }
    expect(one.target).toStrictEqual({ sub: 'erin', iss: null })
    const list = (await (await admin('GET', '/admin/revocations?limit=1000', ADMIN_KEYS.auditor)).json()) as { revocations: { id: string; target: unknown }[] }
    expect(list.revocations.find((r) => r.id === id)?.target).toStrictEqual({ sub: 'erin', iss: null })
    const erin = await b.userToken({ sub: 'erin' })
    await expectOAuthError(await b.token(b.exchangeForm(erin, { scope: 'read' }), basic('secret-agent', SECRET)), 400, 'invalid_request')
  })

  it('refuses to kill an agent no policy defines (404), unless forced; nothing is recorded for the refusal', async () => {
    const before = (await b.revocations.service.list({ limit: 1000 })).length
    for (const body of [
      { agent: 'no-such-agent', reason: 'typo?' },
      { agent: 'no-such-agent', sub: 'alice', reason: 'typo?' },
    ]) {
      const res = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, body)
      expect(res.status).toBe(404)
      expect(((await res.json()) as { error: string }).error).toBe('not_found')
      expect(res.headers.get('cache-control')).toBe('no-store')
    }
    expect((await b.revocations.service.list({ limit: 1000 })).length).toBe(before)
    const forced = await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { agent: 'no-such-agent', force: true, reason: 'pre-emptive' })
    expect(forced.status).toBe(201)
    expect(await forced.json()).toMatchObject({ kind: 'agent', target: { agent: 'no-such-agent' }, in_force: true })
  })

  it('answers 409 when lifting a kill that is already lifted, and records one lift', async () => {
    const kill = (await (await admin('POST', '/admin/revocations', ADMIN_KEYS.responder, { agent: 'jwt-agent', reason: 'r' })).json()) as { id: string }
    const first = await admin('DELETE', `/admin/revocations/${kill.id}`, ADMIN_KEYS.responder)
    expect(first.status).toBe(200)
    const firstBody = await first.json()
    const again = await admin('DELETE', `/admin/revocations/${kill.id}`, ADMIN_KEYS.admin)
    expect(again.status).toBe(409)
    expect(((await again.json()) as { error: string }).error).toBe('conflict')
    expect(again.headers.get('cache-control')).toBe('no-store')
    expect(await (await admin('GET', `/admin/revocations/${kill.id}`, ADMIN_KEYS.auditor)).json()).toStrictEqual(firstBody)
    const lifts = b.audit.events().filter((e) => e.type === 'revocation.lifted' && e.revocation.id === kill.id)
    expect(lifts).toHaveLength(1)
  })

  it('answers 404 for unknown ids and 409 when lifting a token revocation', async () => {
    expect((await admin('DELETE', '/admin/revocations/00000000-0000-4000-8000-000000000000', ADMIN_KEYS.admin)).status).toBe(404)
    expect((await admin('DELETE', '/admin/revocations/not-a-uuid', ADMIN_KEYS.admin)).status).toBe(404)
    const r = (await (await admin('POST', '/admin/revocations', ADMIN_KEYS.admin, { jti: 'x-1', reason: 'r' })).json()) as { id: string }
    expect((await admin('DELETE', `/admin/revocations/${r.id}`, ADMIN_KEYS.admin)).status).toBe(409)
  })

  describe('introspection (RFC 7662)', () => {
    it('returns the claims of a live token', async () => {
      const token = await issue()
      const body = (await (await introspect(token)).json()) as Record<string, unknown>
      expect(body).toMatchObject({ active: true, client_id: 'secret-agent', sub: 'alice', token_type: 'Bearer', jti: decodeJwt(token).jti })
    })
    it('is inactive for expired, altered, foreign and garbage tokens', async () => {
      const token = await issue()
      // The signature's first character changed: its last ones may be padding bits, or happen to read "BA" already.
      const at = token.lastIndexOf('.') + 1
      const altered = `${token.slice(0, at)}${token[at] === 'A' ? 'B' : 'A'}${token.slice(at + 1)}`
      expect(altered).not.toBe(token)
      expect(await active(altered)).toBe(false)
      expect(await active(await b.userToken())).toBe(false)
      expect(await active('garbage')).toBe(false)
      b.advance(301)
      expect(await active(token)).toBe(false)
    })
    it('requires an authenticated caller', async () => {
      const res = await form('/oauth2/introspect', { token: await issue() }, {})
      await expectOAuthError(res, 401, 'invalid_client')
      await expectOAuthError(await form('/oauth2/introspect', { token: 'x' }, bearer(ADMIN_KEYS.responder)), 401, 'invalid_client')
    })
  })

  describe('revocation by the holder (RFC 7009)', () => {
    it('drops the caller’s own token and its descendants; 200 for garbage; refuses another agent’s token', async () => {
      const token = await issue()
      const child = await issue('sub-agent', {}, token)
      const other = await issue('sub-agent', {}, await issue())
      await expectOAuthError(await form('/oauth2/revoke', { token: other }, basic('secret-agent', SECRET)), 400, 'unauthorized_client')
      expect((await form('/oauth2/revoke', { token: 'garbage' }, basic('secret-agent', SECRET))).status).toBe(200)
      const res = await form('/oauth2/revoke', { token }, basic('secret-agent', SECRET))
      expect(res.status).toBe(200)
      expect(await active(token)).toBe(false)
      expect(await active(child)).toBe(false)
      expect(await active(other)).toBe(true)
    })
  })

  it('reports the mirror, the signing key and the policies in /readyz', async () => {
    const res = await Promise.resolve(b.mandate.app.request('/readyz'))
    expect(res.status).toBe(200)
    const jwks = (await (await Promise.resolve(b.mandate.app.request('/.well-known/jwks.json'))).json()) as { keys: { kid: string }[] }
    expect(await res.json()).toMatchObject({
      status: 'ready',
      revocation_mirror: { fresh: true },
      signing_keys: { signing: jwks.keys[0]!.kid, published: jwks.keys.length },
      policies: { agents: 5 },
    })
  })
})

describe('two trusted IdPs, each with an "alice": a user is (issuer, sub), end to end over HTTP', () => {
  const IDP_B = 'https://idp-b.test'
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({
      extraUserIssuers: [IDP_B],
      policies: {
        // One agent that users of both IdPs may delegate to.
        'two-idp-agent.yaml': secretAgentPolicy('two-idp-agent', USER_ISSUER).replace(
          `users: [{ issuer: ${USER_ISSUER} }]`,
          `users: [{ issuer: ${USER_ISSUER} }, { issuer: ${IDP_B} }]`,
        ),
      },
    })
  })
  afterAll(() => b.close())

  const aliceAtA = () => b.userToken({ sub: 'alice' })
  const aliceAtB = () => b.otherUsers[0]!.sign({ sub: 'alice' })
  const exchangeFor = (subject: string) => b.token(b.exchangeForm(subject), basic('two-idp-agent', SECRET))
  const admin = (method: string, path: string, body?: unknown) =>
    Promise.resolve(
      b.mandate.app.request(path, {
        method,
        headers: { ...bearer(ADMIN_KEYS.responder), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      }),
    )
  const active = async (token: string) =>
    (
      (await (
        await Promise.resolve(
          b.mandate.app.request('/oauth2/introspect', {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('two-idp-agent', SECRET) },
            body: encodeForm({ token }),
          }),
        )
      ).json()) as { active: boolean }
    ).active

  it('killing alice@A stops alice@A everywhere and leaves alice@B working', async () => {
    const tokenA = (await expectToken(await exchangeFor(await aliceAtA()))).access_token
    const tokenB = (await expectToken(await exchangeFor(await aliceAtB()))).access_token
    expect(decodeJwt(tokenB)['sub_id']).toEqual({ format: 'iss_sub', iss: IDP_B, sub: 'alice' })
    b.advance(1)

    // With two issuers trusted, which alice must be said.
    const vague = await admin('POST', '/admin/revocations', { sub: 'alice', reason: 'which one?' })
    expect(vague.status).toBe(400)
    expect(((await vague.json()) as { error: string }).error).toBe('invalid_request')

    const kill = await admin('POST', '/admin/revocations', { sub: 'alice', iss: USER_ISSUER, reason: 'phished at IdP A' })
    expect(kill.status).toBe(201)
    const record = (await kill.json()) as { id: string; target: unknown }
    expect(record.target).toStrictEqual({ sub: 'alice', iss: USER_ISSUER })

    expect(await active(tokenA)).toBe(false)
    expect(await active(tokenB)).toBe(true)
    await expectOAuthError(await exchangeFor(await aliceAtA()), 400, 'invalid_request')
    await expectToken(await exchangeFor(await aliceAtB()))
    // The denial names the user with the issuer.
    const denied = b.audit
      .events()
      .filter((e) => e.type === 'token.denied')
      .at(-1)
    expect(denied).toMatchObject({ type: 'token.denied', sub: 'alice', subIssuer: USER_ISSUER, error: 'invalid_request' })

    // And the agent killed for alice@B only: alice@B is refused it, bob@B is not.
    const pair = await admin('POST', '/admin/revocations', { agent: 'two-idp-agent', sub: 'alice', iss: IDP_B, reason: 'r' })
    expect(pair.status).toBe(201)
    expect(await active(tokenB)).toBe(false)
    await expectOAuthError(await exchangeFor(await aliceAtB()), 400, 'unauthorized_client')
    await expectToken(await exchangeFor(await b.otherUsers[0]!.sign({ sub: 'bob' })))

    // Lifting alice@A's kill lets a new alice@A token through; the old one stays dead.
    b.advance(1)
    expect((await admin('DELETE', `/admin/revocations/${record.id}`)).status).toBe(200)
    b.advance(1)
    await expectToken(await exchangeFor(await aliceAtA()))
    expect(await active(tokenA)).toBe(false)
  })
})
