/**
 * "Bad input gets a clear OAuth error and changes nothing; the process stays
 * up" (DESIGN.md): whatever arrives at /oauth2/token, the answer is never a
 * 5xx and is either a token or an RFC 6749 §5.2 body with a string `error`.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AUDIENCE, basic, BROKER, CLIENT_ASSERTION_TYPE_JWT, encodeForm, GRANT_TYPE_TOKEN_EXCHANGE, SECRET, TOKEN_TYPE, USER_ISSUER } from '../../support/broker.js'
import { signJws, startTrackedBroker, userClaims, type TrackedBroker } from './helpers.js'

const PARAMS = [
  'grant_type',
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'requested_token_type',
  'audience',
  'resource',
  'scope',
  'expires_in',
  'client_id',
  'client_secret',
  'client_assertion',
  'client_assertion_type',
]
const ALLOWED_STATUS = new Set([200, 400, 401, 413])

describe('no 5xx from /oauth2/token, whatever the input', () => {
  let b: TrackedBroker
  let pool: { users: string[]; assertions: string[]; workloads: string[] }
  beforeAll(async () => {
    b = await startTrackedBroker()
    pool = {
      users: [await b.userToken(), await b.userToken({ groups: ['engineering'] }), await b.userToken({ scope: 'read' })],
      assertions: [await b.assertion(), await b.assertion(), await b.assertion({ exp: b.now() + 3600 })],
      workloads: [await b.workloads.sign({}, { typ: 'JWT' })],
    }
  })
  afterAll(() => b.close())

  /** The answer is a token or a well-formed OAuth error, and never a 5xx. */
  const checkAnswer = async (res: Response) => {
    const text = await res.text()
    expect(res.status, text.slice(0, 300)).toBeLessThan(500)
    expect(ALLOWED_STATUS.has(res.status), `status ${res.status}: ${text.slice(0, 300)}`).toBe(true)
    const body = JSON.parse(text) as Record<string, unknown>
    if (res.status === 200) expect(typeof body['access_token']).toBe('string')
    else {
      expect(typeof body['error'], text.slice(0, 300)).toBe('string')
      expect(body).not.toHaveProperty('access_token')
      expect(res.headers.get('cache-control') ?? '').toMatch(/no-store/)
    }
  }

  const junk = fc.oneof(
    fc.string(),
    fc.string({ unit: 'binary' }),
    fc.string({ unit: fc.constantFrom('%', '+', '&', '=', ' ', ':', '.', '#', 'a', '0', '\u0000', 'é') }),
    fc.webUrl({ withFragments: true, withQueryParameters: true }),
    fc.base64String(),
  )
  const valueFor = (name: string) =>
    fc.oneof(
      { weight: 2, arbitrary: junk },
      {
        weight: 3,
        arbitrary: fc.constantFrom(
          ...({
            grant_type: [GRANT_TYPE_TOKEN_EXCHANGE, 'client_credentials'],
            subject_token_type: [TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt, TOKEN_TYPE.idToken],
            actor_token_type: [TOKEN_TYPE.jwt, TOKEN_TYPE.accessToken],
            requested_token_type: [TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt, 'urn:x'],
            audience: [AUDIENCE, 'https://other.test', BROKER],
            resource: [AUDIENCE, `${AUDIENCE}#x`, '/relative'],
            scope: ['read', 'read write', 'admin', '', 'read  write', '"'],
            expires_in: ['1', '60', '0', '-1', '1e3', '99999999'],
            client_id: ['secret-agent', 'jwt-agent', 'workload-agent', 'nobody'],
            client_secret: [SECRET],
            client_assertion_type: [CLIENT_ASSERTION_TYPE_JWT, 'x'],
          } as Record<string, string[]>)[name] ?? ['x'],
        ),
      },
    )
  const tokenFor = (name: string) =>
    name === 'subject_token'
      ? fc.integer({ min: 0, max: 2 }).map((i) => pool.users[i]!)
      : name === 'client_assertion'
        ? fc.integer({ min: 0, max: 2 }).map((i) => pool.assertions[i]!)
        : name === 'actor_token'
          ? fc.constant(null).map(() => pool.workloads[0]!)
          : valueFor(name)

  /** Mostly the valid value (or absence), sometimes missing, sometimes one or two fuzzed values. */
  const slot = (name: string, valid: (() => string) | undefined) =>
    valid === undefined
      ? fc.oneof(
          { weight: 12, arbitrary: fc.constant([] as string[]) },
          { weight: 1, arbitrary: fc.array(fc.oneof(tokenFor(name), valueFor(name)), { minLength: 1, maxLength: 2 }) },
        )
      : fc.oneof(
          { weight: 8, arbitrary: fc.constant(null).map(() => [valid()]) },
          { weight: 1, arbitrary: fc.constant([] as string[]) },
          { weight: 2, arbitrary: fc.array(fc.oneof(tokenFor(name), valueFor(name)), { minLength: 1, maxLength: 2 }) },
        )
  const VALID: Record<string, () => string> = {
    grant_type: () => GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: () => pool.users[1]!,
    subject_token_type: () => TOKEN_TYPE.accessToken,
    audience: () => AUDIENCE,
  }
  const anyField = fc.tuple(fc.oneof(fc.string(), fc.constantFrom(...PARAMS)), fc.array(junk, { minLength: 1, maxLength: 2 }))
  const forms = fc
    .tuple(fc.tuple(...PARAMS.map((name) => slot(name, VALID[name]))), fc.array(anyField, { maxLength: 2 }))
    .map(([slots, other]) => {
      // Null prototype: generated names such as "__proto__" or "toString" are plain keys here.
      const out: Record<string, string[]> = Object.create(null) as Record<string, string[]>
      PARAMS.forEach((name, i) => {
        if (slots[i]!.length > 0) out[name] = slots[i]!
      })
      for (const [k, v] of other) out[k] = [...(out[k] ?? []), ...v]
      return out
    })
  const authorization = fc.oneof(
    fc.constant(undefined),
    { weight: 4, arbitrary: fc.constantFrom(basic('secret-agent', SECRET).authorization!, basic('jwt-agent', SECRET).authorization!) },
    fc.tuple(fc.string(), fc.string()).map(([id, secret]) => basic(id, secret).authorization!),
    fc.tuple(fc.string(), fc.string()).map(([id, secret]) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`),
    fc.string().map((s) => `Basic ${s}`),
    fc.string({ unit: fc.constantFrom('a', ' ', '\t', 'B', '=') }),
  )
  const contentType = fc.constantFrom(
    'application/x-www-form-urlencoded',
    'application/x-www-form-urlencoded; charset=UTF-8',
    'APPLICATION/X-WWW-FORM-URLENCODED',
    'application/json',
    'multipart/form-data; boundary=x',
    'text/plain',
  )

  it('answers arbitrary forms with an OAuth error or a token', async () => {
    await fc.assert(
      fc.asyncProperty(forms, authorization, async (fields, auth) => {
        await checkAnswer(await b.token(fields, auth === undefined ? {} : { authorization: auth }))
      }),
      { numRuns: 400 },
    )
  })

  it('answers arbitrary raw bodies and content types with an OAuth error', async () => {
    const body = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.string({ unit: fc.constantFrom('%', '&', '=', '+', 'a', 'grant_type', 'subject_token', '0', 'F'), maxLength: 60 }),
      forms.map(encodeForm),
    )
    await fc.assert(
      fc.asyncProperty(body, contentType, authorization, async (text, type, auth) => {
        const headers: Record<string, string> = { 'content-type': type, ...(auth === undefined ? {} : { authorization: auth }) }
        await checkAnswer(await b.mandate.app.request('/oauth2/token', { method: 'POST', headers, body: text }))
      }),
      { numRuns: 300 },
    )
  })

  it('answers signed user tokens with arbitrary claims with an OAuth error or a token', async () => {
    const claimName = fc.oneof(
      fc.constantFrom('sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'scope', 'scp', 'may_act', 'groups', 'nonce', 'act', 'client_id', 'cnf', '__proto__'),
      fc.string({ maxLength: 8 }),
    )
    const claimValue = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.integer().map((n) => b.now() + n),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.constantFrom(BROKER, [BROKER, AUDIENCE], 'read write', { sub: 'secret-agent' }, ['engineering']),
    )
    const claims = fc.dictionary(claimName, claimValue, { maxKeys: 4 })
    const header = fc.record({ typ: fc.constantFrom('at+jwt', 'application/at+jwt', 'AT+JWT', 'JWT'), kid: fc.constantFrom(undefined, 'x') }, { requiredKeys: [] })
    const agent = fc.constantFrom('secret-agent', 'jwt-agent')
    const extra = fc.record({ scope: fc.constantFrom(undefined, 'read', 'write', 'read write admin'), audience: fc.constantFrom(AUDIENCE, 'https://other.test') })
    await fc.assert(
      fc.asyncProperty(claims, header, agent, extra, async (over, h, who, x) => {
        const payload = { ...userClaims(b.now()), ...over, iss: USER_ISSUER }
        const subject = signJws({ alg: 'RS256', kid: h.kid ?? b.users.kid, ...(h.typ === undefined ? {} : { typ: h.typ }) }, payload, b.users.privateKey)
        const fields: Record<string, string> = {
          grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
          subject_token: subject,
          subject_token_type: TOKEN_TYPE.accessToken,
          audience: x.audience,
          ...(x.scope === undefined ? {} : { scope: x.scope }),
        }
        const res =
          who === 'jwt-agent'
            ? await b.token({ ...fields, client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: await b.assertion() })
            : await b.token(fields, basic('secret-agent', SECRET))
        await checkAnswer(res)
      }),
      { numRuns: 300 },
    )
  })

  it('still issues a token after the fuzzing (the process stays up)', async () => {
    const res = await b.token(
      { grant_type: GRANT_TYPE_TOKEN_EXCHANGE, subject_token: await b.userToken(), subject_token_type: TOKEN_TYPE.accessToken, audience: AUDIENCE },
      basic('secret-agent', SECRET),
    )
    expect(res.status).toBe(200)
  })
})
