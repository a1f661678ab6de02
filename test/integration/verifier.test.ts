/**
 * The resource-server verifier (src/verifier) against a real
 * broker served over HTTP on 127.0.0.1: JWKS fetched from it, revocations
 * followed either from its Redis (read-only) or from its
 * `GET /revocations/feed` (server-sent events).
 *
 * - a valid token verifies; wrong audience or issuer, expired, altered,
 *   unknown key and missing scope are refused with the RFC 6750 status, code
 *   and `WWW-Authenticate` challenge;
 * - a revocation made through the admin API is enforced by both kinds of
 *   verifier within 100 ms (docs/ARCHITECTURE.md "The kill switch");
 * - the Redis follower writes nothing: the brokers' keys are byte-for-byte
 *   the same after it ran, and an empty prefix stays empty (it is stale, 503,
 *   until a broker seeds it);
 * - a feed verifier started after revocations gets them in the snapshot; one
 *   whose broker stopped, or whose broker says its own list is stale, answers
 *   503 once the staleness bound has passed;
 * - the Hono middleware end to end on a tiny app.
 *
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379); each test owns a key
 * prefix and deletes its keys (never FLUSHALL). Under CI=true an unreachable
 * Redis fails the file; otherwise the Redis tests are skipped.
 */
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'
import { createHash, randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import { decodeJwt, type CryptoKey } from 'jose'
import { Redis, type RedisOptions } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import type { Jti } from '../../src/core/claims.js'
import type { AppEnv } from '../../src/http/env.js'
import { mountRevocationFeed } from '../../src/http/routes/revocation-feed.js'
import { createRevocationMirror } from '../../src/revocation/mirror.js'
import { observeMirror } from '../../src/revocation/service.js'
import { createVerifier, mandateAuth, VerifierError, type MandateEnv, type Verifier, type VerifierOptions } from '../../src/verifier/index.js'
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
import { jtiOf } from '../support/tokens.js'

const CLIENT_OPTIONS = { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000 } satisfies RedisOptions

const reachable = await redisAvailable('verifier')
const describeRedis = reachable ? describe : describe.skip

// ---------------------------------------------------------------- fixtures

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

/** Every key under `prefix` with its whole content, to prove nobody wrote. */
async function dump(redis: Redis, prefix: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    for (const key of keys) {
      const type = await redis.type(key)
      out[key] =
        type === 'string'
          ? await redis.get(key)
          : type === 'hash'
            ? await redis.hgetall(key)
            : type === 'stream'
              ? await redis.xrange(key, '-', '+')
              : type === 'zset'
                ? await redis.zrange(key, '0', '-1', 'WITHSCORES')
                : type
    }
    cursor = next
  } while (cursor !== '0')
  return out
}

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

function verifierFor(b: TestBroker, url: string, revocations: VerifierOptions['revocations'], extra: Partial<VerifierOptions> = {}): Verifier {
  const v = createVerifier({
    issuer: BROKER,
    audience: AUDIENCE,
    jwksUri: `${url}/.well-known/jwks.json`,
    revocations,
    clock: anchoredClock(b),
    ...extra,
  })
  cleanups.push(() => v.close())
  return v
}

/** The feed, followed as the resource server `rs/api` (Basic): the identity a resource server is meant to use. */
const feedOf = (url: string, staleAfterMs?: number) => ({
  feed: {
    url: `${url}/revocations/feed`,
    client: { id: RESOURCE_SERVERS.api, secret: RS_SECRET },
    ...(staleAfterMs === undefined ? {} : { staleAfterMs }),
  },
})

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

// ---------------------------------------------------------------- a broker on Redis

