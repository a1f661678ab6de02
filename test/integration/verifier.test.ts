/**
 * @mandate/verifier (packages/verifier) against a real broker served over
 * HTTP on 127.0.0.1: it discovers the broker from its RFC 8414 metadata,
 * fetches its JWKS, and follows its `/revocations/feed` (server-sent events)
 * as the resource server `rs/api` or `rs/other` of the broker's config.
 *
 * The test broker's issuer is https://mandate.test; the verifier's `fetch`
 * option sends that origin to the loopback server, and nothing else changes.
 *
 * - a valid token verifies; wrong audience, expired, altered, unknown key,
 *   wrong type or algorithm, and missing scope are refused with the RFC 6750
 *   status, code, stable reason and `WWW-Authenticate` challenge;
 * - metadata naming another issuer is not used (RFC 8414 §3.3);
 * - a revocation made through the admin API is enforced within 100 ms, for
 *   every kind (token, chain, agent, user, agent for a user);
 * - a verifier started after revocations gets them from the snapshot; one
 *   whose connection drops reconnects and resumes; one whose broker stopped,
 *   or says its own list is stale, answers 503 once the staleness bound has
 *   passed;
 * - the Hono adapter end to end on a tiny app.
 *
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379), for a broker whose
 * revocations travel through Redis; each test owns a key prefix and deletes
 * its keys (never FLUSHALL). Under CI=true an unreachable Redis fails the
 * file; otherwise those tests are skipped.
 */
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import { decodeJwt } from 'jose'
import { Redis, type RedisOptions } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import type { Jti } from '../../src/core/claims.js'
import type { AppEnv } from '../../src/http/env.js'
import { mountRevocationFeed } from '../../src/http/routes/revocation-feed.js'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import { observeMirror } from '../../src/revocation/service.js'
import { loadSigningKeys, type SigningKey } from '../../src/tokens/keys.js'
import type { ResourceServer } from '../../src/tokens/port.js'
import { createVerifier, VerifierError, type Verifier, type VerifierOptions } from '@mandate/verifier'
import { mandateAuth, type MandateEnv } from '@mandate/verifier/hono'
import {
  ADMIN_KEYS,
  AUDIENCE,
  BROKER,
  OTHER_AUDIENCE,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  T0,
  USER_ISSUER,
  basic,
  bearer,
  startTestBroker,
  type TestBroker,
} from '../support/broker.js'
import { brokerToken, jtiOf } from '../support/tokens.js'

const CLIENT_OPTIONS = { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000 } satisfies RedisOptions

const reachable = await redisAvailable('verifier')
const describeRedis = reachable ? describe : describe.skip

// ---------------------------------------------------------------- fixtures

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

async function dropPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, CLIENT_OPTIONS)
  try {
    await deletePrefix(redis, prefix)
  } finally {
    redis.disconnect()
  }
}

interface Served {
  readonly url: string
  /** Cuts every open connection; the server keeps listening. */
  drop(): void
  stop(): Promise<void>
}

/** Serves `fetch` on 127.0.0.1, on a port of its own. */
async function serveOnLoopback(fetch: (req: Request, env?: unknown) => Response | Promise<Response>): Promise<Served> {
  const server: ServerType = serve({ fetch, port: 0, hostname: '127.0.0.1' })
  await new Promise<void>((resolve) => server.once('listening', resolve))
  const { port } = server.address() as AddressInfo
  let stopped: Promise<void> | undefined
  return {
    url: `http://127.0.0.1:${port}`,
    drop: () => (server as import('node:http').Server).closeAllConnections(),
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as import('node:http').Server).closeAllConnections()
      })),
  }
}

/** Epoch ms for a verifier: the broker's (fixed) test clock plus real elapsed time, so liveness works. */
function anchoredClock(b: TestBroker, offsetSeconds = 0): () => number {
  const started = performance.now()
  const base = b.now()
  return () => (base + offsetSeconds) * 1000 + (performance.now() - started)
}

