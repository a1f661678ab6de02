/**
 * GET /forward-auth: the decision a proxy asks for before it forwards a
 * request to a resource server, on the request's own Bearer token. Every
 * outcome through the real app: 200 with the claims in X-Mandate-* headers;
 * RFC 6750 §3 401s (a bare challenge without a token; `invalid_token` for a
 * malformed, foreign, altered, expired, revoked or other-audience one); 403
 * `insufficient_scope`; 400 for a bad query; X-Forwarded-* ignored; the
 * metric by outcome; nothing a test sent in a log line. The 503 of an
 * unknown revocation state is in test/integration/forward-auth-stale.test.ts.
 */
import { decodeJwt } from 'jose'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentId, Jti } from '../../../src/core/claims.js'
import { bearerToken, headerValue } from '../../../src/http/routes/forward-auth.js'
import { AUDIENCE, basic, OTHER_AUDIENCE, SECRET, startTestBroker } from '../../support/broker.js'
import { points, recorder, valueAt, type Recorder } from '../telemetry/support.js'
import { alterSignature, expectCleanLogs, expectOAuthError, expectToken, rawUserToken, signJws, startTrackedBroker, type TrackedBroker } from './helpers.js'

const AUD = encodeURIComponent(AUDIENCE)
const INVALID_CHALLENGE = /^Bearer realm="mandate", error="invalid_token", error_description="[^"\r\n]+"$/

