/**
 * How soon the broker serves again once Redis or PostgreSQL is back: a broker
 * composed in this process by the real composition root, on the real clock,
 * reaches the shared server through a TCP proxy (test/support/proxy.ts) that
 * the test cuts and restores; the shared servers themselves are never
 * stopped. Each cycle cuts the proxy for OUTAGE_MS (long enough for the
 * reconnect backoffs to grow), restores it, and times the first token
 * endpoint 200 and the first /readyz 200 after the restore, polling every
 * POLL_MS. Every cycle must serve, and be ready, again within
 * RECOVERY_BOUND_MS.
 *
 * Redis: the exchange is made by a `private_key_jwt` agent, so both Redis
 * paths of an exchange have to come back: the revocation mirror's freshness
 * (the feed's reader) and the client-assertion replay check (the command
 * connection). PostgreSQL: the `token.issued` record of every exchange goes
 * to the delegation log there.
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair } from 'jose'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/memory.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { CLIENT_ASSERTION_TYPE_JWT, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../src/core/claims.js'
import { Config } from '../../src/config/schema.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import { createLogger } from '../../src/telemetry/log.js'
import { DEV_USER_ISSUER } from '../../src/tokens/dev-issuer.js'
import { captureLogs } from '../support/log-sink.js'
import { createTestDatabase, describePostgres } from '../support/pg-database.js'
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { clientAssertion } from '../support/tokens.js'

const ISSUER = 'http://localhost:18081'
const AUDIENCE = 'https://api.test'
const AGENT = 'recovery-agent'
const OUTAGE_MS = 6_000
const POLL_MS = 10
const CYCLES = 3
/** The issue's bound: restore → first 200. */
const RECOVERY_BOUND_MS = 1_000

const redisReachable = await redisAvailable('recovery')

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {})
})

interface Subject {
  readonly mandate: Mandate
  readonly logs: string[]
  /** One exchange by the `private_key_jwt` agent with a fresh assertion: the status. */
  exchange(): Promise<number>
  /** The status of /readyz. */
  ready(): Promise<number>
}

/** A broker on the real clock whose only agent authenticates with `private_key_jwt`. */
async function startBroker(storage: Record<string, string>, inMemoryLogs: boolean): Promise<Subject> {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-recovery-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }
  await writeFile(
    join(dir, `${AGENT}.yaml`),
    `agent: ${AGENT}
owner: security@example.com
purpose: recovery test agent
expires: 2099-01-01
authentication: { method: private_key_jwt, jwks: { keys: [${JSON.stringify(jwk)}] } }
users: [{ issuer: ${DEV_USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`,
  )
  const { lines, stream } = captureLogs('recovery test broker')
  const config = Config.parse({
    issuer: ISSUER,
    policies_dir: dir,
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    storage,
    log: { level: 'info' },
    // The assertions below live 60 s: allowing no longer means none made after the start predates the replay memory.
    limits: { client_assertion_max_lifetime_seconds: 60 },
  })
  const mandate = await composeMandate(config, {
    dev: true,
    logger: createLogger('info', stream),
    // A busy test machine must not shed the probes.
    loadSignals: { eventLoopLag: () => 0 },
    ...(inMemoryLogs ? { audit: createMemoryAuditLog(), revocationLog: createMemoryRevocationLog() } : {}),
  })
  cleanups.push(() => mandate.close())
  const userRes = await mandate.app.request(`/dev/users/alice/token`, {
    method: 'POST',
    body: '{"scope":"read"}',
    headers: { 'content-type': 'application/json' },
  })
  const user = ((await userRes.json()) as { access_token: string }).access_token
  // Assertions carry whole seconds: one stamped in the second the replay memory began may predate it.
  await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 10))
  return {
    mandate,
    logs: lines,
    async ready() {
      const res = await mandate.app.request('/readyz')
      await res.arrayBuffer()
      return res.status
    },
    async exchange() {
      const assertion = await clientAssertion({ privateKey, alg: 'ES256', kid: 'k1' }, { client: AGENT, aud: ISSUER })
      const res = await mandate.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
          subject_token: user,
          subject_token_type: TOKEN_TYPE.accessToken,
          audience: AUDIENCE,
          client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
          client_assertion: assertion,
        }).toString(),
      })
      await res.arrayBuffer()
      return res.status
    },
  }
}