/** Sends the issuer's origin (and any other URL `routes` names by its path) to a loopback server: the broker as its issuer URL. */
function via(url: string, routes: Record<string, string> = {}): typeof fetch {
  return (input, init) => {
    const target = new URL(input instanceof Request ? input.url : String(input))
    const base = routes[target.pathname] ?? (target.origin === BROKER ? url : undefined)
    return fetch(base === undefined ? target : new URL(`${target.pathname}${target.search}`, base), init)
  }
}

/** The resource server `rs/api` with its Basic secret: the identity a resource server is meant to use. */
const RS_API = { clientId: RESOURCE_SERVERS.api, clientSecret: RS_SECRET } as const

function verifierFor(b: TestBroker, url: string, extra: Partial<VerifierOptions> = {}): Verifier {
  const v = createVerifier({ issuer: BROKER, audience: AUDIENCE, credentials: RS_API, clock: anchoredClock(b), fetch: via(url), ...extra })
  cleanups.push(() => v.close())
  return v
}

async function issue(b: TestBroker, extra: Record<string, string> = {}): Promise<string> {
  const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read', ...extra }), basic('secret-agent', SECRET))
  const body = (await res.json()) as { access_token?: string }
  expect(res.status, JSON.stringify(body)).toBe(200)
  return body.access_token!
}

/** Revokes through the broker's admin API over HTTP; resolves once the broker acknowledged. */
async function revokeOverHttp(url: string, target: Record<string, string | boolean>): Promise<string> {
  const res = await fetch(`${url}/admin/revocations`, {
    method: 'POST',
    headers: { ...bearer(ADMIN_KEYS.responder), 'content-type': 'application/json' },
    body: JSON.stringify({ ...target, reason: 'verifier test' }),
  })
  const body = (await res.json()) as { id: string }
  expect(res.status, JSON.stringify(body)).toBe(201)
  return body.id
}

/** The refusal `verify` rejects with. */
async function refusal(p: Promise<unknown>): Promise<VerifierError> {
  try {
    await p
  } catch (err) {
    if (err instanceof VerifierError) return err
    throw err
  }
  throw new Error('expected a refusal, the token verified')
}

const CHALLENGE = (code: string) =>
  new RegExp(`^Bearer realm="${AUDIENCE.replace(/[.]/g, '\\.')}", error="${code}", error_description="[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]+"`)

async function expectRefused(p: Promise<unknown>, status: number, code: string): Promise<VerifierError> {
  const err = await refusal(p)
  expect({ status: err.status, error: err.error }, err.detail).toEqual({ status, error: code })
  expect(err.wwwAuthenticate).toMatch(CHALLENGE(code))
  return err
}

function alter(token: string, change: { header?: Record<string, unknown>; payload?: Record<string, unknown> }): string {
  const [h, p, s] = token.split('.') as [string, string, string]
  const edit = (part: string, patch: Record<string, unknown> | undefined) =>
    patch === undefined ? part : Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(part, 'base64url').toString()), ...patch })).toString('base64url')
  return `${edit(h, change.header)}.${edit(p, change.payload)}.${s}`
}

/** Verifies while the anchored clock runs; `reason` is what a program branches on. */
async function expectReason(p: Promise<unknown>, status: number, code: string, reason: string): Promise<VerifierError> {
  const err = await expectRefused(p, status, code)
  expect(err.reason, err.detail).toBe(reason)
  return err
}

/** Waits (at most `ms`) until `v` refuses `token` as invalid: how long a kill takes to reach it. */
async function refusedWithin(v: Verifier, token: string, ms: number): Promise<void> {
  await vi.waitFor(async () => expect((await refusal(v.verify(token))).reason).toBe('revoked'), { timeout: ms, interval: 2 })
}

// ---------------------------------------------------------------- a broker on Redis