describe('GET /forward-auth', () => {
  let b: TrackedBroker
  let rec: Recorder
  beforeAll(async () => {
    rec = recorder()
    b = await startTrackedBroker({ telemetry: rec.exporters })
  })
  afterAll(async () => {
    expectCleanLogs(b)
    await b.close()
  })

  const ask = (query: string, authorization?: string, headers: Record<string, string> = {}, method = 'GET', path = '/forward-auth') =>
    Promise.resolve(
      b.mandate.app.request(`${path}${query}`, {
        method,
        headers: { ...(authorization === undefined ? {} : { authorization: b.secret(authorization) }), ...headers },
      }),
    )

  /** A token minted to `agent` for `audience` with `scope`, from `subject` (default: a fresh user token). */
  async function issue(options: { agent?: string; audience?: string; scope?: string; subject?: string } = {}): Promise<string> {
    const subject = options.subject ?? b.secret(await b.userToken())
    const res = await b.token(
      b.exchangeForm(subject, { audience: options.audience ?? AUDIENCE, scope: options.scope ?? 'read' }),
      basic(options.agent ?? 'secret-agent', SECRET),
    )
    return b.secret((await expectToken(res)).access_token)
  }

  async function expectInvalid(res: Response): Promise<void> {
    const text = await res.text()
    expect(res.status, text).toBe(401)
    expect(res.headers.get('www-authenticate')).toMatch(INVALID_CHALLENGE)
    expect(res.headers.get('cache-control')).toMatch(/no-store/)
    expect(JSON.parse(text)).toEqual({ error: 'invalid_token', error_description: expect.any(String) as string })
    expect(res.headers.get('x-mandate-subject')).toBeNull()
  }

  describe('allowed: 200, empty body, the claims in headers', () => {
    it('names the user, the agent, the scopes, the actors and the token, and is never cached', async () => {
      const token = await issue({ scope: 'read write' })
      const res = await ask(`?audience=${AUD}&scope=read`, `Bearer ${token}`)
      expect(res.status).toBe(200)
      expect(await res.text()).toBe('')
      const claims = decodeJwt(token)
      expect(Object.fromEntries([...res.headers].filter(([k]) => k.startsWith('x-mandate-') || k === 'cache-control'))).toEqual({
        'cache-control': 'no-store',
        'x-mandate-subject': 'alice',
        'x-mandate-subject-issuer': 'https://idp.test',
        'x-mandate-agent': 'secret-agent',
        'x-mandate-scope': 'read write',
        'x-mandate-actor-chain': 'secret-agent',
        'x-mandate-token-id': claims.jti,
      })
    })

    it('every scope asked for must be granted; none asked, any live token for the audience passes', async () => {
      const token = await issue({ scope: 'read write' })
      expect((await ask(`?audience=${AUD}&scope=write%20read`, `Bearer ${token}`)).status).toBe(200)
      expect((await ask(`?audience=${AUD}`, `Bearer ${token}`)).status).toBe(200)
      expect((await ask(`?audience=${AUD}&scope=`, `Bearer ${token}`)).status).toBe(200) // empty counts as absent (RFC 6749 §3.1)
    })

    it('a delegated token: the holder is the agent, the chain lists every actor newest first', async () => {
      const parent = await issue({ scope: 'read' })
      const child = await issue({ agent: 'sub-agent', subject: parent })
      const res = await ask(`?audience=${AUD}`, `Bearer ${child}`)
      expect(res.status).toBe(200)
      expect(res.headers.get('x-mandate-agent')).toBe('sub-agent')
      expect(res.headers.get('x-mandate-actor-chain')).toBe('sub-agent,secret-agent')
    })

    it('HEAD is answered as GET; the scheme is case-insensitive', async () => {
      const token = await issue()
      expect((await ask(`?audience=${AUD}`, `Bearer ${token}`, {}, 'HEAD')).status).toBe(200)
      expect((await ask(`?audience=${AUD}`, `bearer ${token}`)).status).toBe(200)
    })

    it('a subject that is no header text reaches the header percent-encoded, never as CR, LF or a control character', async () => {
      const sub = 'jösé 100%\r\nX-Mandate-Agent: evil'
      const token = await issue({ subject: b.secret(await b.userToken({ sub })) })
      const res = await ask(`?audience=${AUD}`, `Bearer ${token}`)
      expect(res.status).toBe(200)
      const value = res.headers.get('x-mandate-subject')!
      expect(value).toMatch(/^[\x21-\x7e]+$/)
      expect(decodeURIComponent(value)).toBe(sub)
      expect(res.headers.get('x-mandate-agent')).toBe('secret-agent')
    })

    it('X-Forwarded-* play no part in the decision', async () => {
      const token = await issue()
      const forwarded = {
        'x-forwarded-for': '10.0.0.1',
        'x-forwarded-host': 'other.test',
        'x-forwarded-uri': `/forward-auth?audience=${encodeURIComponent(OTHER_AUDIENCE)}`,
        'x-forwarded-method': 'DELETE',
        'x-forwarded-proto': 'https',
        'x-original-uri': '/admin',
      }
      expect((await ask(`?audience=${AUD}`, `Bearer ${token}`, forwarded)).status).toBe(200)
      await expectInvalid(
        await ask(`?audience=${encodeURIComponent(OTHER_AUDIENCE)}`, `Bearer ${token}`, { ...forwarded, 'x-forwarded-uri': `/?audience=${AUD}` }),
      )
    })
  })

  describe('refused: 401', () => {
    it('no Bearer credentials: a bare challenge (RFC 6750 §3.1: no error code)', async () => {
      for (const authorization of [undefined, basic('secret-agent', SECRET)['authorization'], 'Digest x', 'Bearerish abc']) {
        const res = await ask(`?audience=${AUD}`, authorization)
        expect(res.status).toBe(401)
        expect(res.headers.get('www-authenticate')).toBe('Bearer realm="mandate"')
        expect(res.headers.get('cache-control')).toMatch(/no-store/)
        expect(await res.json()).toEqual({ error: 'unauthorized', error_description: 'a Bearer access token is required' })
      }
    })

    it('malformed Bearer credentials and strings that are no JWT', async () => {
      const token = await issue()
      for (const authorization of [
        'Bearer',
        'Bearer ',
        `Bearer ${token} extra`,
        `Bearer "${token}"`,
        'Bearer not-a-jwt',
        'Bearer a.b.c',
        `Bearer ${token}\u00e9`,
      ]) {
        await expectInvalid(await ask(`?audience=${AUD}`, authorization))
      }
    })

    it('not ours: a user token from the trusted IdP, a token signed with another key, alg none, an altered signature', async () => {
      const token = await issue()
      const claims = decodeJwt(token)
      const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>
      const foreign = signJws({ alg: 'RS256', kid: header['kid'], typ: 'at+jwt' }, claims, b.users.privateKey)
      const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${token.split('.')[1]!}.`
      for (const t of [b.secret(rawUserToken(b, { aud: AUDIENCE })), b.secret(foreign), b.secret(none), b.secret(alterSignature(token))]) {
        await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${t}`))
      }
    })

    it('expired', async () => {
      const token = await issue()
      const exp = decodeJwt(token).exp!
      expect((await ask(`?audience=${AUD}`, `Bearer ${token}`)).status).toBe(200)
      b.advance(exp - b.now())
      await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${token}`))
      b.advance(-(exp - b.now()) - 1)
    })

    it('for another audience', async () => {
      const token = await issue({ audience: OTHER_AUDIENCE })
      expect((await ask(`?audience=${encodeURIComponent(OTHER_AUDIENCE)}`, `Bearer ${token}`)).status).toBe(200)
      await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${token}`))
      await expectInvalid(await ask(`?audience=${AUD}/`, `Bearer ${token}`)) // compared exactly
    })

    it('revoked: the token, its chain, its agent (and still dead once the kill is lifted)', async () => {
      const one = await issue()
      // Allowed first, so its verification is cached: the revocation is still checked on every request.
      expect((await ask(`?audience=${AUD}`, `Bearer ${one}`)).status).toBe(200)
      await b.revocations.revokeToken(decodeJwt(one).jti as Jti)
      await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${one}`))

      const parent = await issue()
      const child = await issue({ agent: 'sub-agent', subject: parent })
      await b.revocations.revoke({ kind: 'chain', jti: decodeJwt(parent).jti as Jti })
      await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${child}`))

      const token = await issue()
      expect((await ask(`?audience=${AUD}`, `Bearer ${token}`)).status).toBe(200)
      await b.revocations.killAgent('secret-agent' as AgentId)
      await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${token}`))
      await b.revocations.liftAgent('secret-agent' as AgentId)
      await expectInvalid(await ask(`?audience=${AUD}`, `Bearer ${token}`))
      b.advance(1)
      expect((await ask(`?audience=${AUD}`, `Bearer ${await issue()}`)).status).toBe(200)
    })
  })

  it('a missing scope: 403 insufficient_scope naming the scopes needed', async () => {
    const token = await issue({ scope: 'read' })
    const res = await ask(`?audience=${AUD}&scope=read%20write`, `Bearer ${token}`)
    expect(res.status).toBe(403)
    expect(res.headers.get('www-authenticate')).toBe(
      'Bearer realm="mandate", error="insufficient_scope", error_description="the access token lacks a scope this resource needs", scope="read write"',
    )
    expect(res.headers.get('cache-control')).toMatch(/no-store/)
    expect(((await res.json()) as { error: string }).error).toBe('insufficient_scope')
  })

  it('a bad query: 400 invalid_request naming the parameter, whatever the token', async () => {
    const token = await issue()
    const cases: Record<string, string> = {
      '': 'audience is required',
      '?scope=read': 'audience is required',
      '?audience=': 'audience is required',
      [`?audience=${AUD}&audience=${AUD}`]: 'audience must not repeat',
      [`?audience=${AUD}&scope=read&scope=read`]: 'scope must not repeat',
      [`?audience=${AUD}&scope=read%20%20write`]: 'invalid scope',
      [`?audience=${AUD}&scope=%22read%22`]: 'invalid scope',
      '?audience=a%20b': 'invalid audience',
      [`?audience=${'a'.repeat(2049)}`]: 'invalid audience',
      [`?audience=${AUD}%00`]: 'malformed query string',
      [`?audience=${AUD}%FF`]: 'malformed query string',
      '?audience=%E0%A4%A': 'malformed query string',
    }
    for (const [query, description] of Object.entries(cases)) {
      for (const authorization of [`Bearer ${token}`, undefined]) {
        const body = await expectOAuthError(await ask(query, authorization), 400, 'invalid_request')
        expect(body.error_description, query).toBe(description)
      }
    }
  })

  describe('/forward-auth/ext-authz (Envoy: the client method, its path appended after `&path=`)', () => {
    it('answers every method alike', async () => {
      const token = await issue()
      for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
        const res = await ask(`?audience=${AUD}&scope=read&path=/orders/7?x=1`, `Bearer ${token}`, {}, method, '/forward-auth/ext-authz')
        expect(res.status, method).toBe(200)
        expect(res.headers.get('x-mandate-agent')).toBe('secret-agent')
      }
      await expectInvalid(await ask(`?audience=${AUD}&path=/`, 'Bearer nope.nope.nope', {}, 'POST', '/forward-auth/ext-authz'))
    })

    it('a client path cannot choose the audience or the scope: a repeat is 400, the first `?` keeps the rest inside `path`', async () => {
      const other = await issue({ audience: OTHER_AUDIENCE })
      const OTHER = encodeURIComponent(OTHER_AUDIENCE)
      for (const tail of [`/x&audience=${OTHER}`, `/x?y=1&audience=${OTHER}`, '/x?y=1&scope=read', '/x&scope=']) {
        const res = await ask(`?audience=${AUD}&scope=read&path=${tail}`, `Bearer ${other}`, {}, 'DELETE', '/forward-auth/ext-authz')
        await expectOAuthError(res, 400, 'invalid_request')
      }
      // No `&`: the whole client path and query are the value of `path`, and the token is judged for the proxy's audience.
      await expectInvalid(await ask(`?audience=${AUD}&path=/x?audience=${OTHER}`, `Bearer ${other}`, {}, 'GET', '/forward-auth/ext-authz'))
    })
  })

  it('counts every decision by outcome', async () => {
    const before = await rec.metrics()
    const at = (m: typeof before, outcome: string) => (valueAt(m, 'mandate.forward_auth.decisions', { outcome }) as number | undefined) ?? 0
    const token = await issue()
    await ask(`?audience=${AUD}`, `Bearer ${token}`)
    await ask(`?audience=${AUD}`)
    await ask(`?audience=${AUD}`, 'Bearer x')
    await ask(`?audience=${AUD}&scope=write`, `Bearer ${token}`)
    await ask('?scope=read', `Bearer ${token}`)
    await b.revocations.revokeToken(decodeJwt(token).jti as Jti)
    await ask(`?audience=${AUD}`, `Bearer ${token}`)
    const after = await rec.metrics()
    for (const outcome of ['allowed', 'no_token', 'invalid_token', 'insufficient_scope', 'bad_request', 'revoked']) {
      expect(at(after, outcome) - at(before, outcome), outcome).toBe(1)
    }
    expect(new Set(points(after, 'mandate.forward_auth.decisions').map((p) => Object.keys(p.attributes).join()))).toEqual(new Set(['outcome']))
  })
})

describe('forward_auth.enabled: false', () => {
  it('serves no /forward-auth route', async () => {
    const b = await startTestBroker({ forwardAuth: false })
    try {
      for (const path of [`/forward-auth?audience=${AUD}`, `/forward-auth/ext-authz?audience=${AUD}`]) {
        const res = await b.mandate.app.request(path)
        expect(res.status).toBe(404)
        expect(((await res.json()) as { error: string }).error).toBe('not_found')
      }
    } finally {
      await b.close()
    }
  })
})

describe('header values and Bearer credentials', () => {
  it('headerValue: visible ASCII without % passes unchanged; anything else is encoded and decodes back exactly', () => {
    expect(headerValue('alice')).toBe('alice')
    expect(headerValue('auth0|5f1e@example.com')).toBe('auth0|5f1e@example.com')
    expect(headerValue('a b')).toBe('a%20b')
    expect(headerValue('100%')).toBe('100%25')
    expect(headerValue('x\r\ny')).toBe('x%0D%0Ay')
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        const v = headerValue(s)
        expect(v).toMatch(/^[\x21-\x7e]*$/)
        expect(decodeURIComponent(v)).toBe(s)
      }),
    )
  })

  it('bearerToken: RFC 6750 §2.1 b64token syntax, any other scheme is no Bearer credential at all', () => {
    expect(bearerToken(undefined)).toBeUndefined()
    expect(bearerToken('Basic abc')).toBeUndefined()
    expect(bearerToken('Bearer abc.def-_~+/==')).toBe('abc.def-_~+/==')
    expect(bearerToken('BEARER  abc')).toBe('abc')
    for (const bad of ['Bearer', 'Bearer ', 'Bearer a b', 'Bearer a=b', 'Bearer a,b', 'Bearer\tabc']) expect(bearerToken(bad), bad).toBeNull()
  })
})
