/**
 * ID-JAG redemption (draft-ietf-oauth-identity-assertion-authz-grant) at the
 * token endpoint with the RFC 7523 JWT bearer grant: a test IdP signs the
 * ID-JAGs and serves its JWKS over HTTP on loopback, which the broker fetches
 * as it would an enterprise IdP's. The token and its record are an
 * exchange's; every failure is a precise RFC error with one description.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose'
import fc from 'fast-check'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GRANT_TYPE_JWT_BEARER } from '../../src/core/claims.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { AUDIENCE, basic, BROKER, encodeForm, OTHER_AUDIENCE, SECRET, startTestBroker, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { error, runCase, type HostileCase } from '../hostile/harness.js'

const ASSERTION_UNACCEPTABLE = 'assertion is invalid or not acceptable'

interface TestIdp {
  readonly iss: string
  sign(claims?: Record<string, unknown>, header?: Record<string, unknown>, key?: CryptoKey): Promise<string>
  close(): Promise<void>
}

/** An IdP on loopback: its JWKS at /jwks; ID-JAGs for `alice` to `xaa-agent`, 300 s, scope `read write`, unless told otherwise. */
async function startIdp(now: () => number): Promise<TestIdp & { readonly otherKey: CryptoKey }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const other = await generateKeyPair('ES256', { extractable: true })
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' }] })
  const server: Server = createServer((req, res) => {
    if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
    else res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const iss = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    iss,
    otherKey: other.privateKey,
    sign: (claims = {}, header = {}, key = privateKey) => {
      const t = now()
      const payload: Record<string, unknown> = {
        iss,
        sub: 'alice',
        aud: BROKER,
        client_id: 'xaa-agent',
        jti: randomUUID(),
        iat: t,
        exp: t + 300,
        scope: 'read write',
        ...claims,
      }
      for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k]
      return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'idp-1', typ: 'oauth-id-jag+jwt', ...header }).sign(key)
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  }
}

const PAYMENTS = 'https://payments.test'

function policy(agent: string, userIssuers: readonly string[], userClaims = ''): string {
  return `agent: ${agent}
owner: security@example.com
purpose: cross-app access test agent
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }
users: [${userIssuers.map((i) => `{ issuer: '${i}'${userClaims} }`).join(', ')}]
grants:
  - { audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }
  - { audience: ${OTHER_AUDIENCE}, scopes: [read], default_scopes: [read] }
  - audience: ${PAYMENTS}
    scopes: [pay]
    default_scopes: [pay]
    approval: { required: true, approvers: user, timeout: 300s, reuse: none }
token_ttl: { default: 300, max: 600 }
`
}

const grantForm = (assertion: string, extra: Record<string, string> = {}) => ({ grant_type: GRANT_TYPE_JWT_BEARER, assertion, ...extra })

async function expectError(res: Response, status: number, error: string): Promise<Record<string, unknown>> {
  const body = (await res.json()) as Record<string, unknown>
  expect({ status: res.status, error: body['error'] }).toEqual({ status, error })
  expect(body['access_token']).toBeUndefined()
  expect(res.headers.get('cache-control')).toBe('no-store')
  return body
}

async function startBroker(idp: TestIdp, extra: Parameters<typeof startTestBroker>[0] = {}): Promise<TestBroker> {
  return startTestBroker({
    idJag: [{ issuer: idp.iss, jwks_uri: `${idp.iss}/jwks`, algorithms: ['ES256'], max_lifetime_seconds: 300 }],
    policies: {
      'xaa-agent.yaml': policy('xaa-agent', [idp.iss, USER_ISSUER]),
      'narrow-agent.yaml': policy('narrow-agent', [USER_ISSUER]),
      'sre-agent.yaml': policy('sre-agent', [idp.iss], ', claims: { groups: [sre] }'),
    },
    ...extra,
  })
}