describeRedis('a verifier beside a broker on Redis', () => {
  const prefix = `mandate-test-verifier:${randomUUID()}:`
  let b: TestBroker
  let broker: Served
  let v: Verifier

  beforeAll(async () => {
    b = await startTestBroker({ storage: { redis_url: REDIS_URL, key_prefix: prefix }, logLevel: 'warn' })
    broker = await serveOnLoopback(b.mandate.app.fetch)
    v = createVerifier({ issuer: BROKER, audience: AUDIENCE, credentials: RS_API, clock: anchoredClock(b), fetch: via(broker.url) })
    await v.ready()
  })
  afterAll(async () => {
    await v?.close()
    await broker?.stop()
    await b?.close()
    await dropPrefix(prefix)
  })

  it('discovers the broker from its metadata, verifies a valid token, and hands back its claims', async () => {
    expect(v.metadata()).toEqual({
      issuer: BROKER,
      jwksUri: `${BROKER}/.well-known/jwks.json`,
      revocationFeedEndpoint: `${BROKER}/revocations/feed`,
      introspectionEndpoint: `${BROKER}/oauth2/introspect`,
      algorithms: ['ES256'],
    })
    const token = await issue(b)
    expect(v.fresh()).toBe(true)
    const claims = await v.verify(token, { scopes: ['read'] })
    expect(claims).toMatchObject({ iss: BROKER, aud: AUDIENCE, sub: 'alice', client_id: 'secret-agent', scope: 'read', act: { sub: 'secret-agent' } })
  })

  it('refuses a token for another audience, altered, of another type, algorithm or key, or not a JWS: 401 invalid_token', async () => {
    const token = await issue(b)
    const other = await issue(b, { audience: OTHER_AUDIENCE })
    const cases: [string, string, string][] = [
      ['another audience', other, 'wrong_audience'],
      ['a widened scope', alter(token, { payload: { scope: 'read write admin' } }), 'bad_signature'],
      ['another subject', alter(token, { payload: { sub: 'mallory' } }), 'bad_signature'],
      ['typ JWT', alter(token, { header: { typ: 'JWT' } }), 'bad_signature'],
      ['alg HS256', alter(token, { header: { alg: 'HS256' } }), 'algorithm_not_allowed'],
      ['alg ES384 (asymmetric, but not what the broker signs with)', alter(token, { header: { alg: 'ES384' } }), 'algorithm_not_allowed'],
      [
        'alg none',
        `${alter(token, { header: { alg: 'none' } })
          .split('.')
          .slice(0, 2)
          .join('.')}.`,
        'algorithm_not_allowed',
      ],
      ['an unknown kid', alter(token, { header: { kid: 'not-a-broker-key' } }), 'unknown_key'],
      ['a key in the header', alter(token, { header: { jwk: { kty: 'EC' } } }), 'bad_signature'],
      ['no kid', alter(token, { header: { kid: undefined } }), 'unknown_key'],
      ['not a JWS', 'not-a-token', 'malformed_token'],
      ['too long', `${token}${'A'.repeat(20_000)}`, 'malformed_token'],
    ]
    for (const [name, bad, reason] of cases) {
      const err = await expectRefused(v.verify(bad), 401, 'invalid_token')
      expect(err.reason, `${name}: ${err.detail ?? ''}`).toBe(reason)
    }
  })

  it('refuses an expired token (beyond the skew), and metadata that names another issuer (RFC 8414 §3.3)', async () => {
    const token = await issue(b)
    const later = verifierFor(b, broker.url, { clock: anchoredClock(b, 300 + 31) })
    await later.ready()
    const expired = await expectReason(later.verify(token), 401, 'invalid_token', 'expired')
    expect(expired.wwwAuthenticate).toContain('error_description="token expired"')
    // Within the skew it still verifies.
    const skewed = verifierFor(b, broker.url, { clock: anchoredClock(b, 300 + 20) })
    await skewed.ready()
    await skewed.verify(token)
    // https://elsewhere.test's metadata comes from the same broker, which says its issuer is https://mandate.test.
    const elsewhere = verifierFor(b, broker.url, {
      issuer: 'https://elsewhere.test',
      fetch: via(broker.url, { '/.well-known/oauth-authorization-server': broker.url }),
      startTimeoutMs: 300,
    })
    await expect(elsewhere.ready()).rejects.toThrow(/issuer is not https:\/\/elsewhere\.test/)
    await expectReason(elsewhere.verify(token), 503, 'temporarily_unavailable', 'keys_unavailable')
  })

  it('refuses a token lacking a required scope: 403 insufficient_scope naming the scopes', async () => {
    const token = await issue(b)
    const err = await expectReason(v.verify(token, { scopes: ['read', 'write'] }), 403, 'insufficient_scope', 'insufficient_scope')
    expect(err.wwwAuthenticate).toMatch(/, scope="read write"$/)
    await expect(v.verify(token, { scopes: ['bad scope'] })).rejects.toBeInstanceOf(TypeError)
  })

  it('enforces a token revocation made through the admin API within 100 ms, and nothing else', async () => {
    const token = await issue(b)
    const bystander = await issue(b)
    await v.verify(token)
    await revokeOverHttp(broker.url, { jti: jtiOf(token) })
    const acknowledged = performance.now()
    await refusedWithin(v, token, 100)
    expect(performance.now() - acknowledged).toBeLessThan(100)
    const err = await expectReason(v.verify(token), 401, 'invalid_token', 'revoked')
    expect(err.wwwAuthenticate).toContain('error_description="token revoked"')
    await v.verify(bystander)
  })

  it('enforces a chain revocation on the token and every token delegated from it', async () => {
    const parent = await issue(b)
    // sub-agent may act on secret-agent's tokens (the test broker's policies): the child's chain names the parent.
    const res = await b.token(b.exchangeForm(parent, { scope: 'read' }), basic('sub-agent', SECRET))
    expect(res.status).toBe(200)
    const child = ((await res.json()) as { access_token: string }).access_token
    const bystander = await issue(b)
    expect((await v.verify(child)).chain).toEqual([jtiOf(parent)])
    await revokeOverHttp(broker.url, { chain: jtiOf(parent) })
    await refusedWithin(v, child, 100)
    await refusedWithin(v, parent, 100)
    await v.verify(bystander)
  })

  it('enforces an agent kill within 100 ms, and keeps pre-kill tokens dead after the lift', async () => {
    const token = await issue(b)
    const id = await revokeOverHttp(broker.url, { agent: 'secret-agent' })
    await refusedWithin(v, token, 100)
    const res = await fetch(`${broker.url}/admin/revocations/${id}`, { method: 'DELETE', headers: bearer(ADMIN_KEYS.responder) })
    expect(res.status).toBe(200)
    b.advance(1)
    // The broker answers the lift once it is durable; its own mirror hears it back through Redis a moment later.
    let fresh: string | undefined
    await vi.waitFor(
      async () => {
        const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
        expect(res.status).toBe(200)
        fresh = ((await res.json()) as { access_token: string }).access_token
      },
      { timeout: 2000, interval: 10 },
    )
    await vi.waitFor(() => v.verify(fresh!), { timeout: 500, interval: 5 })
    await expectReason(v.verify(token), 401, 'invalid_token', 'revoked')
  })

  it('keys a user kill on (issuer, sub): frank at another issuer is another user', async () => {
    // Frank is this test's own user: his kills touch no other test's tokens.
    const res = await b.token(b.exchangeForm(await b.userToken({ sub: 'frank' }), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    const token = ((await res.json()) as { access_token: string }).access_token
    await revokeOverHttp(broker.url, { sub: 'frank', iss: 'https://other-idp.test', force: true })
    const marker = await issue(b)
    await revokeOverHttp(broker.url, { jti: decodeJwt(marker).jti! })
    // Once the later marker revocation holds, the earlier kill has been applied too.
    await refusedWithin(v, marker, 2000)
    expect((await v.verify(token)).sub).toBe('frank')
    await revokeOverHttp(broker.url, { sub: 'frank', iss: USER_ISSUER })
    await refusedWithin(v, token, 100)
  })

  it('enforces an agent kill for one user only: the agent still acts for the others', async () => {
    const res = await b.token(b.exchangeForm(await b.userToken({ sub: 'grace' }), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    const grace = ((await res.json()) as { access_token: string }).access_token
    const alice = await issue(b)
    await revokeOverHttp(broker.url, { agent: 'secret-agent', sub: 'grace', iss: USER_ISSUER })
    await refusedWithin(v, grace, 100)
    await v.verify(alice)
  })

  it('a verifier started after revocations gets them from the snapshot', async () => {
    const revoked = await issue(b)
    const kept = await issue(b)
    await revokeOverHttp(broker.url, { chain: jtiOf(revoked) })
    const late = verifierFor(b, broker.url)
    await late.ready()
    await expectReason(late.verify(revoked), 401, 'invalid_token', 'revoked')
    await late.verify(kept)
  })

  it('the Hono adapter: 401 bare challenge without a token, claims in the context, RFC 6750 refusals', async () => {
    const api = new Hono<MandateEnv>()
    api.use('/tickets/*', mandateAuth(v, { scopes: ['read'] }))
    api.get('/tickets/mine', (c) => c.json({ sub: c.get('mandate').sub, agent: c.get('mandate').client_id }))
    api.use('/admin/*', mandateAuth(v, { scopes: ['admin'] }))
    api.get('/admin/settings', (c) => c.json({ ok: true }))
    expect(() => mandateAuth(v, { scopes: ['two scopes'] })).toThrow(TypeError)
    const served = await serveOnLoopback(api.fetch)
    cleanups.push(() => served.stop())
    const get = (path: string, authorization?: string) => fetch(`${served.url}${path}`, { headers: authorization === undefined ? {} : { authorization } })
    const token = await issue(b)

    const ok = await get('/tickets/mine', `Bearer ${token}`)
    expect(ok.status).toBe(200)
    expect(await ok.json()).toEqual({ sub: 'alice', agent: 'secret-agent' })

    for (const authorization of [undefined, basic('secret-agent', SECRET)['authorization']]) {
      const res = await get('/tickets/mine', authorization)
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).toBe(`Bearer realm="${AUDIENCE}"`)
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(await res.json()).not.toHaveProperty('error')
    }

    const malformed = await get('/tickets/mine', 'Bearer two tokens')
    expect(malformed.status).toBe(400)
    expect(malformed.headers.get('www-authenticate')).toMatch(/^Bearer realm="[^"]+", error="invalid_request"/)

    const invalid = await get('/tickets/mine', `Bearer ${alter(token, { payload: { sub: 'mallory' } })}`)
    expect(invalid.status).toBe(401)
    expect(invalid.headers.get('www-authenticate')).toMatch(CHALLENGE('invalid_token'))
    expect(await invalid.json()).toMatchObject({ error: 'invalid_token' })

    const forbidden = await get('/admin/settings', `Bearer ${token}`)
    expect(forbidden.status).toBe(403)
    expect(forbidden.headers.get('www-authenticate')).toMatch(/error="insufficient_scope".*, scope="admin"$/)
    expect(await forbidden.json()).toMatchObject({ error: 'insufficient_scope' })

    await revokeOverHttp(broker.url, { jti: jtiOf(token) })
    await vi.waitFor(async () => expect((await get('/tickets/mine', `Bearer ${token}`)).status).toBe(401), { timeout: 200, interval: 5 })
  })
})

// ---------------------------------------------------------------- credentials (no Redis needed)

describe('a verifier and its credentials', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'silent' })
  })
  afterAll(() => b.close())

  it('follows the feed as a resource server with private_key_jwt: a fresh assertion per connection (POST), resuming after a drop', async () => {
    const seen: { method: string; status: number; lastEventId: string | null }[] = []
    const served = await serveOnLoopback(async (req, env) => {
      const lastEventId = req.headers.get('last-event-id')
      const res = await b.mandate.app.fetch(req, env)
      if (new URL(req.url).pathname === '/revocations/feed') seen.push({ method: req.method, status: res.status, lastEventId })
      return res
    })
    const opened = () => b.audit.events().filter((e) => e.type === 'admin.feed.opened' && e.by === RESOURCE_SERVERS.other).length
    cleanups.push(() => served.stop())
    const credentials = { clientId: RESOURCE_SERVERS.other, privateKey: b.rsKey.privateKey, alg: 'ES256', kid: b.rsKey.kid } as const
    const v = verifierFor(b, served.url, { audience: OTHER_AUDIENCE, credentials })
    await v.ready()
    const token = await issue(b, { audience: OTHER_AUDIENCE })
    expect(await v.verify(token)).toMatchObject({ aud: OTHER_AUDIENCE })

    // The connection goes; the verifier comes back with a new assertion (the broker spent the first
    // one's jti, so only a fresh one is let in again) and the last event id it saw.
    const before = opened()
    served.drop()
    await vi.waitFor(() => expect(seen.filter((r) => r.status === 200)).toHaveLength(2), { timeout: 3000, interval: 20 })
    expect(seen.map(({ method, status }) => ({ method, status }))).toEqual([
      { method: 'POST', status: 200 },
      { method: 'POST', status: 200 },
    ])
    expect(seen[0]!.lastEventId).toBeNull()
    expect(seen[1]!.lastEventId).toMatch(/^[^.]+\.[0-9]+$/)
    expect(opened()).toBe(before + 1)

    await b.revocations.revokeToken(jtiOf(token) as Jti)
    await vi.waitFor(async () => expect((await refusal(v.verify(token))).reason).toBe('revoked'), { timeout: 1000, interval: 10 })
  })

  it('with credentials the broker refuses (an agent’s, a wrong secret), never becomes ready and answers 503', async () => {
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    const token = await issue(b)
    for (const credentials of [
      { clientId: 'secret-agent', clientSecret: SECRET },
      { clientId: RESOURCE_SERVERS.api, clientSecret: 'not-the-secret-at-all' },
    ]) {
      const v = verifierFor(b, served.url, { credentials, startTimeoutMs: 400 })
      await expect(v.ready()).rejects.toThrow(/feed answered 401/)
      await expectReason(v.verify(token), 503, 'temporarily_unavailable', 'revocation_state_unknown')
    }
  })

  it('answers 503 while the broker cannot be reached at all, and starts once it can', async () => {
    const port = (await serveOnLoopback(() => new Response(null, { status: 404 }))).url
    let target = port
    const v = verifierFor(b, port, { fetch: (input, init) => via(target)(input, init), startTimeoutMs: 300 })
    await expect(v.ready()).rejects.toThrow(/not ready/)
    const token = await issue(b)
    await expectReason(v.verify(token), 503, 'temporarily_unavailable', 'keys_unavailable')
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    target = served.url
    await vi.waitFor(() => v.verify(token), { timeout: 8000, interval: 50 })
  })
})

