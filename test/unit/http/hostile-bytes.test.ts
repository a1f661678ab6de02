/**
 * Text a caller controls that PostgreSQL or the canonical JSON of the audit
 * log could not hold as sent (a NUL, a lone surrogate, bytes that are not
 * UTF-8) is refused at the edge with the role's usual 400/401, wherever it
 * hides: the form (raw or percent-encoded, in any parameter, named or not),
 * the Basic credentials, and any string of a JWT Mandate reads (header or
 * payload, keys or values, however deep). Text that is merely unusual
 * (non-ASCII, U+FFFD sent as such) still passes.
 */
import { KeyObject, sign as cryptoSign } from 'node:crypto'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { hashClientSecret } from '../../../src/tokens/client-auth.js'
import { AUDIENCE, basic, CLIENT_ASSERTION_TYPE_JWT, encodeForm, SECRET, TOKEN_TYPE, USER_ISSUER } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, rawUserToken, startTrackedBroker, userClaims, type TrackedBroker } from './helpers.js'

/** A secret holding U+FFFD itself: a replaced byte must not be taken for it. */
const FFFD_SECRET = 'pass\ufffdword-0123456789'
const FFFD_AGENT = 'fffd-agent'
const fffdPolicy = `agent: ${FFFD_AGENT}
owner: security@example.com
purpose: secret holding U+FFFD
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(FFFD_SECRET).toString('hex')} }
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`

const b64url = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64url')