describeRedis('a verifier beside a broker on Redis', () => {
  const prefix = `mandate-test-verifier:${randomUUID()}:`
  let b: TestBroker
  let broker: Served
  let viaRedis: Verifier
  let viaFeed: Verifier
  const persistent: Verifier[] = []

  beforeAll(async () => {
    b = await startTestBroker({ storage: { redis_url: REDIS_URL, key_prefix: prefix }, logLevel: 'warn' })
    broker = await serveOnLoopback(b.mandate.app.fetch)
    const make = (revocations: VerifierOptions['revocations']) => {
      const v = createVerifier({ issuer: BROKER, audience: AUDIENCE, jwksUri: `${broker.url}/.well-known/jwks.json`, revocations, clock: anchoredClock(b) })
      persistent.push(v)
      return v
    }
    viaRedis = make({ redis: { url: REDIS_URL, prefix } })
    viaFeed = make(feedOf(broker.url))
    await Promise.all([viaRedis.ready(), viaFeed.ready()])
  })
  afterAll(async () => {
    for (const v of persistent) await v.close()
    await broker?.stop()
    await b?.close()
    await dropPrefix(prefix)
  })

  const sources = () =>
    [
      ['redis follower', viaRedis],
      ['feed client', viaFeed],
    ] as const

  it('verifies a valid token with either source, and hands back its claims', async () => {
    const token = await issue(b)
    for (const [name, v] of sources()) {
      expect(v.fresh(), name).toBe(true)
      const claims = await v.verify(token, { scopes: ['read'] })
      expect(claims, name).toMatchObject({ iss: BROKER, aud: AUDIENCE, sub: 'alice', client_id: 'secret-agent', scope: 'read', act: { sub: 'secret-agent' } })
    }
  })

  it('refuses a token for another audience, altered, of another type or key, or not a JWS: 401 invalid_token', async () => {
    const token = await issue(b)
    const other = await issue(b, { audience: OTHER_AUDIENCE })
    const cases: [string, string, string][] = [
      ['another audience', other, 'wrong_aud'],
      ['a widened scope', alter(token, { payload: { scope: 'read write admin' } }), 'bad_signature'],
      ['another subject', alter(token, { payload: { sub: 'mallory' } }), 'bad_signature'],
      ['typ JWT', alter(token, { header: { typ: 'JWT' } }), 'typ_not_allowed'],
      ['alg HS256', alter(token, { header: { alg: 'HS256' } }), 'alg_not_allowed'],
      [
        'alg none',
        `${alter(token, { header: { alg: 'none' } })
          .split('.')
          .slice(0, 2)
          .join('.')}.`,
        'bad_encoding',
      ],
      ['an unknown kid', alter(token, { header: { kid: 'not-a-broker-key' } }), 'unknown_kid'],
      ['a key in the header', alter(token, { header: { jwk: { kty: 'EC' } } }), 'header_jwk_refused'],
      ['no kid', alter(token, { header: { kid: undefined } }), 'missing_kid'],
      ['not a JWS', 'not-a-token', 'not_compact_jws'],
    ]
    for (const [name, bad, detail] of cases) {
      const err = await expectRefused(viaFeed.verify(bad), 401, 'invalid_token')
      expect(err.detail, name).toBe(detail)
    }
  })

  it('refuses an expired token (beyond the skew) and a token of another issuer', async () => {
    const token = await issue(b)
    const later = verifierFor(b, broker.url, feedOf(broker.url), { clock: anchoredClock(b, 300 + 31) })
    const elsewhere = verifierFor(b, broker.url, feedOf(broker.url), { issuer: 'https://elsewhere.test' })
    await Promise.all([later.ready(), elsewhere.ready()])
    const expired = await expectRefused(later.verify(token), 401, 'invalid_token')
    expect(expired.detail).toBe('expired')
    expect(expired.wwwAuthenticate).toContain('error_description="token expired"')
    // Within the skew it still verifies.
    const skewed = verifierFor(b, broker.url, feedOf(broker.url), { clock: anchoredClock(b, 300 + 20) })
    await skewed.ready()
    await skewed.verify(token)
    expect((await expectRefused(elsewhere.verify(token), 401, 'invalid_token')).detail).toBe('wrong_iss')
  })

  it('refuses a token lacking a required scope: 403 insufficient_scope naming the scopes', async () => {
    const token = await issue(b)
    const err = await expectRefused(viaRedis.verify(token, { scopes: ['read', 'write'] }), 403, 'insufficient_scope')
    expect(err.wwwAuthenticate).toMatch(/, scope="read write"$/)
    await expect(viaRedis.verify(token, { scopes: ['bad scope'] })).rejects.toBeInstanceOf(TypeError)
  })

  it.each(['redis follower', 'feed client'] as const)('enforces a revocation made through the admin API within 100 ms (%s)', async (name) => {
    const v = name === 'redis follower' ? viaRedis : viaFeed
    const token = await issue(b)
    const bystander = await issue(b)
    await v.verify(token)
    await revokeOverHttp(broker.url, { jti: jtiOf(token) })
    const acknowledged = performance.now()
    await vi.waitFor(async () => expect((await refusal(v.verify(token))).error).toBe('invalid_token'), { timeout: 100, interval: 2 })
    expect(performance.now() - acknowledged).toBeLessThan(100)
    const err = await expectRefused(v.verify(token), 401, 'invalid_token')
    expect(err.wwwAuthenticate).toContain('error_description="token revoked"')
    await v.verify(bystander)
  })

  it('enforces an agent kill on the whole chain with both sources, and keeps pre-kill tokens dead after the lift', async () => {
    const token = await issue(b)
    const id = await revokeOverHttp(broker.url, { agent: 'secret-agent' })
    for (const [, v] of sources()) {
      await vi.waitFor(async () => expect((await refusal(v.verify(token))).error).toBe('invalid_token'), { timeout: 100, interval: 2 })
    }
    const res = await fetch(`${broker.url}/admin/revocations/${id}`, { method: 'DELETE', headers: bearer(ADMIN_KEYS.responder) })
    expect(res.status).toBe(200)
    b.advance(1)
    const fresh = await issue(b)
    for (const [, v] of sources()) {
      await vi.waitFor(() => v.verify(fresh), { timeout: 500, interval: 5 })
      await expectRefused(v.verify(token), 401, 'invalid_token')
    }
  })

  it('keys a user kill on (issuer, sub) with both sources: frank at another issuer is another user', async () => {
    // Frank is this test's own user: his kills touch no other test's tokens.
    const res = await b.token(b.exchangeForm(await b.userToken({ sub: 'frank' }), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    const token = ((await res.json()) as { access_token: string }).access_token
    await revokeOverHttp(broker.url, { sub: 'frank', iss: 'https://other-idp.test', force: true })
    const marker = await issue(b)
    await revokeOverHttp(broker.url, { jti: decodeJwt(marker).jti! })
    for (const [name, v] of sources()) {
      // Once the later marker revocation holds, the earlier kill has been applied too.
      await vi.waitFor(async () => expect((await refusal(v.verify(marker))).error).toBe('invalid_token'), { timeout: 2000, interval: 5 })
      expect((await v.verify(token)).sub, name).toBe('frank')
    }
    await revokeOverHttp(broker.url, { sub: 'frank', iss: USER_ISSUER })
    for (const [, v] of sources()) {
      await vi.waitFor(async () => expect((await refusal(v.verify(token))).error).toBe('invalid_token'), { timeout: 2000, interval: 5 })
    }
  })

  it("the Redis follower writes nothing: the brokers' keys are unchanged after it synced and followed", async () => {
    await revokeOverHttp(broker.url, { jti: 'before-follower' })
    const token = await issue(b)
    const redis = new Redis(REDIS_URL, CLIENT_OPTIONS)
    cleanups.push(async () => redis.disconnect())
    const before = await dump(redis, prefix)
    expect(Object.keys(before).length).toBeGreaterThan(0)
    const follower = verifierFor(b, broker.url, { redis: { url: REDIS_URL, prefix } })
    await follower.ready()
    await follower.verify(token)
    await new Promise((r) => setTimeout(r, 600))
    await follower.close()
    expect(await dump(redis, prefix)).toEqual(before)
  })

  it('the Redis follower on an empty prefix writes nothing and answers 503 until a broker seeds it', async () => {
    const empty = `mandate-test-verifier:${randomUUID()}:`
    cleanups.push(() => dropPrefix(empty))
    const redis = new Redis(REDIS_URL, CLIENT_OPTIONS)
    cleanups.push(async () => redis.disconnect())
    expect(await dump(redis, empty)).toEqual({})
    const follower = verifierFor(b, broker.url, { redis: { url: REDIS_URL, prefix: empty } }, { startTimeoutMs: 500 })
    await expect(follower.ready()).rejects.toThrow(/not ready/)
    const token = await issue(b)
    const err = await expectRefused(follower.verify(token), 503, 'temporarily_unavailable')
    expect(err.retryAfter).toBe(1)
    expect(err.detail).toMatch(/stale/)
    await new Promise((r) => setTimeout(r, 500))
    expect(await dump(redis, empty)).toEqual({})
    expect(follower.fresh()).toBe(false)

    // A broker seeds the list: the follower catches up by itself.
    const seeder = await startTestBroker({ storage: { redis_url: REDIS_URL, key_prefix: empty }, logLevel: 'silent' })
    cleanups.push(() => seeder.close())
    await vi.waitFor(() => expect(follower.fresh()).toBe(true), { timeout: 3000, interval: 20 })
    await follower.verify(token)
  })

  it('a feed verifier started after revocations gets them from the snapshot', async () => {
    const revoked = await issue(b)
    const kept = await issue(b)
    await revokeOverHttp(broker.url, { chain: jtiOf(revoked) })
    const late = verifierFor(b, broker.url, feedOf(broker.url))
    await late.ready()
    expect((await expectRefused(late.verify(revoked), 401, 'invalid_token')).detail).toMatch(/revoked/)
    await late.verify(kept)
  })

  it('the Hono middleware: 401 bare challenge without a token, claims in the context, RFC 6750 refusals', async () => {
    const api = new Hono<MandateEnv>()
    api.use('/tickets/*', mandateAuth(viaFeed, { scopes: ['read'] }))
    api.get('/tickets/mine', (c) => c.json({ sub: c.get('mandate').sub, agent: c.get('mandate').client_id }))
    api.use('/admin/*', mandateAuth(viaFeed, { scopes: ['admin'] }))
    api.get('/admin/settings', (c) => c.json({ ok: true }))
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

// ---------------------------------------------------------------- feed credentials (no Redis needed)

describe('a feed verifier and its credentials', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'silent' })
  })
  afterAll(() => b.close())

  it('follows the feed as a resource server with private_key_jwt: a fresh assertion per connection (POST)', async () => {
    const seen: { method: string; status: number }[] = []
    const served = await serveOnLoopback(async (req, env) => {
      const res = await b.mandate.app.fetch(req, env)
      if (new URL(req.url).pathname === '/revocations/feed') seen.push({ method: req.method, status: res.status })
      return res
    })
    const opened = () => b.audit.events().filter((e) => e.type === 'admin.feed.opened' && e.by === RESOURCE_SERVERS.other).length
    cleanups.push(() => served.stop())
    const client = { id: RESOURCE_SERVERS.other, privateKey: b.rsKey.privateKey, alg: 'ES256', kid: b.rsKey.kid } as const
    const v = verifierFor(b, served.url, { feed: { url: `${served.url}/revocations/feed`, client } }, { audience: OTHER_AUDIENCE })
    await v.ready()
    const token = await issue(b, { audience: OTHER_AUDIENCE })
    expect(await v.verify(token)).toMatchObject({ aud: OTHER_AUDIENCE })

    // The connection goes; the verifier comes back with a new assertion: the broker spent the first one's
    // jti, so only a fresh one is let in again.
    const before = opened()
    served.drop()
    await vi.waitFor(() => expect(seen.filter((r) => r.status === 200)).toHaveLength(2), { timeout: 3000, interval: 20 })
    expect(seen).toEqual([
      { method: 'POST', status: 200 },
      { method: 'POST', status: 200 },
    ])
    expect(opened()).toBe(before + 1)

    await b.revocations.revokeToken(jtiOf(token) as Jti)
    await vi.waitFor(async () => expect((await refusal(v.verify(token))).error).toBe('invalid_token'), { timeout: 1000, interval: 10 })
    expect(
      b.audit
        .events()
        .filter((e) => e.type === 'admin.feed.opened')
        .at(-1),
    ).toMatchObject({ by: RESOURCE_SERVERS.other })
  })

  it('with credentials the broker refuses (an agent’s, a wrong secret), never becomes ready and answers 503', async () => {
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    const token = await issue(b)
    for (const client of [
      { id: 'secret-agent', secret: SECRET },
      { id: RESOURCE_SERVERS.api, secret: 'not-the-secret-at-all' },
    ]) {
      const v = verifierFor(b, served.url, { feed: { url: `${served.url}/revocations/feed`, client } }, { startTimeoutMs: 400 })
      await expect(v.ready()).rejects.toThrow(/feed answered 401/)
      await expectRefused(v.verify(token), 503, 'temporarily_unavailable')
    }
  })

  it('still follows the feed with an admin key holding read', async () => {
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    const v = verifierFor(b, served.url, { feed: { url: `${served.url}/revocations/feed`, adminKey: ADMIN_KEYS.auditor } })
    await v.ready()
    await v.verify(await issue(b))
  })
})

// ---------------------------------------------------------------- feed liveness (no Redis needed)

describe('a feed verifier whose broker goes away or goes stale', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'silent' })
  })
  afterAll(() => b.close())

  it('answers 503 once the staleness bound has passed after its broker stopped, not before', async () => {
    const served = await serveOnLoopback(b.mandate.app.fetch)
    cleanups.push(() => served.stop())
    const staleAfterMs = 500
    const v = verifierFor(b, served.url, feedOf(served.url, staleAfterMs))
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
    const err = await expectRefused(v.verify(token), 503, 'temporarily_unavailable')
    expect(err.retryAfter).toBe(1)
    expect(err.detail).toMatch(/stale/)
    expect(v.fresh()).toBe(false)
  })

  it('ends its streams when the broker shuts down: the server closes without cutting connections', async () => {
    const served = serve({ fetch: b.mandate.app.fetch, port: 0, hostname: '127.0.0.1' })
    await new Promise<void>((resolve) => served.once('listening', resolve))
    const url = `http://127.0.0.1:${(served.address() as AddressInfo).port}`
    const v = verifierFor(b, url, feedOf(url))
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
    // A feed whose freshness the test sets; the keys come from the real broker.
    const mirror = observeMirror(createRevocationMirror(() => T0))
    let brokerFresh = true
    const feedApp = new Hono<AppEnv>()
    const key = 'feed-key-for-the-stale-test-01'
    mountRevocationFeed(feedApp, {
      keys: [{ name: 'reader', sha256: createHash('sha256').update(key).digest(), roles: new Set(['auditor']) }],
      revocations: { records: () => mirror.records(), subscribe: (l, o) => mirror.subscribe(l, o), fresh: () => brokerFresh, lag: () => 0 },
    })
    const feed = await serveOnLoopback(feedApp.fetch)
    cleanups.push(async () => {
      mirror.end()
      await feed.stop()
    })
    const v = verifierFor(b, served.url, { feed: { url: `${feed.url}/revocations/feed`, adminKey: key } })
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
    const base = { issuer: BROKER, audience: AUDIENCE, revocations: feedOf('http://127.0.0.1:1') }
    const bad: Partial<VerifierOptions>[] = [
      { audience: '' },
      { clockSkewSeconds: 61 },
      { jwksUri: 'http://jwks.example.com/keys' },
      { revocations: { feed: { url: 'http://mandate.example.com/revocations/feed', adminKey: 'k' } } },
      { revocations: { feed: { url: 'http://127.0.0.1:1/revocations/feed', adminKey: 'k', staleAfterMs: 100 } } },
      { revocations: { feed: { url: 'http://127.0.0.1:1/revocations/feed' } } },
      { revocations: { feed: { url: 'http://127.0.0.1:1/revocations/feed', adminKey: 'k', client: { id: 'rs/api', secret: 's' } } } },
      { revocations: { feed: { url: 'http://127.0.0.1:1/revocations/feed', client: { id: 'rs/api', secret: '' } } } },
      { revocations: { feed: { url: 'http://127.0.0.1:1/revocations/feed', client: { id: 'rs api', secret: 's' } } } },
      { revocations: { feed: { url: 'http://127.0.0.1:1/revocations/feed', client: { id: 'rs/api', privateKey: {} as CryptoKey, alg: 'HS256' as 'ES256' } } } },
      { revocations: { redis: { url: 'http://127.0.0.1:6379' } } },
    ]
    for (const options of bad) expect(() => createVerifier({ ...base, ...options }), JSON.stringify(options)).toThrow(TypeError)
    expect(() => createVerifier({ ...base, revocations: {} as VerifierOptions['revocations'] })).toThrow(TypeError)
  })
})
