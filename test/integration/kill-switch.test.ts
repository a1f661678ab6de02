/**
 * The kill switch across real processes (docs/ARCHITECTURE.md "The kill switch"): brokers A and B, each `node bin/mandate.js serve --dev`,
 * share one Redis key prefix and one PostgreSQL database, with the same
 * issuer and signing key (so tokens of A validate at B) and data directories
 * of their own. A third broker C joins after Redis lost everything.
 *
 *   1. an agent killed through B is refused at A, and its token is inactive;
 *   2. propagation B → A over 200 revocations: p99 < 100 ms;
 *   3. Redis flushed, then "restarted" empty: every revocation still holds at
 *      A and B, and at C started afterwards;
 *   4. Redis unreachable from A: every exchange at A is 503 within ~1-2 s,
 *      /readyz 503; A recovers by itself;
 *   5. PostgreSQL unreachable from B: a revocation at B is 503 and revokes
 *      nothing;
 *   6. the revocation API under a saturating exchange load: every revocation
 *      acknowledged (the p99 ≤ 100 ms figure is `npm run bench:overload`'s, bench/overload.ts).
 *
 * The shared servers are never stopped, flushed or restarted: A and B reach
 * Redis, and B reaches PostgreSQL, through TCP proxies on 127.0.0.1 that the
 * tests cut and restore (test/support/proxy.ts); a "flush" deletes the keys of
 * this file's prefix. The tests run in order and build on each other (the
 * kill of test 1 and the revocations of test 2 are what test 3 checks).
 *
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379); PostgreSQL: a database
 * of its own through `DATABASE_URL` (test/support/pg-database.ts). Under
 * CI=true an unreachable server fails the file, never skips it.
 */
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis, type RedisOptions } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../src/core/claims.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { generateSigningJwk } from '../../src/tokens/keys.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { logSink } from '../support/log-sink.js'
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { freePort } from '../support/net.js'
import { LOAD_SCRIPTS, startLoadGenerator } from '../support/load/run.js'
import { jtiOf } from '../support/tokens.js'

const root = new URL('../../', import.meta.url).pathname
/** Shared by every broker; never listened on (nothing here fetches the broker's metadata). */
const ISSUER = 'http://localhost:18080'
const ADMIN = { authorization: 'Bearer demo-admin-key' } as const
const AUDIENCE = 'https://demo.example'
/** Agents of this file's policy set: the dev demo agents, plus two that are never killed. */
const DEMO = { id: 'demo-agent', secret: 'demo-secret' }
const LOAD = { id: 'load-agent', secret: 'load-agent-secret-2f6d0c9a1b7e4e55' }
const PG_AGENT = { id: 'pg-agent', secret: 'pg-agent-secret-8a3c5e7f9b1d2f40' }
type Agent = typeof DEMO

/**
 * How long a revocation may take to fail closed while PostgreSQL is
 * unreachable: the database module's own bound on reaching the server (5 s),
 * plus slack.
 */
const PG_OUTAGE_ANSWER_MS = 6_000

const REDIS_OPTIONS = { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 5000 } satisfies RedisOptions

const redisReachable = await redisAvailable('kill-switch')
const describeKillSwitch: typeof describe = redisReachable ? describePostgres : (describe.skip as typeof describe)

// ---------------------------------------------------------------- helpers

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `test` until it holds; throws with `what` after `timeoutMs`. Resolves with the time it took (ms). */
async function until(what: string, test: () => Promise<boolean>, timeoutMs: number, intervalMs = 20): Promise<number> {
  const started = performance.now()
  for (;;) {
    if (await test().catch(() => false)) return performance.now() - started
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)
    await sleep(intervalMs)
  }
}

/** Runs `fn` over `items`, at most `limit` at a time, results in order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i]!, i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

const ms = (x: number) => `${x.toFixed(1)} ms`

/** The exchange every test makes: `subjectToken` for `demo:read` at the demo audience. */
const exchangeForm = (subjectToken: string) =>
  new URLSearchParams({
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: TOKEN_TYPE.accessToken,
    audience: AUDIENCE,
    scope: 'demo:read',
  }).toString()

const basic = (agent: Agent) => `Basic ${Buffer.from(`${agent.id}:${agent.secret}`).toString('base64')}`