describe('hostile bytes at the edge', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker({ policies: { [`${FFFD_AGENT}.yaml`]: fffdPolicy } })
  })
  afterAll(() => b.close())

  const user = async () => b.secret(await b.userToken())
  /** POSTs `bytes` as the form body, exactly as given. */
  const postBytes = (bytes: Uint8Array, headers: Record<string, string> = basic('secret-agent', SECRET)) =>
    Promise.resolve(
      b.mandate.app.request('/oauth2/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: bytes }),
    )
  /** A valid exchange form, then `tail` appended as raw bytes. */
  const validFormThen = async (tail: Buffer) => Buffer.concat([Buffer.from(encodeForm(exchange(await user()))), tail])

  describe('the form', () => {
    it('accepts non-ASCII text and U+FFFD sent as such (control)', async () => {
      await expectToken(await postBytes(await validFormThen(Buffer.from('&note=%C3%A9t%C3%A9&other=%EF%BF%BD&raw=\u00e9t\u00e9', 'utf8'))))
    })

    it.each([
      ['a percent-encoded NUL in a parameter Mandate ignores', '&note=a%00b'],
      ['a percent-encoded NUL in a parameter name', '&a%00b=1'],
      ['a percent-encoded byte that is not UTF-8', '&note=%FF'],
      ['a truncated percent-encoded UTF-8 sequence', '&note=%C3'],
      ['an overlong percent-encoded NUL', '&note=%C0%80'],
      ['a percent-encoded UTF-8 surrogate (a lone surrogate once decoded)', '&note=%ED%A0%80'],
    ])('refuses %s → 400 invalid_request', async (_name, tail) => {
      await expectOAuthError(await postBytes(await validFormThen(Buffer.from(tail, 'ascii'))), 400, 'invalid_request')
    })

    it.each([
      ['a raw NUL byte', Buffer.from([0x26, 0x6e, 0x3d, 0x61, 0x00, 0x62])],
      ['a raw byte that is not UTF-8', Buffer.from([0x26, 0x6e, 0x3d, 0xff])],
      ['a raw UTF-8 surrogate', Buffer.from([0x26, 0x6e, 0x3d, 0xed, 0xa0, 0x80])],
    ])('refuses %s in the body → 400 invalid_request', async (_name, tail) => {
      await expectOAuthError(await postBytes(await validFormThen(tail)), 400, 'invalid_request')
    })

    it('refuses a NUL in a parameter Mandate reads → 400 invalid_request', async () => {
      await expectOAuthError(await b.token(exchange(await user(), { scope: 'read\u0000' }), basic('secret-agent', SECRET)), 400, 'invalid_request')
      await expectOAuthError(await b.token(exchange(await user(), { audience: `${AUDIENCE}\u0000` }), basic('secret-agent', SECRET)), 400, 'invalid_request')
    })
  })

  describe('Basic credentials', () => {
    const rawBasic = (bytes: Buffer) => ({ authorization: `Basic ${bytes.toString('base64')}` })

    it('accepts a secret holding U+FFFD, sent as UTF-8 and form-urlencoded (control)', async () => {
      await expectToken(await b.token(exchange(await user()), basic(FFFD_AGENT, b.secret(FFFD_SECRET))))
    })

    it('refuses bytes that are not UTF-8 where that secret has U+FFFD → 400 invalid_request', async () => {
      const [before, after] = FFFD_SECRET.split('\ufffd') as [string, string]
      const header = rawBasic(Buffer.concat([Buffer.from(`${FFFD_AGENT}:${before}`), Buffer.from([0xff]), Buffer.from(after)]))
      b.secret(header.authorization)
      await expectOAuthError(await b.token(exchange(await user()), header), 400, 'invalid_request')
    })

    it.each([
      ['a percent-encoded NUL in the client id', () => rawBasic(Buffer.from(`secret-agent%00:${SECRET}`))],
      ['a raw NUL in the secret', () => rawBasic(Buffer.from(`secret-agent:${SECRET}\u0000`))],
      ['a percent-encoded UTF-8 surrogate in the secret', () => rawBasic(Buffer.from(`secret-agent:${SECRET}%ED%A0%80`))],
      ['a broken percent-escape in the client id', () => rawBasic(Buffer.from(`secret-agent%zz:${SECRET}`))],
    ])('refuses %s → 400 invalid_request', async (_name, header) => {
      const h = header()
      b.secret(h.authorization)
      await expectOAuthError(await b.token(exchange(await user()), h), 400, 'invalid_request')
    })
  })

  describe('JWTs: any string of the header or payload', () => {
    const asSecretAgent = (subject: string) => b.token(exchange(b.secret(subject), { scope: 'read' }), basic('secret-agent', SECRET))

    /** An RS256 user token over exactly these payload bytes (for bytes that are not UTF-8). */
    const userTokenOverBytes = (payload: Buffer) => {
      const input = `${b64url(JSON.stringify({ alg: 'RS256', kid: b.users.kid, typ: 'at+jwt' }))}.${b64url(payload)}`
      const key = KeyObject.from(b.users.privateKey)
      return `${input}.${cryptoSign('sha256', Buffer.from(input), key).toString('base64url')}`
    }

    it('accepts a user token with non-ASCII claims and U+FFFD (control)', async () => {
      await expectToken(await asSecretAgent(rawUserToken(b, { sub: 'al\u00efce\ufffd', note: { deep: ['\u{1d11e}'] } })))
    })

    it.each<[string, Record<string, unknown>, Record<string, unknown>?]>([
      ['a NUL in sub', { sub: 'ali\u0000ce' }],
      ['a lone surrogate in sub', { sub: 'ali\ud800ce' }],
      ['a lone low surrogate in jti', { jti: '\udc00' }],
      ['a NUL in a claim no rule reads', { note: 'a\u0000' }],
      ['a lone surrogate deep inside a claim', { note: { deep: [1, { deeper: ['x', '\ud83d'] }] } }],
      ['a NUL in a claim name', { 'no\u0000te': 1 }],
      ['a lone surrogate in a header parameter', {}, { x: '\ud800' }],
      ['a NUL in a header parameter name', {}, { 'x\u0000': 'y' }],
    ])('refuses a user token with %s → 400 invalid_request', async (_name, claims, header = {}) => {
      await expectOAuthError(await asSecretAgent(rawUserToken(b, claims, header)), 400, 'invalid_request')
    })

    it('refuses a user token whose payload bytes are not UTF-8 → 400 invalid_request', async () => {
      const json = Buffer.from(JSON.stringify(userClaims(b.now(), { note: 'XX' })))
      const at = json.indexOf('XX')
      json[at] = 0xff
      json[at + 1] = 0xfe
      await expectOAuthError(await asSecretAgent(userTokenOverBytes(json)), 400, 'invalid_request')
    })

    it('refuses a client assertion with a NUL in its jti → 401 invalid_client', async () => {
      const assertion = b.secret(await b.assertion({ jti: 'a\u0000b' }))
      const res = await b.token(exchange(await user(), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: assertion }))
      await expectOAuthError(res, 401, 'invalid_client')
    })

    it('refuses a workload actor_token with a lone surrogate in a claim → 401 invalid_client (the actor_token is the client authentication)', async () => {
      const actorToken = b.secret(await b.workloads.sign({ note: '\udbff' }, { typ: 'JWT' }))
      await expectOAuthError(await b.token(exchange(await user(), { actor_token: actorToken, actor_token_type: TOKEN_TYPE.jwt })), 401, 'invalid_client')
    })
  })

  it('logs no credential and a request_id on every request line', () => {
    expectCleanLogs(b)
  })
})