interface Recovery {
  /** Restore → the first token endpoint 200, ms. */
  readonly serving: number
  /** Restore → the first /readyz 200, ms. */
  readonly ready: number
}

/** Polls `test` every POLL_MS from `since` until it holds; resolves with ms since `since`. */
async function firstTime(since: number, test: () => Promise<boolean>): Promise<number> {
  for (;;) {
    const ok = await test()
    const elapsed = performance.now() - since
    if (ok) return elapsed
    if (elapsed > 15_000) throw new Error('not within 15 s of the restore')
    await sleep(POLL_MS)
  }
}

/** Cuts `proxy` for OUTAGE_MS (the outage must be felt: an exchange answered 503), restores it, and times the recovery. */
async function outageCycle(broker: Subject, proxy: TcpProxy): Promise<Recovery> {
  expect(await broker.exchange()).toBe(200)
  proxy.cut()
  const cutAt = performance.now()
  let refused = false
  while (performance.now() - cutAt < OUTAGE_MS) {
    if ((await broker.exchange()) === 503) refused = true
    await sleep(50)
  }
  expect(refused, 'an exchange answered 503 during the outage').toBe(true)
  expect(await broker.ready()).toBe(503)
  proxy.restore()
  const restoredAt = performance.now()
  const [serving, ready] = await Promise.all([
    firstTime(restoredAt, async () => {
      const status = await broker.exchange()
      expect([200, 503]).toContain(status)
      return status === 200
    }),
    firstTime(restoredAt, async () => (await broker.ready()) === 200),
  ])
  return { serving, ready }
}

async function cycles(name: string, broker: Subject, proxy: TcpProxy): Promise<void> {
  const runs: Recovery[] = []
  for (let i = 0; i < CYCLES; i++) runs.push(await outageCycle(broker, proxy))
  const list = (xs: number[]) => xs.map((t) => `${t.toFixed(0)} ms`).join(', ')
  console.log(`recovery, ${name}: restore → first 200 ${list(runs.map((r) => r.serving))}; → /readyz 200 ${list(runs.map((r) => r.ready))}`)
  for (const r of runs) {
    expect(r.serving).toBeLessThan(RECOVERY_BOUND_MS)
    expect(r.ready).toBeLessThan(RECOVERY_BOUND_MS)
  }
}

describe.skipIf(!redisReachable)('recovery after a Redis outage', () => {
  it(`serves again within ${RECOVERY_BOUND_MS} ms of the restore (${CYCLES} outages of ${OUTAGE_MS} ms)`, async () => {
    const prefix = `mandate-test:${randomUUID()}:`
    cleanups.push(async () => {
      const admin = new Redis(REDIS_URL, { ...REDIS_CLIENT_OPTIONS, enableOfflineQueue: true })
      try {
        await deletePrefix(admin, prefix)
      } finally {
        admin.disconnect()
      }
    })
    const proxy = await startTcpProxy(REDIS_URL)
    cleanups.push(() => proxy.close())
    const broker = await startBroker({ redis_url: proxy.url, key_prefix: prefix }, true)
    await cycles('Redis', broker, proxy)
  }, 60_000)
})

describePostgres('recovery after a PostgreSQL outage', () => {
  it(`serves again within ${RECOVERY_BOUND_MS} ms of the restore (${CYCLES} outages of ${OUTAGE_MS} ms)`, async () => {
    const database = await createTestDatabase()
    cleanups.push(() => database.drop())
    const proxy = await startTcpProxy(database.url)
    cleanups.push(() => proxy.close())
    const broker = await startBroker({ database_url: proxy.url }, false)
    await cycles('PostgreSQL', broker, proxy)
  }, 60_000)
})
