/**
 * POST /oauth2/token refusals at the edge (CONTRIBUTING.md "Conventions") and
 * in client authentication (docs/ARCHITECTURE.md "The exchange, step by step", step 2): each an RFC 6749 §5.2 error
 * with the right status and code, no-store, and no token.
 */
import { generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashClientSecret } from '../../../src/tokens/client-auth.js'
import {
  AUDIENCE,
  basic,
  BROKER,
  CLIENT_ASSERTION_TYPE_JWT,
  encodeForm,
  GRANT_TYPE_TOKEN_EXCHANGE,
  OTHER_AUDIENCE,
  SECRET,
  TOKEN_TYPE,
  USER_ISSUER,
} from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, unsignedJws, type TrackedBroker } from './helpers.js'

/** A secret that needs RFC 6749 §2.3.1 form-urlencoding: ':' ' ' '+' '%' and non-ASCII. */
const ODD_SECRET = 'p@ss: w+rd%41/é:~!*'
const ODD_AGENT = 'odd.agent_1-x'

const oddPolicy = `agent: ${ODD_AGENT}
owner: security@example.com
purpose: secret that needs form-urlencoding
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(ODD_SECRET).toString('hex')} }
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`

describe('POST /oauth2/token: request and client-authentication errors', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker({ policies: { [`${ODD_AGENT}.yaml`]: oddPolicy } })
  })
  afterAll(() => b.close())

  const user = async () => b.secret(await b.userToken({ groups: ['engineering'] }))
  const secretAgent = () => basic('secret-agent', SECRET)
  const post = (body: string, headers: Record<string, string>) => Promise.resolve(b.mandate.app.request('/oauth2/token', { method: 'POST', headers, body }))

  describe('the form', () => {
    it('refuses application/json → 400 invalid_request', async () => {
      const body = JSON.stringify(exchange(await user()))
      const res = await post(body, { 'content-type': 'application/json', ...secretAgent() })
      await expectOAuthError(res, 400, 'invalid_request')
    })

    it('refuses a request without a content type → 400 invalid_request', async () => {
      const res = await b.mandate.app.request('/oauth2/token', { method: 'POST', body: encodeForm(exchange(await user())), headers: secretAgent() })
      await expectOAuthError(res, 400, 'invalid_request')
    })

    it('refuses a body over 64 KiB → 413', async () => {
      const fields = exchange(await user(), { scope: 'read', padding: 'x'.repeat(64 * 1024) })
      await expectOAuthError(await b.token(fields, secretAgent()), 413, 'invalid_request')
    })

    it('refuses a body over 64 KiB announced by Content-Length → 413', async () => {
      const body = encodeForm(exchange(await user(), { padding: 'x'.repeat(70 * 1024) }))
      const res = await post(body, { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)), ...secretAgent() })
      await expectOAuthError(res, 413, 'invalid_request')
    })

    it('refuses malformed percent-encoding → 400 invalid_request', async () => {
      const res = await post(`${encodeForm(exchange(await user()))}&scope=%zz`, { 'content-type': 'application/x-www-form-urlencoded', ...secretAgent() })
      await expectOAuthError(res, 400, 'invalid_request')
    })

    it('refuses a missing grant_type → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { grant_type: undefined }), secretAgent()), 400, 'invalid_request')
    })

    it('refuses an unknown grant → 400 unsupported_grant_type', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { grant_type: 'client_credentials' }), secretAgent()), 400, 'unsupported_grant_type')
    })

    it.each([
      ['subject_token', (t: string) => ({ subject_token: [t, t] })],
      ['scope', () => ({ scope: ['read', 'read'] })],
      ['grant_type', () => ({ grant_type: [GRANT_TYPE_TOKEN_EXCHANGE, GRANT_TYPE_TOKEN_EXCHANGE] })],
      ['subject_token_type', () => ({ subject_token_type: [TOKEN_TYPE.accessToken, TOKEN_TYPE.accessToken] })],
      ['requested_token_type', () => ({ requested_token_type: [TOKEN_TYPE.accessToken, TOKEN_TYPE.accessToken] })],
    ])('refuses %s sent twice → 400 invalid_request', async (_name, extra) => {
      const t = await user()
      await expectOAuthError(await b.token(exchange(t, extra(t)), secretAgent()), 400, 'invalid_request')
    })

    it('refuses two distinct audiences → 400 invalid_target', async () => {
      await expectOAuthError(
        await b.token(exchange(await user(), { audience: [AUDIENCE, OTHER_AUDIENCE], scope: 'read' }), secretAgent()),
        400,
        'invalid_target',
      )
    })

    it('refuses a resource and an audience that differ → 400 invalid_target', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { resource: OTHER_AUDIENCE, scope: 'read' }), secretAgent()), 400, 'invalid_target')
    })

    it('refuses a request with neither audience nor resource → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { audience: undefined }), secretAgent()), 400, 'invalid_request')
    })

    it('refuses a missing subject_token → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange('', { subject_token: undefined }), secretAgent()), 400, 'invalid_request')
    })

    it('refuses a missing subject_token_type → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { subject_token_type: undefined }), secretAgent()), 400, 'invalid_request')
    })

    it('refuses subject_token_type id_token → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { subject_token_type: TOKEN_TYPE.idToken }), secretAgent()), 400, 'invalid_request')
    })

    it('refuses an unsupported requested_token_type → 400 invalid_request', async () => {
      const extra = { requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }
      await expectOAuthError(await b.token(exchange(await user(), extra), secretAgent()), 400, 'invalid_request')
    })

    it('refuses a malformed scope (double space) → 400 invalid_scope', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { scope: 'read  write' }), secretAgent()), 400, 'invalid_scope')
    })

    it('refuses expires_in that is not a positive integer → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { expires_in: '-5' }), secretAgent()), 400, 'invalid_request')
    })
  })

  describe('client authentication', () => {
    it('refuses a request with no client authentication → 401 invalid_client with WWW-Authenticate', async () => {
      const res = await b.token(exchange(await user()))
      expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm=/)
      await expectOAuthError(res, 401, 'invalid_client')
    })

    it('refuses a client_id alone → 401 invalid_client', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { client_id: 'secret-agent' })), 401, 'invalid_client')
    })

    it('refuses two methods at once (Basic and a client assertion) → 400 invalid_request', async () => {
      const fields = exchange(await user(), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: b.secret(await b.assertion()) })
      await expectOAuthError(await b.token(fields, secretAgent()), 400, 'invalid_request')
    })

    it('refuses two methods at once (Basic and a workload actor_token) → 400 invalid_request', async () => {
      const actor = b.secret(await b.workloads.sign({}, { typ: 'JWT' }))
      const fields = exchange(await user(), { actor_token: actor, actor_token_type: TOKEN_TYPE.jwt })
      await expectOAuthError(await b.token(fields, secretAgent()), 400, 'invalid_request')
    })

    it('answers a wrong secret and an unknown agent alike: 401 invalid_client, byte-identical bodies', async () => {
      const t = await user()
      const wrong = await b.token(exchange(t), basic('secret-agent', 'not-the-secret-at-all'))
      const unknown = await b.token(exchange(t), basic('no-such-agent', SECRET))
      const otherMethod = await b.token(exchange(t), basic('jwt-agent', SECRET))
      const texts = [await wrong.clone().text(), await unknown.clone().text(), await otherMethod.clone().text()]
      await expectOAuthError(wrong, 401, 'invalid_client')
      await expectOAuthError(unknown, 401, 'invalid_client')
      await expectOAuthError(otherMethod, 401, 'invalid_client')
      expect(texts[1]).toBe(texts[0])
      expect(texts[2]).toBe(texts[0])
      expect(unknown.headers.get('www-authenticate')).toBe(wrong.headers.get('www-authenticate'))
    })

    it('accepts Basic credentials form-urlencoded per RFC 6749 §2.3.1 (secret with ":" " " "+" "%")', async () => {
      const header = basic(ODD_AGENT, b.secret(ODD_SECRET))
      const body = await expectToken(await b.token(exchange(await user()), header))
      expect(body.scope).toBe('read')
    })

    it('refuses the same secret sent without form-urlencoding → 401 invalid_client', async () => {
      // Raw '+' would decode to ' ' and '%41' to 'A': a different secret.
      const raw = { authorization: `Basic ${Buffer.from(`${ODD_AGENT}:${ODD_SECRET}`).toString('base64')}` }
      await expectOAuthError(await b.token(exchange(await user()), raw), 401, 'invalid_client')
    })

    it('refuses a malformed Authorization header → 401 invalid_client', async () => {
      await expectOAuthError(await b.token(exchange(await user()), { authorization: 'Basic !!!' }), 401, 'invalid_client')
      await expectOAuthError(
        await b.token(exchange(await user()), { authorization: `Basic ${Buffer.from('no-colon').toString('base64')}` }),
        401,
        'invalid_client',
      )
      await expectOAuthError(await b.token(exchange(await user()), { authorization: 'Bearer abc' }), 401, 'invalid_client')
    })

    it('refuses client_secret in the body (client_secret_post) → 401 invalid_client', async () => {
      const fields = exchange(await user(), { client_id: 'secret-agent', client_secret: SECRET })
      await expectOAuthError(await b.token(fields), 401, 'invalid_client')
    })

    it('refuses Basic credentials plus a client_secret in the body → 400 invalid_request (RFC 6749 §2.3: one method)', async () => {
      for (const secret of [SECRET, 'some-other-secret-value']) {
        const fields = exchange(await user(), { client_secret: b.secret(secret) })
        await expectOAuthError(await b.token(fields, secretAgent()), 400, 'invalid_request')
        await expectOAuthError(await b.token({ ...fields, client_id: 'secret-agent' }, secretAgent()), 400, 'invalid_request')
      }
    })

    it('refuses a client_secret in the body plus a client assertion → 400 invalid_request', async () => {
      const fields = exchange(await user(), {
        client_secret: SECRET,
        client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
        client_assertion: b.secret(await b.assertion()),
      })
      await expectOAuthError(await b.token(fields), 400, 'invalid_request')
    })

    it('accepts a body client_id equal to the Basic id (RFC 6749 §3.2.1: it identifies, it does not authenticate)', async () => {
      await expectToken(await b.token(exchange(await user(), { client_id: 'secret-agent' }), secretAgent()))
    })

    it('refuses a body client_id that differs from the Basic id → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { client_id: 'jwt-agent' }), secretAgent()), 400, 'invalid_request')
      await expectOAuthError(await b.token(exchange(await user(), { client_id: 'no-such-agent' }), secretAgent()), 400, 'invalid_request')
    })
  })

  describe('client assertion (private_key_jwt)', () => {
    const withAssertion = async (assertion: string, extra: Record<string, string | undefined> = {}) =>
      b.token(exchange(await user(), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: b.secret(assertion), ...extra }))

    it('accepts a well-formed assertion (control)', async () => {
      await expectToken(await withAssertion(await b.assertion()))
    })

    it('accepts an assertion valid for exactly 300 s (the limit)', async () => {
      await expectToken(await withAssertion(await b.assertion({ exp: b.now() + 300 })))
    })

    it('refuses aud = the token endpoint URL → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ aud: `${BROKER}/oauth2/token` })), 401, 'invalid_client')
    })

    it('refuses aud as an array containing the issuer → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ aud: [BROKER] })), 401, 'invalid_client')
    })

    it('refuses exp more than 300 s ahead → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ exp: b.now() + 301 })), 401, 'invalid_client')
    })

    it('refuses an expired assertion → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ iat: b.now() - 120, exp: b.now() - 31 })), 401, 'invalid_client')
    })

    it('refuses an assertion whose clock has been passed (b.advance) → 401 invalid_client', async () => {
      const a = await b.assertion()
      b.advance(60 + 31)
      await expectOAuthError(await withAssertion(a), 401, 'invalid_client')
    })

    it('refuses iss ≠ sub → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ sub: 'secret-agent' })), 401, 'invalid_client')
    })

    it('refuses an assertion without jti → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ jti: undefined })), 401, 'invalid_client')
    })

    it('refuses an assertion not yet valid (nbf in the future) → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ nbf: b.now() + 120 })), 401, 'invalid_client')
    })

    it('refuses an unknown kid → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({}, { kid: 'no-such-kid' })), 401, 'invalid_client')
    })

    it('refuses a replayed jti (second use) → 401 invalid_client', async () => {
      const a = await b.assertion()
      await expectToken(await withAssertion(a))
      await expectOAuthError(await withAssertion(a), 401, 'invalid_client')
    })

    it('refuses a replayed jti in a fresh assertion → 401 invalid_client', async () => {
      const jti = `replay-${Math.random()}`
      await expectToken(await withAssertion(await b.assertion({ jti })))
      await expectOAuthError(await withAssertion(await b.assertion({ jti })), 401, 'invalid_client')
    })

    it('refuses an assertion signed by another key → 401 invalid_client', async () => {
      const other = await generateKeyPair('ES256')
      await expectOAuthError(await withAssertion(await b.assertion({}, {}, other.privateKey)), 401, 'invalid_client')
    })

    it('refuses alg none → 401 invalid_client', async () => {
      const now = b.now()
      const claims = { iss: 'jwt-agent', sub: 'jwt-agent', aud: BROKER, jti: `none-${Math.random()}`, iat: now, exp: now + 60 }
      await expectOAuthError(await withAssertion(unsignedJws(claims, '', { alg: 'none' })), 401, 'invalid_client')
      await expectOAuthError(await withAssertion(unsignedJws(claims, 'AAAA', { alg: 'none', kid: b.agentKey.kid })), 401, 'invalid_client')
    })

    it('refuses an assertion for an agent that does not use private_key_jwt → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion({ iss: 'secret-agent', sub: 'secret-agent' })), 401, 'invalid_client')
    })

    it('refuses a wrong client_assertion_type → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion(), { client_assertion_type: 'urn:example:other' }), 401, 'invalid_client')
    })

    it('refuses a client_id that differs from the assertion iss → 401 invalid_client', async () => {
      await expectOAuthError(await withAssertion(await b.assertion(), { client_id: 'secret-agent' }), 401, 'invalid_client')
    })
  })

  describe('workload identity (actor_token)', () => {
    // The actor token is accepted only as the agent's whole client authentication (RFC 6749 §2.3): a
    // refused one is a failed client authentication (RFC 6749 §5.2), never RFC 8693's invalid_request.
    it('refuses actor_token without actor_token_type → 400 invalid_request', async () => {
      const actor = b.secret(await b.workloads.sign({}, { typ: 'JWT' }))
      await expectOAuthError(await b.token(exchange(await user(), { actor_token: actor })), 400, 'invalid_request')
    })

    it('refuses a user token offered as actor_token → 401 invalid_client', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { actor_token: await user(), actor_token_type: TOKEN_TYPE.jwt })), 401, 'invalid_client')
    })

    it('refuses a Mandate token offered as actor_token → 401 invalid_client', async () => {
      const issued = await expectToken(await b.token(exchange(await user()), secretAgent()))
      const fields = exchange(await user(), { actor_token: issued.access_token, actor_token_type: TOKEN_TYPE.jwt })
      await expectOAuthError(await b.token(fields), 401, 'invalid_client')
    })

    it('refuses a workload token for a subject no policy names → 401 invalid_client', async () => {
      const actor = b.secret(await b.workloads.sign({ sub: 'spiffe://test/ns/agents/sa/stranger' }, { typ: 'JWT' }))
      await expectOAuthError(await b.token(exchange(await user(), { actor_token: actor, actor_token_type: TOKEN_TYPE.jwt })), 401, 'invalid_client')
    })

    it('refuses an unsupported actor_token_type → 401 invalid_client', async () => {
      const actor = b.secret(await b.workloads.sign({}, { typ: 'JWT' }))
      await expectOAuthError(await b.token(exchange(await user(), { actor_token: actor, actor_token_type: TOKEN_TYPE.idToken })), 401, 'invalid_client')
    })

    it('answers a refused workload token like a wrong secret: byte-identical bodies', async () => {
      const stranger = b.secret(await b.workloads.sign({ sub: 'spiffe://test/ns/agents/sa/stranger' }, { typ: 'JWT' }))
      const refused = await b.token(exchange(await user(), { actor_token: stranger, actor_token_type: TOKEN_TYPE.jwt }))
      const wrong = await b.token(exchange(await user()), basic('secret-agent', 'not-the-secret-at-all'))
      expect(await refused.text()).toBe(await wrong.text())
    })
  })

  describe('request log lines (CONTRIBUTING.md "Conventions")', () => {
    const lineFor = (id: string) => b.logs().find((l) => l['msg'] === 'request' && l['request_id'] === id)

    it('uses an offered X-Request-Id, echoes it, and names agent and error on an authenticated denial', async () => {
      const res = await b.token(exchange(await user(), { scope: 'admin' }), { ...secretAgent(), 'x-request-id': 'rid-denied-1' })
      expect(res.headers.get('x-request-id')).toBe('rid-denied-1')
      await expectOAuthError(res, 400, 'invalid_scope')
      expect(lineFor('rid-denied-1')).toMatchObject({ status: 400, agent: 'secret-agent', error: 'invalid_scope', path: '/oauth2/token' })
    })

    it('names the error, and no agent, on a client-authentication failure', async () => {
      await expectOAuthError(
        await b.token(exchange(await user()), { ...basic('secret-agent', 'wrong-one-1234'), 'x-request-id': 'rid-401-1' }),
        401,
        'invalid_client',
      )
      const line = lineFor('rid-401-1')
      expect(line).toMatchObject({ status: 401, error: 'invalid_client' })
      expect(line?.['agent']).toBeUndefined()
    })

    it('names the error on a 413', async () => {
      const fields = exchange(await user(), { padding: 'x'.repeat(65 * 1024) })
      await expectOAuthError(await b.token(fields, { ...secretAgent(), 'x-request-id': 'rid-413-1' }), 413, 'invalid_request')
      expect(lineFor('rid-413-1')).toMatchObject({ status: 413, error: 'invalid_request' })
    })

    it('echoes X-Request-Id on a 200, a probe and an unknown route too (set before the route renders)', async () => {
      const ok = await b.token(exchange(await user()), { ...secretAgent(), 'x-request-id': 'rid-200-1' })
      await expectToken(ok)
      expect(ok.headers.get('x-request-id')).toBe('rid-200-1')
      for (const path of ['/healthz', '/no-such-route']) {
        const res = await b.mandate.app.request(path, { headers: { 'x-request-id': `rid-${path.length}` } })
        expect(res.headers.get('x-request-id'), path).toBe(`rid-${path.length}`)
      }
    })

    it('replaces an offered X-Request-Id that is not a safe token', async () => {
      const res = await b.token(exchange(await user()), { ...secretAgent(), 'x-request-id': 'bad id <script>' })
      const id = res.headers.get('x-request-id') ?? ''
      expect(id).toMatch(/^[A-Za-z0-9._-]{1,64}$/)
      expect(lineFor(id)).toBeDefined()
    })
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
  })
})
