/**
 * Anomaly rules driven by real traffic: real token exchanges against a real
 * broker, on PGlite and on PostgreSQL through the same code. Each rule trips
 * exactly where its baseline or threshold says and not before; `alert`
 * leaves the agent served and `quarantine` kills it within a second of the
 * request that tripped it (measured: the figures are printed); a lifted
 * quarantine is not re-imposed at once; and two broker instances on one
 * database act once.
 */
import { createHash, randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentsShow } from '../../src/cli/agents.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { Redis } from 'ioredis'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'

const ISSUER = 'https://mandate.test'
const DEV_USERS = 'https://users.dev.mandate.invalid'
const KEYS = { responder: 'responder-key-0123456789', auditor: 'auditor-key-0123456789' } as const
const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z, a Friday: 09:00 in Berlin
const HOUR = 3_600

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const basic = (id: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${id}-secret`).toString('base64')}` })

function policy(agent: string, extra: string, audiences: readonly string[] = ['https://demo.example']): string {
  return `agent: ${agent}
owner: ops@example.com
purpose: anomaly test
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(`${agent}-secret`).toString('hex')} }
users: [{ issuer: ${DEV_USERS} }]
grants:
${audiences.map((a) => `  - { audience: ${a}, scopes: [demo:read], default_scopes: [demo:read] }`).join('\n')}
token_ttl: { default: 300, max: 300 }
${extra}
`
}

const POLICIES: Record<string, string> = {
  'rate-agent': policy('rate-agent', 'anomalies: { rate: { action: quarantine, factor: 8, min_tokens: 2 } }'),
  'aud-agent': policy('aud-agent', 'anomalies: { new_audience: { action: alert } }', ['https://a.example', 'https://b.example']),
  'spike-agent': policy('spike-agent', 'anomalies: { user_spike: { action: alert, factor: 4, min_users: 3 } }'),
  // Its count and window come from the config's rule; the policy makes it a quarantine.
  'burst-agent': policy('burst-agent', 'anomalies: { denial_burst: { action: quarantine } }'),
  // The rule's own hours: the policy's would refuse the token the rule is to alert on.
  'hours-agent': policy('hours-agent', 'anomalies: { outside_hours: { action: alert, hours: "Mon-Fri 08:00-18:00", timezone: Europe/Berlin } }'),
  'pair-agent': policy('pair-agent', ''),
  'qpair-agent': policy('qpair-agent', 'anomalies: { denial_burst: { action: quarantine } }'),
}

interface AnomalyRecord {
  agent: string
  rule: string
  action: string
  detail: string
  revocation_id?: string
}

async function brokerConfig(dir: string, url: string | undefined, redis?: { url: string; prefix: string }): Promise<Config> {
  const policies = join(dir, 'policies')
  await mkdir(policies, { recursive: true })
  for (const [agent, text] of Object.entries(POLICIES)) await writeFile(join(policies, `${agent}.yaml`), text)
  return Config.parse({
    issuer: ISSUER,
    policies_dir: policies,
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    log: { level: 'silent' },
    ...(url === undefined ? {} : { storage: { database_url: url, ...(redis === undefined ? {} : { redis_url: redis.url, key_prefix: redis.prefix }) } }),
    admin: {
      keys: Object.entries(KEYS).map(([role, key]) => ({ name: `${role}-holder`, sha256: createHash('sha256').update(key).digest('hex'), roles: [role] })),
    },
    governance: { anomalies: { rules: { denial_burst: { action: 'alert', count: 5, window_seconds: 60 } }, cooldown_seconds: 3_600 } },
  })
}

