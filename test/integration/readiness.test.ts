/**
 * /readyz against real components: an IdP's JWKS served over HTTP by the
 * test (down past the time its last good set may serve; down at start),
 * Redis and PostgreSQL behind a TCP proxy that the test cuts. Each outage
 * turns the broker not ready with its reason, and ready again by itself once
 * the component is back, without a request having to come first.
 *
 * Time: the JWKS tests inject the clock the key sets age by; the outage tests
 * run on the real clock (Redis freshness and the database ping are measured
 * in real time), and poll the probe until it changes.
 */
import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair } from 'jose'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/memory.js'
import { composeMandate, type ComposeOptions, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import { createLogger } from '../../src/telemetry/log.js'
import { secretAgentPolicy } from '../support/broker.js'
import { captureLogs } from '../support/log-sink.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'

const BROKER = 'https://mandate.test'
const SECOND = 1000

interface ReadyBody {
  status: string
  reasons: { check: string; detail: string }[]
  [check: string]: unknown
}

interface Issuer {
  issuer: string
  role: string
  state: string
  fetched_at?: string
  last_failure?: string
}

async function readyz(m: Mandate): Promise<{ status: number; body: ReadyBody; text: string }> {
  const res = await m.app.request('/readyz')
  const text = await res.text()
  return { status: res.status, body: JSON.parse(text) as ReadyBody, text }
}

/** Polls the probe until `check` passes on it (background work changes it: a fetch, a ping, a reconnect). */
const readyzUntil = (m: Mandate, check: (r: Awaited<ReturnType<typeof readyz>>) => void, timeout = 10_000) =>
  vi.waitFor(
    async () => {
      const r = await readyz(m)
      check(r)
      return r
    },
    { timeout, interval: 50 },
  )

const issuersOf = (body: ReadyBody) => (body['upstream_jwks'] as { issuers: Issuer[] }).issuers

/** An IdP's JWKS endpoint that the test can take down (503) and bring back. */
interface JwksServer {
  readonly url: string
  down: boolean
  hits: number
  close(): Promise<void>
}

async function startJwksServer(): Promise<JwksServer> {
  const { publicKey } = await generateKeyPair('ES256', { extractable: true })
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' }] })
  const state = { down: false, hits: 0 }
  const server: Server = createServer((_req, res) => {
    state.hits++
    if (state.down) {
      res.writeHead(503).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return Object.assign(state, {
    url,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  })
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

/** A broker composed from config in a temp dir, one agent trusting `userIssuer`; in-memory audit and revocation log unless `storage` says otherwise. */
async function startBroker(
  settings: { trust?: Record<string, unknown>; storage?: Record<string, unknown>; jwks?: Record<string, unknown>; userIssuer?: string },
  options: Partial<ComposeOptions> = {},
): Promise<Mandate> {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-ready-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  await mkdir(join(dir, 'policies'))
  await writeFile(join(dir, 'policies', 'agent.yaml'), secretAgentPolicy('agent', settings.userIssuer ?? 'https://idp.test'))
  const config = Config.parse({
    issuer: BROKER,
    policies_dir: join(dir, 'policies'),
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    ...(settings.trust === undefined ? {} : { trust: settings.trust }),
    ...(settings.storage === undefined ? {} : { storage: settings.storage }),
    ...(settings.jwks === undefined ? {} : { jwks: settings.jwks }),
  })
  const sqlStorage = settings.storage?.['database_url'] !== undefined
  const mandate = await composeMandate(config, {
    dev: false,
    logger: createLogger('info', captureLogs('readiness broker').stream),
    ...(sqlStorage ? {} : { audit: createMemoryAuditLog(), revocationLog: createMemoryRevocationLog() }),
    ...options,
  })
  cleanups.push(() => mandate.close())
  return mandate
}

describe('/readyz and the upstream key sets (a real JWKS server, injected clock)', () => {
  // Defaults: a set is refreshed after 10 min, the last good one serves for 1 h while the IdP is down, 30 s cooldown.
  const CACHE = 600 * SECOND
  const USABLE = 3600 * SECOND
  const COOLDOWN = 30 * SECOND

  it('ready while the last good set may serve an IdP that is down; 503 naming the issuer past that; ready again once it answers', async () => {
    const idp = await startJwksServer()
    cleanups.push(() => idp.close())
    let now = Date.UTC(2027, 0, 1)
    const m = await startBroker(
      { trust: { subjects: [{ issuer: idp.url, jwks_uri: `${idp.url}/jwks`, algorithms: ['ES256'] }] }, userIssuer: idp.url },
      { clock: () => now },
    )

    // Fetched at start, before any token asked for it.
    const start = await readyzUntil(m, (r) => expect(r.status, r.text).toBe(200))
    expect(issuersOf(start.body)).toEqual([{ issuer: idp.url, role: 'subjects', state: 'fresh', fetched_at: new Date(now).toISOString() }])
    expect(idp.hits).toBe(1)

    // The IdP goes down; once the set is due, the background refresh finds out (no request needed).
    idp.down = true
    now += CACHE + 1
    const stale = await readyzUntil(m, (r) => expect(issuersOf(r.body)[0]?.last_failure).toBeDefined())
    expect(stale.status).toBe(200)
    expect(issuersOf(stale.body)).toEqual([expect.objectContaining({ state: 'stale', last_failure: `fetch ${idp.url}/jwks answered 503` })])
    expect(idp.hits).toBe(2)

    // Past the time the last good set may serve: its tokens would get 503, and so does the probe.
    now += USABLE - CACHE
    const expired = await readyz(m)
    expect(expired.status).toBe(503)
    expect(expired.body.status).toBe('not_ready')
    expect(expired.body.reasons).toEqual([{ check: 'upstream_jwks', detail: expect.stringContaining(`${idp.url} (subjects): no usable key set (expired)`) }])
    expect(expired.body['upstream_jwks']).toMatchObject({ ready: false, issuers: [{ issuer: idp.url, state: 'expired' }] })

    // Back up: the next attempt after the cooldown brings the broker back by itself.
    idp.down = false
    now += COOLDOWN
    const back = await readyzUntil(m, (r) => expect(r.status, r.text).toBe(200))
    expect(issuersOf(back.body)).toEqual([{ issuer: idp.url, role: 'subjects', state: 'fresh', fetched_at: expect.any(String) }])
  })

  it('not ready while the first fetch is under way: until then no key of the issuer is in hand', async () => {
    let answer: () => void = () => {}
    const held = new Promise<void>((resolve) => (answer = resolve))
    const { publicKey } = await generateKeyPair('ES256', { extractable: true })
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] })
    let asked = 0
    const server = createServer((_req, res) => {
      asked++
      void held.then(() => res.writeHead(200, { 'content-type': 'application/json' }).end(jwks))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    })
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const m = await startBroker({ trust: { subjects: [{ issuer: url, jwks_uri: `${url}/jwks`, algorithms: ['ES256'] }] } })

    await vi.waitFor(() => expect(asked).toBe(1))
    const pending = await readyz(m)
    expect(pending.status).toBe(503)
    expect(pending.body.reasons).toEqual([{ check: 'upstream_jwks', detail: `${url} (subjects): no usable key set (pending)` }])
    answer()
    await readyzUntil(m, (r) => expect(r.status, r.text).toBe(200))
  })

  it('a workload issuer unreachable at start: not ready until a fetch succeeds, retried in the background', async () => {
    const idp = await startJwksServer()
    cleanups.push(() => idp.close())
    idp.down = true
    let now = Date.UTC(2027, 0, 1)
    const m = await startBroker({ trust: { workloads: [{ issuer: idp.url, jwks_uri: `${idp.url}/jwks`, algorithms: ['ES256'] }] } }, { clock: () => now })

    const down = await readyzUntil(m, (r) => expect(issuersOf(r.body)[0]?.state).toBe('unavailable'))
    expect(down.status).toBe(503)
    expect(down.body.reasons).toEqual([{ check: 'upstream_jwks', detail: expect.stringContaining(`${idp.url} (workloads): no usable key set (unavailable)`) }])

    idp.down = false
    now += COOLDOWN
    await readyzUntil(m, (r) => expect(r.status, r.text).toBe(200))
  })

  it('never shows credentials a JWKS URL carries', async () => {
    const idp = await startJwksServer()
    cleanups.push(() => idp.close())
    const withCredentials = idp.url.replace('http://', 'http://reader:s3cret-pw@')
    const m = await startBroker({ trust: { subjects: [{ issuer: idp.url, jwks_uri: `${withCredentials}/jwks`, algorithms: ['ES256'] }] } })
    // fetch() refuses a URL with credentials: the failure names the URL, which the probe must cut.
    const r = await readyzUntil(m, (x) => expect(issuersOf(x.body)[0]?.state).toBe('unavailable'))
    expect(r.status).toBe(503)
    expect(r.text).not.toContain('s3cret-pw')
    expect(r.text).not.toContain('reader')
    expect(issuersOf(r.body)[0]?.last_failure).toContain(`${idp.url}/jwks`)
  })
})

const redisUp = await redisAvailable('readiness.test.ts')

describe.runIf(redisUp)('/readyz and Redis (cut through a TCP proxy)', () => {
  const prefix = `mandate-test:${randomUUID()}:`
  let redis: Redis
  beforeAll(() => {
    redis = new Redis(REDIS_URL, REDIS_CLIENT_OPTIONS)
    redis.on('error', () => undefined)
  })
  afterAll(async () => {
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })

  it('Redis unreachable: 503 on the revocation mirror and the replay cache; ready again once it is back', async () => {
    const proxy: TcpProxy = await startTcpProxy(REDIS_URL)
    cleanups.push(() => proxy.close())
    const m = await startBroker({ storage: { redis_url: proxy.url, key_prefix: prefix } })
    const ready = await readyz(m)
    expect(ready.status, ready.text).toBe(200)
    expect(ready.body['replay_cache']).toEqual({ ready: true, store: 'redis' })

    proxy.cut()
    const cut = await readyzUntil(m, (r) => expect(r.body.reasons.map((x) => x.check).sort()).toEqual(['replay_cache', 'revocation_mirror']))
    expect(cut.status).toBe(503)
    expect(cut.body['revocation_mirror']).toMatchObject({ ready: false, fresh: false })
    expect(cut.body['replay_cache']).toEqual({ ready: false, store: 'redis' })
    expect(cut.text).not.toContain(String(proxy.port))

    proxy.restore()
    await readyzUntil(m, (r) => expect(r.status, r.text).toBe(200))
  }, 30_000)
})

describePostgres('/readyz and PostgreSQL (cut through a TCP proxy)', () => {
  let database: TestDatabase
  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(async () => {
    await database.drop()
  })

  it('PostgreSQL unreachable: 503 on the audit log; ready again once it is back', async () => {
    const proxy = await startTcpProxy(database.url)
    cleanups.push(() => proxy.close())
    const m = await startBroker({ storage: { database_url: proxy.url } })
    expect((await readyz(m)).status).toBe(200)

    proxy.cut()
    // The log pings an idle database in the background, at most every 5 s.
    const cut = await readyzUntil(m, (r) => expect(r.status, r.text).toBe(503), 20_000)
    expect(cut.body.reasons).toEqual([{ check: 'audit_log', detail: expect.any(String) }])
    expect(cut.body['audit_log']).toEqual({ ready: false, writing: false })
    expect(cut.text).not.toContain(database.name)

    proxy.restore()
    await readyzUntil(m, (r) => expect(r.status, r.text).toBe(200), 20_000)
  }, 60_000)
})