// ---------------------------------------------------------------- feed liveness (no Redis needed)

describe('a verifier whose broker goes away or goes stale', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'silent' })
  })
  afterAll(() => b.close())

  it('answers 503 once the staleness bound has passed after its broker stopped, not before', async () => {
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    const staleAfterMs = 500
    const v = verifierFor(b, served.url, { staleAfterMs })
    await v.ready()
    const token = await issue(b)
    await v.verify(token)

    await served.stop()
    const stopped = performance.now()
    // The last known state still serves within the bound.
    await v.verify(token)
    await vi.waitFor(async () => expect((await refusal(v.verify(token))).status).toBe(503), { timeout: staleAfterMs + 400, interval: 10 })
    const elapsed = performance.now() - stopped
    expect(elapsed).toBeLessThanOrEqual(staleAfterMs + 400)
    const err = await expectReason(v.verify(token), 503, 'temporarily_unavailable', 'revocation_state_unknown')
    expect(err.retryAfter).toBe(1)
    expect(err.detail).toMatch(/stale/)
    expect(v.fresh()).toBe(false)
  })

  it('ends its streams when the broker shuts down: the server closes without cutting connections', async () => {
    const served = serve({ fetch: b.mandate.app.fetch, port: 0, hostname: '127.0.0.1' })
    await new Promise<void>((resolve) => served.once('listening', resolve))
    const url = `http://127.0.0.1:${(served.address() as AddressInfo).port}`
    const v = verifierFor(b, url)
    await v.ready()
    const res = await fetch(`${url}/revocations/feed`, { headers: bearer(ADMIN_KEYS.auditor) })
    expect(res.status).toBe(200)
    const body = res.body!.getReader()
    await body.read()
    const closed = new Promise<void>((resolve) => served.close(() => resolve()))
    // What `mandate serve` does on SIGTERM (src/cli/serve.ts).
    b.mandate.revocations.endSubscriptions()
    ;(served as import('node:http').Server).closeIdleConnections()
    let done = false
    while (!done) done = (await body.read()).done
    await closed
    await vi.waitFor(() => expect(v.fresh()).toBe(false), { timeout: 3000, interval: 20 })
  })

  it("answers 503 when the broker's heartbeats say its own revocation list is stale", async () => {
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    // A feed whose freshness the test sets; the metadata and keys come from the real broker.
    const mirror = observeMirror(createRevocationMirror(() => T0))
    let brokerFresh = true
    const feedApp = new Hono<AppEnv>()
    mountRevocationFeed(feedApp, {
      keys: [],
      resourceServers: () => Promise.resolve({ kind: 'resource_server', server: { id: RESOURCE_SERVERS.api } as ResourceServer, assertion: undefined }),
      revocations: { records: () => mirror.records(), subscribe: (l, o) => mirror.subscribe(l, o), fresh: () => brokerFresh, lag: () => 0 },
    })
    const feed = await serveOnLoopback(feedApp.fetch)
    cleanups.push(async () => {
      mirror.end()
      await feed.stop()
    })
    const v = verifierFor(b, served.url, { fetch: via(served.url, { '/revocations/feed': feed.url }) })
    await v.ready()
    const token = await issue(b)
    await v.verify(token)
    brokerFresh = false
    await vi.waitFor(async () => expect((await refusal(v.verify(token))).status).toBe(503), { timeout: 1000, interval: 10 })
    expect((await refusal(v.verify(token))).detail).toMatch(/broker reports/)
    brokerFresh = true
    await vi.waitFor(() => v.verify(token), { timeout: 1000, interval: 10 })
  })

  it('refuses bad options at construction', () => {
    const base: VerifierOptions = { issuer: BROKER, audience: AUDIENCE, credentials: RS_API }
    const bad: Partial<VerifierOptions>[] = [
      { audience: '' },
      { issuer: 'http://mandate.example.com' },
      { issuer: 'https://mandate.example.com/?tenant=1' },
      { clockSkewSeconds: 61 },
      { staleAfterMs: 100 },
      { resource: 'http://api.example.com' },
      { jwks: { timeoutMs: -1 } },
      { credentials: { adminKey: 'k' } as unknown as VerifierOptions['credentials'] },
      { credentials: { clientId: 'rs/api', clientSecret: '' } },
      { credentials: { clientId: 'rs api', clientSecret: 's' } },
      { credentials: { clientId: 'rs/api', privateKey: b.rsKey.privateKey, alg: 'HS256' as 'ES256' } },
      { credentials: undefined as unknown as VerifierOptions['credentials'] },
    ]
    for (const options of bad) expect(() => createVerifier({ ...base, ...options }), JSON.stringify(options)).toThrow(TypeError)
  })
})