/** Real exchanges and the admin API against one broker. */
function client(m: () => Mandate) {
  const userToken = async (sub: string) => {
    const res = await m().app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read"}' })
    return ((await res.json()) as { access_token: string }).access_token
  }
  const exchange = async (agent: string, sub: string, opts: { audience?: string; scope?: string } = {}) =>
    m().app.request('/oauth2/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(agent) },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: await userToken(sub),
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: opts.audience ?? 'https://demo.example',
        scope: opts.scope ?? 'demo:read',
      }).toString(),
    })
  const issue = async (agent: string, sub: string, audience?: string) => {
    const res = await exchange(agent, sub, audience === undefined ? {} : { audience })
    expect(res.status, await res.clone().text()).toBe(200)
  }
  /** A denial the log records: a scope the policy does not grant. */
  const deny = async (agent: string) => expect((await exchange(agent, 'mallory', { scope: 'demo:admin' })).status).toBe(400)
  const anomalies = async (agent: string): Promise<AnomalyRecord[]> => {
    await m().anomalies!.settled()
    const res = await m().app.request(`/admin/audit?event=agent.anomaly&agent=${agent}`, { headers: bearer(KEYS.auditor) })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { records: { record: AnomalyRecord }[] }
    return body.records.map((r) => r.record)
  }
  /** Milliseconds from now until the agent's next exchange is refused as a killed agent (unauthorized_client). */
  const untilRefused = async (agent: string): Promise<number> => {
    const start = performance.now()
    for (;;) {
      const res = await exchange(agent, 'alice')
      if (res.status === 400) {
        expect(((await res.json()) as { error: string }).error).toBe('unauthorized_client')
        return performance.now() - start
      }
      expect(res.status).toBe(200)
      if (performance.now() - start > 5_000) throw new Error(`${agent} still served 5 s after the request that tripped its rule`)
    }
  }
  return { exchange, issue, deny, anomalies, untilRefused }
}