interface Json {
  readonly status: number
  readonly headers: Headers
  readonly body: Record<string, unknown>
}

/** One spawned broker and the calls the tests make to it. */
interface Broker {
  readonly name: string
  readonly base: string
  /** The last few KB the process wrote (stdout and stderr), for failure messages. */
  output(): string
  /** A user token from this broker's own dev issuer (each process has its own issuer key). */
  userToken(sub: string): Promise<string>
  exchange(agent: Agent, subjectToken: string): Promise<Json>
  /** Exchange that must succeed; resolves with the access token. */
  issue(agent: Agent, subjectToken: string): Promise<string>
  /** RFC 7662 with the admin key: the `active` member, or throws on anything but 200. */
  active(token: string): Promise<boolean>
  introspect(token: string): Promise<Json>
  revoke(body: Record<string, string>, options?: { timeoutMs?: number }): Promise<Json>
  list(): Promise<Json>
  ready(): Promise<number>
  stop(): Promise<void>
}

async function json(res: Response): Promise<Json> {
  const text = await res.text()
  let body: Record<string, unknown>
  try {
    body = JSON.parse(text) as Record<string, unknown>
  } catch {
    body = { unparsed: text }
  }
  return { status: res.status, headers: res.headers, body }
}

const children = new Set<ChildProcess>()
// Should the worker exit without running afterAll, take the brokers with it.
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child)
    return
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  await exited
  clearTimeout(timer)
  children.delete(child)
}

interface BrokerEnv {
  readonly redisUrl: string
  readonly databaseUrl: string
  readonly prefix: string
  readonly policiesDir: string
  readonly keysFile: string
  readonly dataDir: string
}

