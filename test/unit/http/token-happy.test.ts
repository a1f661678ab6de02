/**
 * POST /oauth2/token, the paths that issue a token: every client
 * authentication method, RFC 8707 `resource`, policy defaults, the RFC 8693
 * §2.2.1 response, the RFC 9068 token it carries, and the audit record.
 */
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AUDIENCE, basic, BROKER, CLIENT_ASSERTION_TYPE_JWT, SECRET, TOKEN_TYPE } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectToken, rawUserToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

describe('POST /oauth2/token: tokens issued', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(() => b.close())

  const user = async (claims: Record<string, unknown> = {}) => b.secret(await b.userToken(claims))
  const assertion = async () => b.secret(await b.assertion())

  it('issues to a client_secret_basic agent', async () => {
    const res = await b.token(exchange(await user(), { scope: 'read write' }), basic('secret-agent', SECRET))
    const body = await expectToken(res)
    expect(body.scope).toBe('read write')
    expect(decodeJwt(body.access_token)).toMatchObject({ sub: 'alice', client_id: 'secret-agent', act: { sub: 'secret-agent' } })
  })

  it('issues to a private_key_jwt agent (RFC 7523 client assertion)', async () => {
    const res = await b.token(
      exchange(await user({ groups: ['engineering'] }), {
        scope: 'read',
        client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
        client_assertion: await assertion(),
      }),
    )
    const body = await expectToken(res)
    expect(decodeJwt(body.access_token)).toMatchObject({ sub: 'alice', client_id: 'jwt-agent', act: { sub: 'jwt-agent' }, scope: 'read' })
  })

  it('issues to a workload-identity agent authenticated by actor_token alone', async () => {
    const actorToken = b.secret(await b.workloads.sign({}, { typ: 'JWT' }))
    const res = await b.token(exchange(await user(), { actor_token: actorToken, actor_token_type: TOKEN_TYPE.jwt }))
    const body = await expectToken(res)
    expect(decodeJwt(body.access_token)).toMatchObject({ sub: 'alice', client_id: 'workload-agent', act: { sub: 'workload-agent' }, scope: 'read' })
  })

  it('takes the audience from `resource` (RFC 8707) when `audience` is absent', async () => {
    const fields = exchange(await user(), { audience: undefined, resource: AUDIENCE, scope: 'read' })
    expect(fields).not.toHaveProperty('audience')
    const body = await expectToken(await b.token(fields, basic('secret-agent', SECRET)))
    expect(decodeJwt(body.access_token).aud).toBe(AUDIENCE)
  })

  it('grants the policy default scopes when scope is omitted', async () => {
    const body = await expectToken(await b.token(exchange(await user()), basic('secret-agent', SECRET)))
    expect(body.scope).toBe('read')
    expect(decodeJwt(body.access_token)['scope']).toBe('read')
  })

  it('answers in the RFC 8693 §2.2.1 shape, not cacheable', async () => {
    const res = await b.token(exchange(await user(), { scope: 'write' }), basic('secret-agent', SECRET))
    expect(res.headers.get('pragma')).toBe('no-cache')
    expect(res.headers.get('content-type') ?? '').toMatch(/^application\/json/)
    const body = await expectToken(res)
    expect(Object.keys(body).sort()).toEqual(['access_token', 'expires_in', 'issued_token_type', 'scope', 'token_type'])
    expect(body.issued_token_type).toBe(TOKEN_TYPE.accessToken)
    expect(body.token_type).toBe('Bearer')
    expect(Number.isInteger(body.expires_in)).toBe(true)
    expect(body.expires_in).toBe(300) // secret-agent's token_ttl.default
    expect(body.scope).toBe('write')
    expect(body.access_token.split('.')).toHaveLength(3)
  })

  it('mints an RFC 9068 JWT that stock jose verifies against the published JWKS, and audits it', async () => {
    const before = b.audit.events().length
    const userToken = await user()
    const res = await b.token(exchange(userToken, { scope: 'read write' }), basic('secret-agent', SECRET))
    const body = await expectToken(res)

    const header = decodeProtectedHeader(body.access_token)
    expect(header.typ).toBe('at+jwt')
    expect(header.alg).toBe('ES256')
    expect(typeof header.kid).toBe('string')

    const jwks = (await (await b.mandate.app.request('/.well-known/jwks.json')).json()) as JSONWebKeySet
    expect(jwks.keys.map((k) => k.kid)).toContain(header.kid)
    const { payload } = await jwtVerify(body.access_token, createLocalJWKSet(jwks), {
      issuer: BROKER,
      audience: AUDIENCE,
      typ: 'at+jwt',
      algorithms: ['ES256'],
      currentDate: new Date(b.now() * 1000),
      requiredClaims: ['iss', 'sub', 'aud', 'client_id', 'act', 'scope', 'iat', 'nbf', 'exp', 'jti'],
    })
    const now = b.now()
    expect(payload).toMatchObject({
      iss: BROKER,
      sub: 'alice',
      aud: AUDIENCE,
      client_id: 'secret-agent',
      act: { sub: 'secret-agent' },
      scope: 'read write',
      iat: now,
      nbf: now,
      exp: now + 300,
    })
    expect(payload['act']).toEqual({ sub: 'secret-agent' })
    expect(payload).not.toHaveProperty('chain')
    expect(typeof payload.jti).toBe('string')
    expect((payload.jti as string).length).toBeGreaterThanOrEqual(16)

    const added = b.audit.events().slice(before)
    expect(added).toHaveLength(1)
    expect(added[0]).toMatchObject({
      type: 'token.issued',
      at: now,
      agent: 'secret-agent',
      sub: 'alice',
      actors: ['secret-agent'],
      jti: payload.jti,
      parentJti: undefined,
      rootJti: payload.jti,
      audience: AUDIENCE,
      scopes: ['read', 'write'],
      expiresAt: now + 300,
    })
  })

  it('issues distinct jtis for two identical requests', async () => {
    const userToken = await user()
    const a = await expectToken(await b.token(exchange(userToken), basic('secret-agent', SECRET)))
    const c = await expectToken(await b.token(exchange(userToken), basic('secret-agent', SECRET)))
    expect(decodeJwt(a.access_token).jti).not.toBe(decodeJwt(c.access_token).jti)
  })

  it('never outlives the user token (user token expires in 60 s)', async () => {
    const userExp = b.now() + 60
    const body = await expectToken(await b.token(exchange(await user({ exp: userExp }), { scope: 'read' }), basic('secret-agent', SECRET)))
    expect(body.expires_in).toBeGreaterThan(0)
    expect(body.expires_in).toBeLessThanOrEqual(60)
    expect(decodeJwt(body.access_token).exp).toBeLessThanOrEqual(userExp)
  })

  it('answers expires_in as an integer (RFC 6749 A.14) even when the user token exp is not one', async () => {
    // RFC 7519 §2 NumericDate may be non-integer; RFC 6749 A.14 expires-in is 1*DIGIT.
    const subject = b.secret(rawUserToken(b, { exp: b.now() + 60.5 }))
    const body = await expectToken(await b.token(exchange(subject, { scope: 'read' }), basic('secret-agent', SECRET)))
    expect(body.expires_in, 'expires_in must be whole seconds').toBe(Math.floor(body.expires_in))
    expect(body.expires_in).toBeLessThanOrEqual(60)
    expect(decodeJwt(body.access_token).exp).toBeLessThanOrEqual(b.now() + 60.5)
  })

  it('honours a requested lifetime below the policy maximum', async () => {
    const body = await expectToken(await b.token(exchange(await user(), { expires_in: '42' }), basic('secret-agent', SECRET)))
    expect(body.expires_in).toBe(42)
  })

  it('accepts the same audience sent twice (one distinct value)', async () => {
    const body = await expectToken(await b.token(exchange(await user(), { audience: [AUDIENCE, AUDIENCE] }), basic('secret-agent', SECRET)))
    expect(decodeJwt(body.access_token).aud).toBe(AUDIENCE)
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
  })
})