function describeAnomalies(
  name: string,
  databaseUrl: () => Promise<{ url: string | undefined; done: () => Promise<void> }>,
  d: typeof describe = describe,
): void {
  d(`anomaly rules: ${name}`, () => {
    let dir: string
    let m: Mandate
    let now = (T0 - 85 * HOUR) * 1000
    let db: { url: string | undefined; done: () => Promise<void> }
    const c = client(() => m)

    beforeAll(async () => {
      db = await databaseUrl()
      dir = await mkdtemp(join(tmpdir(), 'mandate-anomaly-'))
      m = await composeMandate(await brokerConfig(dir, db.url), {
        dev: true,
        logger: createLogger('silent'),
        clock: () => now,
        loadSignals: { eventLoopLag: () => 0 },
      })
      // The 84 hours before T0: rate-agent one token an hour (a baseline of 0.5/h over 7 days),
      // spike-agent two new users an hour (1/h); each below its rule's minimum.
      for (let i = 84; i >= 1; i--) {
        now = (T0 - i * HOUR) * 1000
        await c.issue('rate-agent', 'alice')
        await c.issue('spike-agent', `old-${i}-a`)
        await c.issue('spike-agent', `old-${i}-b`)
      }
      now = T0 * 1000
    }, 120_000)

    afterAll(async () => {
      await m?.close().catch(() => {})
      await rm(dir, { recursive: true, force: true })
      await db?.done()
    })

    it('rate: quarantines above factor x the 7-day baseline, not at the minimum, and the kill holds within 1 s', async () => {
      for (let i = 0; i < 4; i++) await c.issue('rate-agent', 'alice') // 4 = 8 x 0.5/h: not above
      expect(await c.anomalies('rate-agent')).toEqual([])
      await c.issue('rate-agent', 'alice') // the 5th trips it
      const ms = await c.untilRefused('rate-agent')
      console.info(`[${name}] rate quarantine: first refused exchange ${ms.toFixed(0)} ms after the answer that tripped it`)
      expect(ms).toBeLessThan(1_000)
      const [found, ...more] = await c.anomalies('rate-agent')
      expect(more).toEqual([])
      expect(found).toMatchObject({ agent: 'rate-agent', rule: 'rate', action: 'quarantine' })
      // Read when evaluated: the 5th, or a few more that the loop above had answered by then.
      expect(found!.detail).toMatch(/^([5-9]|\d\d+) tokens this hour; 7-day baseline 0\.50\/h; trips above 8x the baseline and at 2 tokens or more$/)
      const kill = await m.revocations.get(found!.revocation_id!)
      expect(kill).toMatchObject({ target: { kind: 'agent', agent: 'rate-agent' }, reason: 'quarantine: rate', createdBy: 'mandate:anomaly' })
      const listed = await m.app.request('/admin/agents?state=quarantined', { headers: bearer(KEYS.auditor) })
      expect(((await listed.json()) as { agents: { agent: string }[] }).agents.map((a) => a.agent)).toEqual(['rate-agent'])
    })

    it('new_audience: alerts on the first token for an audience the agent never had, once, and keeps serving it', async () => {
      await c.issue('aud-agent', 'alice', 'https://a.example')
      await c.issue('aud-agent', 'bob', 'https://a.example')
      expect(await c.anomalies('aud-agent')).toEqual([]) // its first audience is no change
      await c.issue('aud-agent', 'alice', 'https://b.example')
      await c.issue('aud-agent', 'alice', 'https://b.example')
      const found = await c.anomalies('aud-agent')
      expect(found).toEqual([
        expect.objectContaining({ agent: 'aud-agent', rule: 'new_audience', action: 'alert', detail: 'first token for audience https://b.example', at: T0 }),
      ])
      await c.issue('aud-agent', 'carol', 'https://b.example')
      expect(m.revocations.records().filter((r) => r.target.kind === 'agent' && r.target.agent === 'aud-agent')).toEqual([])
    })

    it('user_spike: alerts when new users this hour exceed factor x the 7-day mean of new users per hour', async () => {
      // Baseline: 168 new users over the 7 days, 1/h; factor 4: trips above 4 (min_users 3 alone would trip at 3).
      for (const u of ['u1', 'u2', 'u3', 'u4']) await c.issue('spike-agent', u)
      await c.issue('spike-agent', 'u1') // a returning user is no new one
      expect(await c.anomalies('spike-agent')).toEqual([])
      await c.issue('spike-agent', 'u5')
      const [found, ...more] = await c.anomalies('spike-agent')
      expect(more).toEqual([])
      expect(found).toMatchObject({ rule: 'user_spike', action: 'alert' })
      expect(found!.detail).toContain('5 new users this hour; 7-day baseline 1.00/h')
      await c.issue('spike-agent', 'u6') // alert only: still served
    })

    it('denial_burst: quarantines at the count within the window; a lift is not followed by another at once', async () => {
      for (let i = 0; i < 4; i++) await c.deny('burst-agent')
      await c.issue('burst-agent', 'alice')
      expect(await c.anomalies('burst-agent')).toEqual([])
      await c.deny('burst-agent') // the 5th in the window
      const ms = await c.untilRefused('burst-agent')
      console.info(`[${name}] denial_burst quarantine: first refused exchange ${ms.toFixed(0)} ms after the answer that tripped it`)
      expect(ms).toBeLessThan(1_000)
      const [found] = await c.anomalies('burst-agent')
      expect(found).toMatchObject({ rule: 'denial_burst', action: 'quarantine' })
      expect(found!.detail).toContain('5 denials within 0 s; trips at 5 within 60 s')

      // Lifted two hours on, past the cool-down since the quarantine: the cool-down runs again from the lift.
      now += 2 * HOUR * 1000
      const lift = await m.app.request(`/admin/revocations/${found!.revocation_id ?? 'none'}`, { method: 'DELETE', headers: bearer(KEYS.responder) })
      expect(lift.status, await lift.clone().text()).toBe(200)
      await c.issue('burst-agent', 'alice')
      for (let i = 0; i < 6; i++) await c.deny('burst-agent')
      expect(await c.anomalies('burst-agent')).toHaveLength(1)
      await c.issue('burst-agent', 'alice')
    })

    it('mandate agents show prints the agent’s recent anomalies, human and --json', async () => {
      const server: ServerType = serve({ fetch: m.app.fetch, hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => server.once('listening', () => resolve()))
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      const saved = { key: process.env['MANDATE_ADMIN_KEY'], write: process.stdout.write, code: process.exitCode }
      const out: string[] = []
      process.stdout.write = (chunk: string) => out.push(chunk) > 0
      try {
        process.env['MANDATE_ADMIN_KEY'] = KEYS.auditor
        await agentsShow('burst-agent', { url })
        const human = out.join('')
        if (process.env['ANOMALY_PRINT'] === '1') saved.write.call(process.stdout, human)
        expect(human).toMatch(/recent anomalies\n[^\n]*\n│ at +│ rule +│ action +│ detail/)
        expect(human).toMatch(/denial_burst +│ quarantine \(kill [0-9a-f-]{36}\) +│ 5 denials within 0 s/)
        out.length = 0
        await agentsShow('burst-agent', { url, json: true })
        const body = JSON.parse(out.join('')) as { recent_anomalies: { rule: string; action: string; revocation_id: string | null }[] }
        expect(body.recent_anomalies).toEqual([expect.objectContaining({ rule: 'denial_burst', action: 'quarantine', revocation_id: expect.any(String) })])
        out.length = 0
        await agentsShow('hours-agent', { url })
        expect(out.join('')).toMatch(/recent anomalies\nnone/)
        expect(process.exitCode ?? 0).toBe(0)
      } finally {
        process.stdout.write = saved.write
        process.exitCode = saved.code
        if (saved.key === undefined) delete process.env['MANDATE_ADMIN_KEY']
        else process.env['MANDATE_ADMIN_KEY'] = saved.key
        server.close()
      }
    })

    it('outside_hours: alerts on a token outside the rule’s hours in their time zone', async () => {
      now = (T0 + 8 * HOUR + 1800) * 1000 // Friday 16:30 UTC, 17:30 in Berlin: inside
      await c.issue('hours-agent', 'alice')
      expect(await c.anomalies('hours-agent')).toEqual([])
      now = (T0 + 9 * HOUR + 1800) * 1000 // 17:30 UTC would be inside; 18:30 in Berlin is not
      await c.issue('hours-agent', 'alice')
      const found = await c.anomalies('hours-agent')
      expect(found).toEqual([
        expect.objectContaining({ rule: 'outside_hours', action: 'alert', detail: 'token at Fri 18:30 Europe/Berlin, outside Mon-Fri 08:00-18:00' }),
      ])
    })
  })
}

describeAnomalies('PGlite', async () => ({ url: undefined, done: async () => {} }))

describePostgres('anomaly rules: PostgreSQL', () => {
  let pg: TestDatabase
  beforeAll(async () => {
    pg = await createTestDatabase()
  })
  afterAll(async () => pg?.drop())
  describeAnomalies('PostgreSQL', async () => ({ url: pg.url, done: async () => {} }))

  describe('two broker instances on one database and one Redis', () => {
    let dir: string
    const brokers: Mandate[] = []
    let db: TestDatabase
    const prefix = `mandate-test-anomaly-${randomUUID()}:`
    beforeAll(async () => {
      if (!(await redisAvailable('anomaly rules: two instances'))) return
      db = await createTestDatabase()
      dir = await mkdtemp(join(tmpdir(), 'mandate-anomaly-pair-'))
      for (const instance of ['a', 'b']) {
        const config = await brokerConfig(join(dir, instance), db.url, { url: REDIS_URL, prefix })
        brokers.push(
          await composeMandate(
            { ...config, instance_id: `anomaly-${instance}` },
            { dev: true, logger: createLogger('silent'), clock: () => T0 * 1000, loadSignals: { eventLoopLag: () => 0 } },
          ),
        )
      }
    }, 60_000)
    afterAll(async () => {
      for (const b of brokers) await b.close().catch(() => {})
      if (dir !== undefined) await rm(dir, { recursive: true, force: true })
      await db?.drop()
      const redis = new Redis(REDIS_URL, { ...REDIS_CLIENT_OPTIONS, lazyConnect: true })
      await redis
        .connect()
        .then(() => deletePrefix(redis, prefix))
        .finally(() => redis.disconnect())
    })

    it('a quarantine made on one holds on the other within 1 s of the request that tripped it', async () => {
      const [a, b] = [client(() => brokers[0]!), client(() => brokers[1]!)]
      for (let i = 0; i < 4; i++) await a.deny('qpair-agent')
      await b.issue('qpair-agent', 'alice')
      await a.deny('qpair-agent') // the 5th, on A
      const ms = await b.untilRefused('qpair-agent')
      console.info(
        `[PostgreSQL + Redis] denial_burst quarantine made on instance A: first refused exchange on B ${ms.toFixed(0)} ms after the answer that tripped it`,
      )
      expect(ms).toBeLessThan(1_000)
      const kills = brokers[1]!.revocations.records().filter((r) => r.target.kind === 'agent' && r.target.agent === 'qpair-agent')
      expect(kills.map((k) => [k.reason, k.createdBy])).toEqual([['quarantine: denial_burst', 'mandate:anomaly']])
    })

    it('act once for a burst both of them see', async () => {
      const [a, b] = [client(() => brokers[0]!), client(() => brokers[1]!)]
      for (let i = 0; i < 2; i++) await Promise.all([a.deny('pair-agent'), b.deny('pair-agent')])
      // Both now hold 4 in the window; the next pair takes each of them past the count at once.
      await Promise.all([a.deny('pair-agent'), b.deny('pair-agent')])
      await Promise.all([a.deny('pair-agent'), b.deny('pair-agent')])
      await Promise.all(brokers.map((x) => x.anomalies!.settled()))
      const seen = [...(await a.anomalies('pair-agent')), ...(await b.anomalies('pair-agent'))]
      // Both read the one log: the one record, twice.
      expect(seen.map((r) => [r.rule, r.action])).toEqual([
        ['denial_burst', 'alert'],
        ['denial_burst', 'alert'],
      ])
    })
  })
})
