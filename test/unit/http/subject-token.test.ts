/**
 * subject_token verification (docs/ARCHITECTURE.md "The exchange, step by step", step 3; RFC 8725): every refusal is
 * 400 invalid_request with one fixed description, whichever check failed
 * (RFC 8693 §2.2.2), so the answer tells an attacker nothing.
 */
import { createPublicKey } from 'node:crypto'
import { generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AUDIENCE, basic, BROKER, CLIENT_ASSERTION_TYPE_JWT, SECRET } from '../../support/broker.js'
import {
  alterSignature,
  exchange,
  expectCleanLogs,
  expectOAuthError,
  expectToken,
  rawUserToken,
  signJws,
  startTrackedBroker,
  unsignedJws,
  userClaims,
  type TrackedBroker,
} from './helpers.js'

describe('subject_token refusals', () => {
  let b: TrackedBroker
  /** error_description of every refusal, by case. */
  const descriptions = new Map<string, string | undefined>()
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(() => b.close())

  const asSecretAgent = (subject: string, extra: Record<string, string> = {}) =>
    b.token(exchange(b.secret(subject), { scope: 'read', ...extra }), basic('secret-agent', SECRET))
  const asJwtAgent = async (subject: string) =>
    b.token(
      exchange(b.secret(subject), {
        scope: 'read',
        client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
        client_assertion: b.secret(await b.assertion()),
      }),
    )
  const refused = async (name: string, res: Response) => {
    const body = await expectOAuthError(res, 400, 'invalid_request')
    expect(typeof body.error_description).toBe('string')
    descriptions.set(name, body.error_description)
  }

  it('accepts a well-formed user token (control for every case below)', async () => {
    await expectToken(await asSecretAgent(rawUserToken(b)))
  })

  const cases: [string, (b: TrackedBroker) => Promise<string> | string][] = [
    ['alg none, empty signature', (b) => unsignedJws(userClaims(b.now()))],
    ['alg none, junk signature', (b) => unsignedJws(userClaims(b.now()), 'c2lnbmF0dXJl', { alg: 'none', kid: b.users.kid, typ: 'at+jwt' })],
    [
      'HS256 keyed with the issuer public key (PEM)',
      (b) => {
        const pem = createPublicKey({ key: b.users.publicJwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' })
        return signJws({ alg: 'HS256', kid: b.users.kid, typ: 'at+jwt' }, userClaims(b.now()), Buffer.from(pem))
      },
    ],
    [
      'HS256 keyed with the issuer public JWK (JSON)',
      (b) => signJws({ alg: 'HS256', kid: b.users.kid, typ: 'at+jwt' }, userClaims(b.now()), Buffer.from(JSON.stringify(b.users.publicJwk))),
    ],
    ['jwk header (real signature)', (b) => rawUserToken(b, {}, { jwk: b.users.publicJwk })],
    [
      'jwk header naming the attacker key',
      async (b) => {
        const attacker = await generateKeyPair('RS256', { extractable: true })
        const { exportJWK } = await import('jose')
        return signJws({ alg: 'RS256', typ: 'at+jwt', jwk: await exportJWK(attacker.publicKey) }, userClaims(b.now()), attacker.privateKey)
      },
    ],
    ['jku header', (b) => rawUserToken(b, {}, { jku: 'https://evil.test/jwks.json' })],
    ['x5u header', (b) => rawUserToken(b, {}, { x5u: 'https://evil.test/cert.pem' })],
    ['unknown crit', (b) => rawUserToken(b, {}, { crit: ['urn:example:ext'], 'urn:example:ext': true })],
    ['unknown kid', (b) => rawUserToken(b, {}, { kid: 'no-such-kid' })],
    ['missing exp', (b) => rawUserToken(b, { exp: undefined })],
    ['missing iat', (b) => rawUserToken(b, { iat: undefined })],
    ['missing aud', (b) => rawUserToken(b, { aud: undefined })],
    ['missing sub', (b) => rawUserToken(b, { sub: undefined })],
    ['nbf in the future', (b) => rawUserToken(b, { nbf: b.now() + 120 })],
    ['iat in the future', (b) => rawUserToken(b, { iat: b.now() + 120 })],
    ['exp further ahead than the maximum age (24 h + skew)', (b) => rawUserToken(b, { exp: b.now() + 86_400 + 31 })],
    ['exp far in the future', (b) => rawUserToken(b, { exp: 1e12 })],
    ['a negative iat', (b) => rawUserToken(b, { iat: -1 })],
    ['wrong iss', (b) => rawUserToken(b, { iss: 'https://evil.test' })],
    ['wrong aud', (b) => rawUserToken(b, { aud: 'https://other-broker.test' })],
    ['aud array without the broker', (b) => rawUserToken(b, { aud: [AUDIENCE, 'https://other-broker.test'] })],
    ['typ JWT instead of at+jwt', (b) => rawUserToken(b, {}, { typ: 'JWT' })],
    ['no typ', (b) => rawUserToken(b, {}, { typ: undefined })],
    ['an ID token (nonce)', (b) => rawUserToken(b, { nonce: 'n-0S6_WzA2Mj' })],
    ['an ID token (at_hash)', (b) => rawUserToken(b, { at_hash: 'HK6E_P6Dh8Y93mRNtsDB1Q' })],
    ['an ID token (c_hash)', (b) => rawUserToken(b, { c_hash: 'LDktKdoQak3Pk0cnXxCltA' })],
    ['a Cognito ID token (token_use id)', (b) => rawUserToken(b, { token_use: 'id' })],
    ['a Keycloak refresh token (typ Refresh)', (b) => rawUserToken(b, { typ: 'Refresh' })],
    ['a logout token (events, RFC 8417)', (b) => rawUserToken(b, { events: { 'http://schemas.openid.net/event/backchannel-logout': {} }, sid: 's-1' })],
    ['a workload token', (b) => b.workloads.sign({ aud: BROKER })],
    ['a client assertion', (b) => b.assertion()],
    [
      'signed by another key under the issuer kid',
      async (b) => signJws({ alg: 'RS256', kid: b.users.kid, typ: 'at+jwt' }, userClaims(b.now()), (await generateKeyPair('RS256')).privateKey),
    ],
    ['a user token with an altered signature', (b) => alterSignature(rawUserToken(b))],
    [
      'a user token with an altered payload',
      (b) => {
        const [h, , s] = rawUserToken(b).split('.')
        return `${h!}.${Buffer.from(JSON.stringify(userClaims(b.now(), { sub: 'mallory' }))).toString('base64url')}.${s!}`
      },
    ],
    ['not a JWT', () => 'opaque-token-value-0123456789'],
    ['a JWS in JSON serialization', (b) => JSON.stringify({ payload: rawUserToken(b).split('.')[1], signatures: [] })],
    ['may_act naming another agent', (b) => rawUserToken(b, { may_act: { sub: 'jwt-agent' } })],
    ['may_act naming another issuer', (b) => rawUserToken(b, { may_act: { sub: 'secret-agent', iss: 'https://elsewhere.test' } })],
    ['a scope claim that is not a string', (b) => rawUserToken(b, { scope: ['read'] })],
  ]

  it.each(cases)('refuses %s → 400 invalid_request', async (name, make) => {
    await refused(name, await asSecretAgent(await make(b)))
  })

  it.each([
    ['aud as an array containing the broker', (b: TrackedBroker) => rawUserToken(b, { aud: [AUDIENCE, BROKER] })],
    ['typ application/at+jwt (RFC 7515 §4.1.9)', (b: TrackedBroker) => rawUserToken(b, {}, { typ: 'application/at+jwt' })],
    ['nbf within the skew', (b: TrackedBroker) => rawUserToken(b, { nbf: b.now() + 20 })],
    ['exp exactly the maximum age (24 h) plus the skew ahead', (b: TrackedBroker) => rawUserToken(b, { exp: b.now() + 86_400 + 30 })],
    ['fractional NumericDates', (b: TrackedBroker) => rawUserToken(b, { iat: b.now() - 0.5, exp: b.now() + 600.25 })],
  ])('accepts %s (control)', async (_name, make) => {
    await expectToken(await asSecretAgent(make(b)))
  })

  it('accepts may_act naming this agent (control)', async () => {
    await expectToken(await asSecretAgent(rawUserToken(b, { may_act: { sub: 'secret-agent' } })))
  })

  it('refuses a user token expired beyond the skew (clock advanced) → 400 invalid_request', async () => {
    const token = rawUserToken(b, { exp: b.now() + 10 })
    b.advance(10 + 31)
    await refused('expired beyond skew', await asSecretAgent(token))
  })

  it('refuses a user token that was accepted once and has since expired (verified-token cache) → 400 invalid_request', async () => {
    const token = rawUserToken(b, { exp: b.now() + 20 })
    await expectToken(await asSecretAgent(token))
    b.advance(20 + 31)
    await refused('expired after a cached verification', await asSecretAgent(token))
  })

  it('refuses a Mandate token whose signature was altered → 400 invalid_request', async () => {
    const parent = await expectToken(await asSecretAgent(rawUserToken(b)))
    const altered = alterSignature(parent.access_token)
    const res = await b.token(exchange(b.secret(altered), { scope: 'read' }), basic('sub-agent', SECRET))
    await refused('altered Mandate token', res)
    // Control: the unaltered token is accepted by the same agent.
    await expectToken(await b.token(exchange(parent.access_token, { scope: 'read' }), basic('sub-agent', SECRET)))
  })

  it('refuses a Mandate token whose claims were altered → 400 invalid_request', async () => {
    const parent = await expectToken(await asSecretAgent(rawUserToken(b)))
    const [h, p, s] = parent.access_token.split('.') as [string, string, string]
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, scope: 'read write admin' })).toString('base64url')}.${s}`
    await refused('forged Mandate claims', await b.token(exchange(b.secret(forged), { scope: 'read' }), basic('sub-agent', SECRET)))
  })

  it('refuses a user jwt-agent’s groups rule does not admit (no groups) → 400 invalid_request', async () => {
    await refused('groups rule, no groups', await asJwtAgent(rawUserToken(b)))
  })

  it('refuses a user whose groups match none of the rule → 400 invalid_request', async () => {
    await refused('groups rule, other groups', await asJwtAgent(rawUserToken(b, { groups: ['marketing'] })))
  })

  it('accepts a user with groups [engineering] for jwt-agent', async () => {
    await expectToken(await asJwtAgent(rawUserToken(b, { groups: ['engineering'] })))
  })

  it('gives every subject refusal the same error_description', () => {
    expect(descriptions.size).toBe(cases.length + 6)
    const distinct = new Set(descriptions.values())
    expect([...distinct], JSON.stringify(Object.fromEntries(descriptions), null, 1)).toHaveLength(1)
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
  })
})