describe('ID-JAG redemption (JWT bearer grant)', () => {
  let broker: TestBroker
  let idp: TestIdp & { readonly otherKey: CryptoKey }
  const agent = basic('xaa-agent', SECRET)

  beforeAll(async () => {
    let clock = () => 0
    idp = await startIdp(() => clock())
    broker = await startBroker(idp)
    clock = () => broker.now()
  })
  afterAll(async () => {
    await broker?.close()
    await idp?.close()
  })

  it('issues the token an exchange would, recorded as an exchange is', async () => {
    const jag = await idp.sign()
    const res = await broker.token(grantForm(jag, { resource: AUDIENCE }), agent)
    expect(res.status).toBe(200)
    const body = (await res.json()) as Record<string, unknown>
    const claims = decodeJwt(body['access_token'] as string)
    expect(claims).toMatchObject({ iss: BROKER, sub: 'alice', sub_id: { format: 'iss_sub', iss: idp.iss, sub: 'alice' }, aud: AUDIENCE })
    expect(claims).toMatchObject({ client_id: 'xaa-agent', act: { sub: 'xaa-agent' }, scope: 'read' })
    expect(claims.exp).toBeLessThanOrEqual(decodeJwt(jag).exp!)
    expect(body).toMatchObject({ issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', token_type: 'Bearer', scope: 'read' })

    // The same agent exchanging a user token: the same claims and the same record, field for field.
    const exchanged = await broker.token(broker.exchangeForm(await broker.userToken(), { scope: 'read' }), agent)
    expect(exchanged.status).toBe(200)
    const exchangedClaims = decodeJwt(((await exchanged.json()) as Record<string, string>)['access_token']!)
    expect(Object.keys(claims).sort()).toEqual(Object.keys(exchangedClaims).sort())
    const issued = broker.audit.events().filter((e) => e.type === 'token.issued')
    const [fromJag, fromExchange] = issued.slice(-2)
    expect(fromJag).toMatchObject({ agent: 'xaa-agent', sub: 'alice', subIssuer: idp.iss, audience: AUDIENCE, scopes: ['read'], jti: claims.jti })
    expect(Object.keys(fromJag!).sort()).toEqual(Object.keys(fromExchange!).sort())
  })

  it('is advertised in the metadata', async () => {
    const meta = (await (await broker.mandate.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
    expect(meta['grant_types_supported']).toContain(GRANT_TYPE_JWT_BEARER)
  })

  it('takes the typ in any case and with application/ (media type rules), and the ID-JAG’s resource by default', async () => {
    for (const typ of ['OAuth-ID-JAG+JWT', 'application/oauth-id-jag+jwt']) {
      const res = await broker.token(grantForm(await idp.sign({ resource: OTHER_AUDIENCE }, { typ })), agent)
      expect(res.status).toBe(200)
      expect(decodeJwt(((await res.json()) as Record<string, string>)['access_token']!).aud).toBe(OTHER_AUDIENCE)
    }
  })

  it('spends the jti once: a replay is invalid_grant, recorded', async () => {
    const jag = await idp.sign()
    expect((await broker.token(grantForm(jag, { audience: AUDIENCE }), agent)).status).toBe(200)
    const body = await expectError(await broker.token(grantForm(jag, { audience: AUDIENCE }), agent), 400, 'invalid_grant')
    expect(body['error_description']).toBe(ASSERTION_UNACCEPTABLE)
    expect(broker.audit.events().at(-1)).toMatchObject({ type: 'token.denied', agent: 'xaa-agent', error: 'invalid_grant', reason: 'id-jag jti replayed' })
  })

  const refusedAssertions: [string, () => Promise<string>, string][] = [
    ['typ JWT', () => idp.sign({}, { typ: 'JWT' }), 'id-jag typ_not_allowed'],
    ['typ at+jwt', () => idp.sign({}, { typ: 'at+jwt' }), 'id-jag typ_not_allowed'],
    ['no typ', () => idp.sign({}, { typ: undefined }), 'id-jag typ_not_allowed'],
    [
      'alg not allowed for the issuer',
      async () => {
        const rsa = await generateKeyPair('RS256')
        return idp.sign({}, { alg: 'RS256' }, rsa.privateKey)
      },
      'id-jag alg_not_allowed',
    ],
    ['another key', () => idp.sign({}, {}, idp.otherKey), 'id-jag bad_signature'],
    ['wrong aud', () => idp.sign({ aud: 'https://elsewhere.test' }), 'id-jag wrong_aud'],
    ['client_id of another agent', () => idp.sign({ client_id: 'narrow-agent' }), 'id-jag wrong_client_id'],
    ['no client_id', () => idp.sign({ client_id: undefined }), 'id-jag missing_client_id'],
    ['untrusted issuer', () => idp.sign({ iss: 'https://untrusted.test' }), 'id-jag issuer_not_trusted_for_id_jag'],
    ['a user issuer, not trusted for ID-JAGs', () => idp.sign({ iss: USER_ISSUER }), 'id-jag issuer_not_trusted_for_id_jag'],
    ['expired', () => idp.sign({ iat: broker.now() - 400, exp: broker.now() - 100 }), 'id-jag expired'],
    ['exp too far', () => idp.sign({ exp: broker.now() + 3600 }), 'id-jag exp_too_far'],
    ['lifetime too long', () => idp.sign({ iat: broker.now() - 250, exp: broker.now() + 100 }), 'id-jag lifetime_too_long'],
    ['iat in the future', () => idp.sign({ iat: broker.now() + 120, exp: broker.now() + 200 }), 'id-jag issued_in_future'],
    ['no jti', () => idp.sign({ jti: undefined }), 'id-jag missing_jti'],
    ['no sub', () => idp.sign({ sub: undefined }), 'id-jag missing_sub'],
    ['malformed scope', () => idp.sign({ scope: ['read'] }), 'id-jag bad_scope'],
    ['malformed resource', () => idp.sign({ resource: 42 }), 'id-jag bad_resource'],
    ['not a JWT', () => Promise.resolve('not.a.jwt'), 'id-jag'],
  ]
  it.each(refusedAssertions)('%s → invalid_grant, one description, the reason only in the record', async (_name, make, reason) => {
    const body = await expectError(await broker.token(grantForm(await make(), { audience: AUDIENCE }), agent), 400, 'invalid_grant')
    expect(body['error_description']).toBe(ASSERTION_UNACCEPTABLE)
    const record = broker.audit.events().at(-1) as unknown as Record<string, unknown>
    expect(record).toMatchObject({ type: 'token.denied', agent: 'xaa-agent', error: 'invalid_grant' })
    expect(String(record['reason'])).toContain(reason)
  })

  it('a user the policy’s users: does not admit → invalid_grant', async () => {
    const res = await broker.token(grantForm(await idp.sign({ client_id: 'narrow-agent' }), { audience: AUDIENCE }), basic('narrow-agent', SECRET))
    const body = await expectError(res, 400, 'invalid_grant')
    expect(body['error_description']).toBe(ASSERTION_UNACCEPTABLE)
    expect(broker.audit.events().at(-1)).toMatchObject({ type: 'token.denied', agent: 'narrow-agent', error: 'invalid_grant' })
  })

  it('the policy’s user rules read the ID-JAG’s claims as a user token’s', async () => {
    const sre = basic('sre-agent', SECRET)
    await expectError(await broker.token(grantForm(await idp.sign({ client_id: 'sre-agent' }), { audience: AUDIENCE }), sre), 400, 'invalid_grant')
    const res = await broker.token(grantForm(await idp.sign({ client_id: 'sre-agent', groups: ['sre'] }), { audience: AUDIENCE }), sre)
    expect(res.status).toBe(200)
  })

  it('a grant that needs a person’s approval → interaction_required, recorded', async () => {
    await expectError(await broker.token(grantForm(await idp.sign({ scope: 'pay' }), { audience: PAYMENTS }), agent), 400, 'interaction_required')
    expect(broker.audit.events().at(-1)).toMatchObject({ type: 'token.denied', agent: 'xaa-agent', error: 'interaction_required' })
  })

  it('a resource beyond the ID-JAG’s → invalid_target; beyond the policy’s → invalid_target', async () => {
    await expectError(await broker.token(grantForm(await idp.sign({ resource: AUDIENCE }), { resource: OTHER_AUDIENCE }), agent), 400, 'invalid_target')
    await expectError(await broker.token(grantForm(await idp.sign(), { resource: 'https://not-granted.test' }), agent), 400, 'invalid_target')
  })

  it('a scope beyond the ID-JAG’s or the policy’s → invalid_scope; an unspent ID-JAG is then still good', async () => {
    const jag = await idp.sign({ scope: 'read' })
    await expectError(await broker.token(grantForm(jag, { audience: AUDIENCE, scope: 'write' }), agent), 400, 'invalid_scope')
    await expectError(await broker.token(grantForm(await idp.sign(), { audience: AUDIENCE, scope: 'admin' }), agent), 400, 'invalid_scope')
    const res = await broker.token(grantForm(jag, { audience: AUDIENCE, scope: 'read' }), agent)
    expect(res.status).toBe(200)
  })

  it('never outlives the ID-JAG', async () => {
    const jag = await idp.sign({ exp: broker.now() + 60 })
    const res = await broker.token(grantForm(jag, { audience: AUDIENCE, expires_in: '600' }), agent)
    expect(res.status).toBe(200)
    expect(((await res.json()) as Record<string, number>)['expires_in']).toBe(60)
  })

  it('a failed client authentication is invalid_client and records nothing; no assertion is invalid_request', async () => {
    const before = broker.audit.events().length
    await expectError(
      await broker.token(grantForm(await idp.sign(), { audience: AUDIENCE }), basic('xaa-agent', 'wrong-secret-0123456789')),
      401,
      'invalid_client',
    )
    expect(broker.audit.events().length).toBe(before)
    await expectError(await broker.token({ grant_type: GRANT_TYPE_JWT_BEARER, audience: AUDIENCE }, agent), 400, 'invalid_request')
  })

  it('hostile ID-JAGs: junk, claims of any JSON value, any typ: never a 5xx, never a token unless valid, a refusal is never recorded as issued', async () => {
    const claimNames = ['iss', 'sub', 'aud', 'client_id', 'jti', 'exp', 'iat', 'nbf', 'scope', 'resource', 'act', 'may_act', 'constructor', '__proto__']
    const mutated = fc.record({
      claim: fc.constantFrom(...claimNames),
      value: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined)),
      typ: fc.option(fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('oauth-id-jag+jwt', 'JWT', 'at+jwt', 'id-jag+jwt')), { nil: undefined }),
    })
    const junk = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.array(fc.base64String({ maxLength: 80 }), { minLength: 1, maxLength: 5 }).map((parts) => parts.join('.').replace(/[+/=]/g, '_')),
    )
    const allowed = new Set(['invalid_grant', 'invalid_request', 'invalid_scope', 'invalid_target'])
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutated, junk), async (input) => {
        const assertion = typeof input === 'string' ? input : await idp.sign({ [input.claim]: input.value }, input.typ === undefined ? {} : { typ: input.typ })
        const issuedBefore = broker.audit.events().filter((e) => e.type === 'token.issued').length
        const res = await broker.token(grantForm(assertion, { audience: AUDIENCE }), agent)
        const body = (await res.json()) as Record<string, unknown>
        const issuedAfter = broker.audit.events().filter((e) => e.type === 'token.issued').length
        if (res.status === 200) {
          expect(typeof input).not.toBe('string')
          expect(issuedAfter).toBe(issuedBefore + 1)
          return
        }
        expect(res.status).toBe(400)
        expect(allowed.has(body['error'] as string)).toBe(true)
        expect(body['access_token']).toBeUndefined()
        expect(res.headers.get('cache-control')).toBe('no-store')
        expect(issuedAfter).toBe(issuedBefore)
        if (body['error'] === 'invalid_grant') expect(body['error_description']).toBe(ASSERTION_UNACCEPTABLE)
        if (typeof input === 'string' && body['error'] !== 'invalid_request') expect(body['error']).toBe('invalid_grant')
      }),
      { numRuns: 150 },
    )
  })

  it('hostile required claims (absent, or any JSON value of the wrong type) are invalid_grant, under the hostile suite’s rules', async () => {
    const notString = fc.jsonValue({ maxDepth: 2 }).filter((v) => typeof v !== 'string')
    const notNumber = fc.jsonValue({ maxDepth: 2 }).filter((v) => typeof v !== 'number')
    const fault = fc.oneof(
      fc.record({ claim: fc.constantFrom('iss', 'sub', 'client_id', 'jti'), value: fc.oneof(notString, fc.constant(undefined), fc.constant('')) }),
      fc.record({ claim: fc.constantFrom('exp', 'iat'), value: fc.oneof(notNumber, fc.constant(undefined), fc.constantFrom(-1, 1e300)) }),
      fc.record({
        claim: fc.constant('aud'),
        value: fc.oneof(
          notString.filter((v) => !Array.isArray(v) || v.length > 0),
          fc.constant(undefined),
        ),
      }),
    )
    await fc.assert(
      fc.asyncProperty(fault, async ({ claim, value }) => {
        const assertion = await idp.sign({ [claim]: value })
        const c: HostileCase = {
          label: `id-jag ${claim}: ${JSON.stringify(value)}`,
          request: {
            method: 'POST',
            path: '/oauth2/token',
            headers: { 'content-type': 'application/x-www-form-urlencoded', ...agent },
            body: new TextEncoder().encode(encodeForm(grantForm(assertion, { audience: AUDIENCE }))),
          },
          expected: [error(400, 'invalid_grant')],
          secrets: [assertion, SECRET],
        }
        await runCase(broker, c)
      }),
      { numRuns: 200 },
    )
  })

  it('a killed user of the IdP is refused invalid_grant', async () => {
    await broker.revocations.killUser('bob' as never, undefined, idp.iss)
    await expectError(await broker.token(grantForm(await idp.sign({ sub: 'bob' }), { audience: AUDIENCE }), agent), 400, 'invalid_grant')
  })
})

