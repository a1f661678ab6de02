/**
 * RFC 8414 metadata, the RFC 7517 JWKS, and the `--dev` routes, which must
 * not exist at all without `--dev`.
 */
import { decodeJwt, decodeProtectedHeader, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashClientSecret } from '../../../src/tokens/client-auth.js'
import { AUDIENCE, basic, BROKER, GRANT_TYPE_TOKEN_EXCHANGE, SECRET } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

const DEV_ISSUER = 'https://users.dev.mandate.invalid'
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth']

const devAgentPolicy = `agent: dev-agent
owner: security@example.com
purpose: trusts the dev user issuer
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }
users: [{ issuer: ${DEV_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`

const post = (b: TrackedBroker, path: string, body?: string) =>
  Promise.resolve(b.mandate.app.request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body }) }))

describe('without --dev', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker({ policies: { 'dev-agent.yaml': devAgentPolicy } })
  })
  afterAll(() => b.close())

  it('has no POST /dev/users/:sub/token (404)', async () => {
    const res = await post(b, '/dev/users/alice/token', '{"scope":"read"}')
    expect(res.status).toBe(404)
    expect(await res.text()).not.toContain('access_token')
  })

  it('has no GET /dev/jwks.json (404)', async () => {
    expect((await b.mandate.app.request('/dev/jwks.json')).status).toBe(404)
  })

  it('does not trust the dev user issuer', async () => {
    // A token that claims the dev issuer, signed by the user issuer's key.
    const forged = b.secret(await b.userToken({ iss: DEV_ISSUER }))
    await expectOAuthError(await b.token(exchange(forged), basic('dev-agent', SECRET)), 400, 'invalid_request')
  })

  describe('RFC 8414 metadata', () => {
    it('names issuer, token endpoint, JWKS, the token-exchange grant and the auth methods', async () => {
      const res = await b.mandate.app.request('/.well-known/oauth-authorization-server')
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type') ?? '').toMatch(/^application\/json/)
      const m = (await res.json()) as Record<string, unknown>
      expect(m['issuer']).toBe(BROKER)
      expect(m['token_endpoint']).toBe(`${BROKER}/oauth2/token`)
      expect(m['jwks_uri']).toBe(`${BROKER}/.well-known/jwks.json`)
      expect(m['grant_types_supported']).toEqual([GRANT_TYPE_TOKEN_EXCHANGE])
      const methods = m['token_endpoint_auth_methods_supported'] as string[]
      expect([...methods].sort()).toEqual(['client_secret_basic', 'private_key_jwt', 'spiffe_jwt'])
      const algs = m['token_endpoint_auth_signing_alg_values_supported'] as string[]
      expect(algs).toContain('ES256')
      expect(algs).not.toContain('none')
      expect(algs.some((a) => a.startsWith('HS'))).toBe(false)
    })

    it('serves the paths it names', async () => {
      const m = (await (await b.mandate.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, string>
      const jwksPath = new URL(m['jwks_uri']!).pathname
      expect((await b.mandate.app.request(jwksPath)).status).toBe(200)
      // The token endpoint exists (an empty POST is an OAuth error, not a 404).
      const res = await b.mandate.app.request(new URL(m['token_endpoint']!).pathname, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: '',
      })
      await expectOAuthError(res, 400, 'invalid_request')
    })
  })

  describe('RFC 7517 JWKS', () => {
    it('publishes the kid minted tokens carry, and no private member', async () => {
      const res = await b.mandate.app.request('/.well-known/jwks.json')
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type') ?? '').toMatch(/^application\/jwk-set\+json/)
      const jwks = (await res.json()) as { keys: JWK[] }
      expect(jwks.keys.length).toBeGreaterThan(0)
      for (const k of jwks.keys) {
        for (const m of PRIVATE_MEMBERS) expect(k, `member ${m}`).not.toHaveProperty(m)
        expect(typeof k.kid).toBe('string')
        expect(k.use ?? 'sig').toBe('sig')
      }
      const issued = await expectToken(await b.token(exchange(b.secret(await b.userToken())), basic('secret-agent', SECRET)))
      const { kid, alg } = decodeProtectedHeader(issued.access_token)
      const key = jwks.keys.find((k) => k.kid === kid)
      expect(key).toBeDefined()
      expect(key?.alg).toBe(alg)
    })
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
  })
})

describe('with --dev', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker({ dev: true, policies: { 'dev-agent.yaml': devAgentPolicy } })
  })
  afterAll(() => b.close())

  const devToken = async (sub: string, body?: string) => {
    const res = await post(b, `/dev/users/${sub}/token`, body)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control') ?? '').toMatch(/no-store/)
    const { access_token } = (await res.json()) as { access_token: string }
    return b.secret(access_token)
  }

  it('issues a dev user token that the broker accepts as a subject for an agent trusting the dev issuer', async () => {
    const userToken = await devToken('alice', '{"scope":"read write"}')
    expect(decodeJwt(userToken)).toMatchObject({ iss: DEV_ISSUER, sub: 'alice', aud: BROKER, scope: 'read write' })
    const body = await expectToken(await b.token(exchange(userToken, { scope: 'write' }), basic('dev-agent', SECRET)))
    expect(decodeJwt(body.access_token)).toMatchObject({ sub: 'alice', client_id: 'dev-agent', scope: 'write', aud: AUDIENCE })
  })

  it('issues with an empty body too', async () => {
    const body = await expectToken(await b.token(exchange(await devToken('bob')), basic('dev-agent', SECRET)))
    expect(decodeJwt(body.access_token).sub).toBe('bob')
  })

  it('refuses a dev user token for an agent that does not trust the dev issuer → 400 invalid_request', async () => {
    await expectOAuthError(await b.token(exchange(await devToken('alice')), basic('secret-agent', SECRET)), 400, 'invalid_request')
  })

  it('refuses a bad sub or body → 400 invalid_request', async () => {
    await expectOAuthError(await post(b, '/dev/users/al%20ice/token'), 400, 'invalid_request')
    await expectOAuthError(await post(b, '/dev/users/alice/token', '{"scope":"read","admin":true}'), 400, 'invalid_request')
    await expectOAuthError(await post(b, '/dev/users/alice/token', 'not json'), 400, 'invalid_request')
  })

  it('publishes /dev/jwks.json without private members', async () => {
    const jwks = (await (await b.mandate.app.request('/dev/jwks.json')).json()) as { keys: JWK[] }
    expect(jwks.keys.length).toBeGreaterThan(0)
    for (const k of jwks.keys) for (const m of PRIVATE_MEMBERS) expect(k).not.toHaveProperty(m)
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
  })
})