async function startBroker(name: string, env: BrokerEnv): Promise<Broker> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
    cwd: root,
    env: {
      ...process.env,
      PORT: String(port),
      MANDATE_ISSUER: ISSUER,
      MANDATE_DATA_DIR: env.dataDir,
      MANDATE_POLICIES_DIR: env.policiesDir,
      MANDATE_SIGNING_KEYS_FILE: env.keysFile,
      MANDATE_REDIS_PREFIX: env.prefix,
      DATABASE_URL: env.databaseUrl,
      REDIS_URL: env.redisUrl,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  let tail = ''
  const keep = (d: Buffer) => {
    tail = (tail + d.toString()).slice(-8192)
  }
  // Always drained: a full pipe would block the broker.
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  child.stdout.on('data', logSink('kill-switch broker stdout'))
  child.stderr.on('data', logSink('kill-switch broker stderr'))

  const post = async (path: string, body: string, headers: Record<string, string>, timeoutMs = 30_000) =>
    json(await fetch(`${base}${path}`, { method: 'POST', headers, body, signal: AbortSignal.timeout(timeoutMs) }))
  const broker: Broker = {
    name,
    base,
    output: () => tail,
    async userToken(sub) {
      const res = await post(`/dev/users/${sub}/token`, JSON.stringify({ scope: 'demo:read demo:write' }), { 'content-type': 'application/json' })
      if (res.status !== 200) throw new Error(`${name}: dev user token: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body['access_token'] as string
    },
    exchange: (agent, subjectToken) =>
      post('/oauth2/token', exchangeForm(subjectToken), { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(agent) }),
    async issue(agent, subjectToken) {
      const res = await broker.exchange(agent, subjectToken)
      if (res.status !== 200) throw new Error(`${name}: exchange as ${agent.id}: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body['access_token'] as string
    },
    introspect: (token) =>
      post('/oauth2/introspect', new URLSearchParams({ token }).toString(), {
        'content-type': 'application/x-www-form-urlencoded',
        ...ADMIN,
      }),
    async active(token) {
      const res = await broker.introspect(token)
      if (res.status !== 200) throw new Error(`${name}: introspection: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body['active'] === true
    },
    revoke: (body, options) => post('/admin/revocations', JSON.stringify(body), { 'content-type': 'application/json', ...ADMIN }, options?.timeoutMs),
    list: async () => json(await fetch(`${base}/admin/revocations?limit=1000`, { headers: ADMIN })),
    ready: async () => (await fetch(`${base}/readyz`)).status,
    stop: () => stopChild(child),
  }

  const deadline = performance.now() + 40_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broker ${name} exited (${child.exitCode}) at start:\n${tail}`)
    if ((await broker.ready().catch(() => 0)) === 200) return broker
    if (performance.now() > deadline) throw new Error(`broker ${name} not ready within 40 s:\n${tail}`)
    await sleep(100)
  }
}

/** What a refused exchange must look like (CONTRIBUTING.md "Tests": status, error, no-store, no token). */
function expectRefused(res: Json, status: number, error: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status)
  expect(res.body['error']).toBe(error)
  expect(res.body['access_token']).toBeUndefined()
  expect(res.headers.get('cache-control')).toBe('no-store')
}

// ---------------------------------------------------------------- the suite

describeKillSwitch('kill switch across broker processes (Redis + PostgreSQL)', () => {
  const prefix = `mandate-test:${randomUUID()}:`
  const tempDirs: string[] = []
  const proxies: TcpProxy[] = []
  let database: TestDatabase | undefined
  let redis: Redis
  let env: Omit<BrokerEnv, 'dataDir' | 'redisUrl' | 'databaseUrl'>
  let a: Broker
  let b: Broker
  let c: Broker | undefined
  /** A's path to Redis, B's path to Redis, B's path to PostgreSQL. */
  let redisA: TcpProxy
  let redisB: TcpProxy
  let pgB: TcpProxy

  // Shared between the tests, in order.
  let killedToken: string | undefined
  const revokedTokens: string[] = []

  const newDir = async (label: string) => {
    const dir = await mkdtemp(join(tmpdir(), `mandate-kill-${label}-`))
    tempDirs.push(dir)
    return dir
  }

  const cleanup = async () => {
    const brokers = [a, b, c].filter((x): x is Broker => x !== undefined)
    await Promise.all(brokers.map((x) => x.stop().catch(() => {})))
    await Promise.all([...children].map((child) => stopChild(child).catch(() => {})))
    await Promise.all(proxies.splice(0).map((p) => p.close()))
    if (redis !== undefined) {
      await deletePrefix(redis, prefix).catch(() => {})
      redis.disconnect()
    }
    await database?.drop().catch(() => {})
    database = undefined
    await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
  }

  beforeAll(async () => {
    try {
      redis = new Redis(REDIS_URL, REDIS_OPTIONS)
      redis.on('error', () => {})
      database = await createTestDatabase()

      // Policies: the dev demo agents, plus agents no test kills.
      const policiesDir = await newDir('policies')
      for (const file of ['demo-agent.yaml', 'demo-subagent.yaml']) await copyFile(join(root, 'policies/dev', file), join(policiesDir, file))
      for (const agent of [LOAD, PG_AGENT]) {
        await writeFile(
          join(policiesDir, `${agent.id}.yaml`),
          `agent: ${agent.id}
owner: security@example.com
purpose: kill-switch test agent
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(agent.secret).toString('hex')} }
users: [{ issuer: https://users.dev.mandate.invalid }]
grants: [{ audience: ${AUDIENCE}, scopes: [demo:read], default_scopes: [demo:read] }]
token_ttl: { default: 300, max: 300 }
`,
        )
      }
      // One signing key for every instance (generated here, as an operator would).
      const keysDir = await newDir('keys')
      const keysFile = join(keysDir, 'signing-keys.json')
      await writeFile(keysFile, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 })
      env = { prefix, policiesDir, keysFile }

      redisA = await startTcpProxy(REDIS_URL)
      redisB = await startTcpProxy(REDIS_URL)
      pgB = await startTcpProxy(database.url)
      proxies.push(redisA, redisB, pgB)

      const dataA = await newDir('a')
      const dataB = await newDir('b')
      ;[a, b] = await Promise.all([
        startBroker('A', { ...env, dataDir: dataA, redisUrl: redisA.url, databaseUrl: database.url }),
        startBroker('B', { ...env, dataDir: dataB, redisUrl: redisB.url, databaseUrl: pgB.url }),
      ])
    } catch (err) {
      await cleanup()
      throw err
    }
  }, 60_000)

  afterAll(cleanup, 30_000)

  it('an agent killed through B: A refuses to issue to it, and its token is inactive at A', async () => {
    const token = await a.issue(DEMO, await a.userToken('alice'))
    expect(await a.active(token)).toBe(true)
    // Same issuer and key: B validates A's tokens.
    expect(await b.active(token)).toBe(true)

    const kill = await b.revoke({ agent: DEMO.id, reason: 'kill-switch test: prompt injection seen' })
    expect(kill.status, JSON.stringify(kill.body)).toBe(201)
    expect(kill.body).toMatchObject({ kind: 'agent', target: { agent: DEMO.id }, in_force: true })

    // Within the propagation bound (docs/ARCHITECTURE.md "The kill switch": 100 ms p99); polled, never slept through.
    await until('A introspects the killed agent’s token as inactive', async () => !(await a.active(token)), 1_000, 5)
    expectRefused(await a.exchange(DEMO, await a.userToken('alice')), 400, 'unauthorized_client')
    expectRefused(await a.exchange(DEMO, await a.userToken('bob')), 400, 'unauthorized_client')
    expectRefused(await b.exchange(DEMO, await b.userToken('alice')), 400, 'unauthorized_client')
    expect(await b.active(token)).toBe(false)
    killedToken = token
  })

  it('propagation B → A over 200 revocations: p99 < 100 ms from B’s 201 to A answering active:false', async () => {
    const N = 200
    const user = await a.userToken('propagation-user')
    const tokens = await mapLimit(Array.from({ length: N }), 16, () => a.issue(LOAD, user))
    expect(new Set(tokens.map(jtiOf)).size).toBe(N)
    expect(await mapLimit(tokens, 16, (t) => a.active(t))).toEqual(tokens.map(() => true))

    const latencies: number[] = []
    let polls = 0
    for (const [i, token] of tokens.entries()) {
      const res = await b.revoke({ jti: jtiOf(token), reason: `propagation ${i}` })
      const acknowledged = performance.now()
      expect(res.status, JSON.stringify(res.body)).toBe(201)
      for (;;) {
        polls++
        if (!(await a.active(token))) break
        if (performance.now() - acknowledged > 5_000) throw new Error(`revocation ${i} not applied at A within 5 s`)
      }
      latencies.push(performance.now() - acknowledged)
      revokedTokens.push(token)
    }
    const p50 = percentile(latencies, 50)
    const p99 = percentile(latencies, 99)
    console.log(
      `kill-switch propagation B → A over ${N} revocations: p50 ${ms(p50)}, p99 ${ms(p99)}, max ${ms(Math.max(...latencies))} ` +
        `(${(polls / N).toFixed(1)} introspections per revocation; each latency includes one introspection round trip)`,
    )
    expect(p99).toBeLessThan(100)
    // A jti revocation stops that token only.
    expect(await a.active(await a.issue(LOAD, user))).toBe(true)
  }, 60_000)

  it('Redis flushed, then restarted empty: every revocation still holds at A and B, and at a broker C started afterwards', async () => {
    expect(killedToken).toBeDefined()
    expect(revokedTokens.length).toBeGreaterThan(0)
    const recordsKey = `${prefix}rev:records`
    const epochKey = `${prefix}rev:epoch`
    const held = await redis.hlen(recordsKey)
    expect(held).toBeGreaterThanOrEqual(1 + revokedTokens.length)

    const expectAllInForce = async (x: Broker) => {
      expectRefused(await x.exchange(DEMO, await x.userToken('alice')), 400, 'unauthorized_client')
      expect(await x.active(killedToken!), `${x.name}: killed agent's token`).toBe(false)
      const active = await mapLimit(revokedTokens, 16, (t) => x.active(t))
      expect(active.filter(Boolean).length, `${x.name}: revoked tokens still active`).toBe(0)
      // …and not because it refuses everything.
      expect(await x.active(await x.issue(LOAD, await x.userToken('carol')))).toBe(true)
    }

    // 1. Flushed under the brokers' feet (FLUSHDB, scoped to this file's prefix).
    expect(await deletePrefix(redis, prefix)).toBeGreaterThan(0)
    await expectAllInForceOrClosed([a, b])
    await until('Redis reseeded after the flush', async () => (await redis.exists(epochKey)) === 1, 10_000)
    await until('A and B ready after the flush', async () => (await a.ready()) === 200 && (await b.ready()) === 200, 10_000)
    await expectAllInForce(a)
    await expectAllInForce(b)
    expect(await redis.hlen(recordsKey)).toBeGreaterThanOrEqual(held)

    // 2. Restarted empty: every connection drops, and Redis comes back with nothing.
    redisA.cut()
    redisB.cut()
    await until('A and B notice the outage', async () => (await a.ready()) === 503 && (await b.ready()) === 503, 5_000)
    await deletePrefix(redis, prefix)
    redisA.restore()
    redisB.restore()
    await until('A and B ready after the restart', async () => (await a.ready()) === 200 && (await b.ready()) === 200, 15_000)
    await until('Redis reseeded after the restart', async () => (await redis.hlen(recordsKey)) >= held, 5_000)
    await expectAllInForce(a)
    await expectAllInForce(b)

    // 3. A broker that never saw any of it learns every revocation from the shared state.
    c = await startBroker('C', { ...env, dataDir: await newDir('c'), redisUrl: REDIS_URL, databaseUrl: database!.url })
    await expectAllInForce(c)
  }, 60_000)

  /** Right after the flush each broker either still refuses from its mirror or fails closed; it never issues. */
  async function expectAllInForceOrClosed(brokers: readonly Broker[]): Promise<void> {
    for (const x of brokers) {
      const res = await x.exchange(DEMO, await x.userToken('alice'))
      expect([400, 503], `${x.name}: ${JSON.stringify(res.body)}`).toContain(res.status)
      expect(res.body['access_token']).toBeUndefined()
      const seen = await x.introspect(killedToken!)
      expect([200, 503]).toContain(seen.status)
      expect(seen.body['active']).not.toBe(true)
    }
  }

  it('Redis unreachable from A: within ~1-2 s every exchange at A is 503 with Retry-After, /readyz 503; A recovers by itself', async () => {
    const user = await a.userToken('outage-user')
    await a.issue(LOAD, user)
    const issuedBefore = await a.issue(LOAD, user)

    redisA.cut()
    const failedClosedAfter = await until('an exchange at A answers 503', async () => (await a.exchange(LOAD, user)).status === 503, 3_000, 25)
    expect(failedClosedAfter).toBeLessThan(2_500)

    // A burst during the outage: not one token.
    const burst = await mapLimit(Array.from({ length: 200 }), 32, () => a.exchange(LOAD, user))
    const statuses = new Map<number, number>()
    for (const r of burst) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
    console.log(
      `kill-switch Redis outage at A: fail-closed after ${ms(failedClosedAfter)}; burst of ${burst.length}: ${JSON.stringify(Object.fromEntries(statuses))}`,
    )
    expect(burst.filter((r) => r.status === 200 || r.body['access_token'] !== undefined)).toHaveLength(0)
    for (const r of burst) {
      expectRefused(r, 503, 'temporarily_unavailable')
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0)
    }
    expect(await a.ready()).toBe(503)
    // Introspection fails closed too: never active:true while the list is unknown.
    expectRefused(await a.introspect(issuedBefore), 503, 'temporarily_unavailable')
    // B, whose Redis is fine, carries on.
    expect(await b.active(await b.issue(LOAD, await b.userToken('outage-user')))).toBe(true)

    redisA.restore()
    const recoveredAfter = await until('A ready again', async () => (await a.ready()) === 200, 15_000, 50)
    console.log(`kill-switch Redis outage at A: ready again ${ms(recoveredAfter)} after the restore`)
    expect(await a.active(await a.issue(LOAD, user))).toBe(true)
    expect(await a.active(issuedBefore)).toBe(true)
  }, 30_000)

  it('PostgreSQL unreachable from B: a revocation at B answers 503 within seconds, and nothing is revoked', async () => {
    const tag = `pg-outage-${randomUUID()}`
    // Three kinds of target, one after the other: each must fail closed on its own.
    const attempts: Record<string, string>[] = [{ agent: PG_AGENT.id }, { sub: `${tag}-user` }, { jti: `${tag}-jti` }]
    const ours = (res: Json) =>
      (res.body['revocations'] as { reason: string; target: { agent?: string } }[]).filter((r) => r.reason.startsWith(tag) || r.target.agent === PG_AGENT.id)

    pgB.cut()
    try {
      for (const [i, target] of attempts.entries()) {
        const t0 = performance.now()
        const res = await b.revoke({ ...target, reason: `${tag} ${i}` }, { timeoutMs: PG_OUTAGE_ANSWER_MS }).catch((err: unknown) => {
          throw new Error(
            `B did not answer a revocation within ${PG_OUTAGE_ANSWER_MS} ms while PostgreSQL was unreachable (${String(err)}); ` +
              'it must fail closed with 503, not wait for the database to return',
          )
        })
        console.log(`kill-switch PostgreSQL outage at B: revocation ${JSON.stringify(target)} answered ${res.status} in ${ms(performance.now() - t0)}`)
        expect(res.status, JSON.stringify(res.body)).toBe(503)
        expect(res.body['error']).toBe('temporarily_unavailable')
        expect(res.body['id']).toBeUndefined()
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0)
        expect(res.headers.get('cache-control')).toBe('no-store')
      }
      // A reads the same database directly: no such record.
      const atA = await a.list()
      expect(atA.status).toBe(200)
      expect(ours(atA)).toEqual([])
    } finally {
      pgB.restore()
    }

    await until('B reads PostgreSQL again', async () => (await b.list()).status === 200, 15_000, 50)
    expect(ours(await b.list())).toEqual([])
    expect(ours(await a.list())).toEqual([])
    // The agent still gets tokens, at both instances, and they are live.
    expect(await a.active(await a.issue(PG_AGENT, await a.userToken('dave')))).toBe(true)
    expect(await b.active(await b.issue(PG_AGENT, await b.userToken('dave')))).toBe(true)
  }, 45_000)

  it('the revocation API under a saturating exchange load at A: every revocation acknowledged (p99 printed; target 100 ms in bench:overload)', async () => {
    const user = await a.userToken('load-user')
    await a.issue(LOAD, user)
    const LOOPS = 64
    const REVOCATIONS = 30
    /** Least time between two revocation calls: 30 of them span about 2.5 s of load at least. */
    const SPACING_MS = 80

    // Its own process (test/support/load/statuses.ts): neither its event loop nor its start-up sits between this file and the broker.
    const load = startLoadGenerator(LOAD_SCRIPTS.statuses, {
      url: `${a.base}/oauth2/token`,
      authorization: basic(LOAD),
      body: exchangeForm(user),
      loops: LOOPS,
      maxMs: 40_000,
    })
    children.add(load.child)
    const latencies: number[] = []
    try {
      await load.started(20_000)
      // The load is at full strength; one revocation at a time, as a responder makes them, all while it lasts.
      const started = performance.now()
      for (let i = 0; i < REVOCATIONS; i++) {
        await sleep(Math.max(0, started + 200 + i * SPACING_MS - performance.now()))
        const t0 = performance.now()
        const res = await a.revoke({ jti: `load-test-${randomUUID()}`, reason: `under load ${i}` })
        latencies.push(performance.now() - t0)
        expect(res.status, JSON.stringify(res.body)).toBe(201)
      }
    } finally {
      load.child.stdin!.end('stop\n')
    }
    const report = await load.stop(10_000)
    await stopChild(load.child)

    const p50 = percentile(latencies, 50)
    const p99 = percentile(latencies, 99)
    console.log(
      `kill-switch revocation API under load (${LOOPS} concurrent exchange loops at A, ${Math.round(report.afterGo / (report.ms / 1000))} exchanges/s ` +
        `for ${(report.ms / 1000).toFixed(1)} s): ${REVOCATIONS} revocations p50 ${ms(p50)}, p99 ${ms(p99)}, max ${ms(Math.max(...latencies))}`,
    )
    // Saturated on a shared machine the broker may shed some exchanges (503, overloaded): nothing else.
    expect(Object.keys(report.statuses).filter((s) => s !== '200' && s !== '503')).toEqual([])
    expect(report.statuses['200']).toBeGreaterThan(0)
    // The figure (p99 within 100 ms with the token endpoint driven past saturation) is measured by
    // `npm run bench:overload` (bench/overload.ts: 200 revocations against a reference in the same run);
    // a test asserts no timing it cannot hold on a shared machine. Here, with two brokers, the
    // load generator and the test on two cores, it prints p99 ~100-200 ms; what is asserted is
    // that every revocation was acknowledged, within the 3 s store bound.
    expect(Math.max(...latencies)).toBeLessThan(3_000)
  }, 60_000)
})