describe('a broker trusting no ID-JAG issuer', () => {
  it('refuses the JWT bearer grant (unsupported_grant_type) and does not advertise it', async () => {
    const broker = await startTestBroker()
    try {
      await expectError(await broker.token({ grant_type: GRANT_TYPE_JWT_BEARER, assertion: 'x.y.z' }), 400, 'unsupported_grant_type')
      const meta = (await (await broker.mandate.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      expect(meta['grant_types_supported']).not.toContain(GRANT_TYPE_JWT_BEARER)
    } finally {
      await broker.close()
    }
  })
})

const reachable = await redisAvailable('id-jag')
describe.skipIf(!reachable)('ID-JAG single use across two brokers on one Redis', () => {
  const prefix = `mandate-test:${randomUUID()}:`
  let redis: Redis
  let a: TestBroker
  let b: TestBroker
  let idp: TestIdp

  beforeAll(async () => {
    redis = new Redis(REDIS_URL, REDIS_CLIENT_OPTIONS)
    redis.on('error', () => {})
    let clock = () => 0
    idp = await startIdp(() => clock())
    a = await startBroker(idp, { storage: { redis_url: REDIS_URL, key_prefix: prefix } })
    b = await startBroker(idp, { storage: { redis_url: REDIS_URL, key_prefix: prefix } })
    clock = () => a.now()
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await idp?.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })

  it('a jti spent at one broker is refused at the other', async () => {
    const jag = await idp.sign()
    expect((await a.token(grantForm(jag, { audience: AUDIENCE }), basic('xaa-agent', SECRET))).status).toBe(200)
    await expectError(await b.token(grantForm(jag, { audience: AUDIENCE }), basic('xaa-agent', SECRET)), 400, 'invalid_grant')
  })
})