// ---------------------------------------------------------------- claims, signed with the broker's own key (no Redis needed)

describe('the claims a Mandate token must carry', () => {
  let b: TestBroker
  let served: Served
  let v: Verifier
  let key: SigningKey
  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'silent' })
    served = await serveOnLoopback(b.mandate.app.fetch)
    key = (await loadSigningKeys(join(b.mandate.config.data_dir, 'signing-keys.json'), false)).current
    v = createVerifier({
      issuer: BROKER,
      audience: AUDIENCE,
      credentials: RS_API,
      clock: anchoredClock(b),
      fetch: via(served.url),
      resource: 'https://api.test/tickets',
    })
    await v.ready()
  })
  afterAll(async () => {
    await v?.close()
    await served?.stop()
    await b?.close()
  })

  /** A token as the broker would mint it, with `claims` merged in (undefined drops one), signed with the broker's key. */
  function mint(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, raw?: (json: string) => string): Promise<string> {
    return brokerToken({ issuer: BROKER, userIssuer: USER_ISSUER, audience: AUDIENCE }, key, b.now(), claims, header, raw)
  }

  it('verifies what the broker would mint, `application/at+jwt` and a leftover may_act included', async () => {
    await v.verify(await mint())
    await v.verify(await mint({ may_act: { sub: 'secret-agent' } }, { typ: 'application/at+jwt' }))
    await v.verify(await mint({ chain: [randomUUID()] }))
  })

  const deep = (n: number): Record<string, unknown> => (n === 0 ? { sub: 'a' } : { sub: 'a', act: deep(n - 1) })
  it.each([
    ['typ JWT', {}, { typ: 'JWT' }, 'wrong_type'],
    ['no typ', {}, { typ: undefined }, 'wrong_type'],
    ['another issuer', { iss: 'https://elsewhere.test' }, {}, 'wrong_issuer'],
    ['another audience', { aud: OTHER_AUDIENCE }, {}, 'wrong_audience'],
    ['an audience list (a Mandate token has one)', { aud: [AUDIENCE, OTHER_AUDIENCE] }, {}, 'bad_claims'],
    ['no jti', { jti: undefined }, {}, 'bad_claims'],
    ['a numeric jti', { jti: 7 }, {}, 'bad_claims'],
    ['no sub_id', { sub_id: undefined }, {}, 'bad_claims'],
    ['a sub_id of another user', { sub_id: { format: 'iss_sub', iss: USER_ISSUER, sub: 'mallory' } }, {}, 'bad_claims'],
    ['no act', { act: undefined }, {}, 'bad_claims'],
    ['an act 17 deep', { act: deep(16) }, {}, 'bad_claims'],
    ['a chain of numbers', { chain: [1] }, {}, 'bad_claims'],
    ['no scope', { scope: undefined }, {}, 'bad_claims'],
    ['no client_id', { client_id: undefined }, {}, 'bad_claims'],
    ['a string iat', { iat: 'now' }, {}, 'bad_claims'],
    ['an iat past the skew', { iat: T0 + 10_000 }, {}, 'issued_in_future'],
    ['an nbf past the skew', { nbf: T0 + 10_000 }, {}, 'not_yet_valid'],
  ] as const)('refuses %s', async (_name, claims, header, reason) => {
    await expectReason(v.verify(await mint(claims, header)), 401, 'invalid_token', reason)
  })

  it('refuses an exp of 1e400 (Infinity once parsed), which a plain comparison would let live forever', async () => {
    const token = await mint({ exp: 1 }, {}, (json) => json.replace('"exp":1', '"exp":1e400'))
    await expectReason(v.verify(token), 401, 'invalid_token', 'bad_claims')
  })

  it('names its RFC 9728 metadata in every challenge, and builds that document', async () => {
    const metadataUrl = 'https://api.test/.well-known/oauth-protected-resource/tickets'
    const bare = await v.authenticate(new Request('https://api.test/tickets/1'))
    expect(bare).toMatchObject({ ok: false, status: 401, reason: 'missing_token' })
    expect(!bare.ok && bare.headers['WWW-Authenticate']).toBe(`Bearer realm="${AUDIENCE}", resource_metadata="${metadataUrl}"`)
    const err = await expectReason(v.verify(await mint({ aud: OTHER_AUDIENCE })), 401, 'invalid_token', 'wrong_audience')
    expect(err.wwwAuthenticate).toMatch(new RegExp(`, resource_metadata="${metadataUrl.replace(/[.]/g, '\\.')}"$`))
    expect(v.protectedResourceMetadata({ scopesSupported: ['read'] })).toStrictEqual({
      path: '/.well-known/oauth-protected-resource/tickets',
      url: metadataUrl,
      document: { resource: 'https://api.test/tickets', authorization_servers: [BROKER], scopes_supported: ['read'], bearer_methods_supported: ['header'] },
    })
  })

  it('authenticate: a token in the query or a form body is no token; two Authorization headers are malformed', async () => {
    const token = await mint()
    const query = await v.authenticate(new Request(`https://api.test/?access_token=${token}`))
    expect(query).toMatchObject({ ok: false, status: 401, reason: 'missing_token' })
    const headers = new Headers()
    headers.append('authorization', `Bearer ${token}`)
    headers.append('authorization', `Bearer ${token}`)
    const twice = await v.authenticate(new Request('https://api.test/', { headers }))
    expect(twice).toMatchObject({ ok: false, status: 400, reason: 'malformed_header' })
    expect(!twice.ok && JSON.parse(twice.body)).toStrictEqual({ error: 'invalid_request', error_description: 'malformed Authorization header' })
    const ok = await v.authenticate(new Request('https://api.test/', { headers: { authorization: `bearer ${token}` } }), { scopes: ['read'] })
    expect(ok).toMatchObject({ ok: true, token: { sub: 'alice' } })
  })
})
