/**
 * The agent inventory over a broker populated by real exchanges, on PGlite
 * and on PostgreSQL through the same code: the usage summaries the log's
 * group statement keeps (counts, distinct users, the 24 h and 30 d windows),
 * states (expiring, expired, killed, unknown from an id only the log holds),
 * filters, pages, RBAC and junk queries; and the invariant that the
 * summaries equal a recount from the log itself.
 */
import { createHash } from 'node:crypto'
import { cp, mkdtemp, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { serve, type ServerType } from '@hono/node-server'
import { sql } from 'drizzle-orm'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentsList, agentsShow } from '../../src/cli/agents.js'
import { EXIT } from '../../src/cli/exit-codes.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { openDatabase } from '../../src/storage/database.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const ISSUER = 'https://mandate.test'
const DEV_USERS = 'https://users.dev.mandate.invalid'
const KEYS = { responder: 'responder-key-0123456789', auditor: 'auditor-key-0123456789', admin: 'admin-key-0123456789' } as const
const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z
const DAY = 86_400

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` })

function policy(agent: string, expires: string, owner = 'ops@example.com'): string {
  return `agent: ${agent}
owner: ${owner}
purpose: inventory test
expires: ${expires}
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(`${agent}-secret`).toString('hex')} }
users: [{ issuer: ${DEV_USERS} }]
grants: [{ audience: https://demo.example, scopes: [demo:read, demo:write], default_scopes: [demo:read] }]
token_ttl: { default: 300, max: 300 }
`
}

interface Entry {
  agent: string
  state: string
  owner: string | null
  days_left: number | null
  last_token_at: string | null
  usage: { tokens_24h: number; denials_24h: number; users_24h: number; tokens_30d: number; denials_30d: number; users_30d: number }
  kills: { reason: string }[]
}
interface ListBody {
  agents: Entry[]
  total: number
  next_offset: number | null
  revocations_fresh: boolean
}

function describeInventory(
  name: string,
  databaseUrl: () => Promise<{ url: string | undefined; done: () => Promise<void> }>,
  d: typeof describe = describe,
): void {
  d(`agent inventory: ${name}`, () => {
    let dir: string
    let m: Mandate
    let now = T0 * 1000
    let db: { url: string | undefined; done: () => Promise<void> }
    const get = (path: string, key?: string) => m.app.request(path, { headers: key === undefined ? {} : bearer(key) })
    const list = async (query = '') => {
      const res = await get(`/admin/agents${query}`, KEYS.auditor)
      expect(res.status, await res.clone().text()).toBe(200)
      expect(res.headers.get('cache-control')).toBe('no-store')
      return (await res.json()) as ListBody
    }
    const userToken = async (sub: string) => {
      const res = await m.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read demo:write"}' })
      return ((await res.json()) as { access_token: string }).access_token
    }
    const exchange = (agent: string, secret: string, subjectToken: string, scope = 'demo:read') =>
      m.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(agent, secret) },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: subjectToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: 'https://demo.example',
          scope,
        }).toString(),
      })
    const issue = async (agent: string, secret: string, sub: string, scope?: string) => {
      const res = await exchange(agent, secret, await userToken(sub), scope)
      expect(res.status, await res.clone().text()).toBe(200)
      return ((await res.json()) as { access_token: string }).access_token
    }

    beforeAll(async () => {
      db = await databaseUrl()
      dir = await mkdtemp(join(tmpdir(), 'mandate-inventory-'))
      const policies = join(dir, 'policies')
      // The human-approval walkthrough's agent (demo-payer) is not this test's: its figures count the exchange agents only.
      await cp(join(root, 'policies/dev'), policies, { recursive: true, filter: (f) => !f.endsWith('demo-payer.yaml') })
      await writeFile(join(policies, 'soon-agent.yaml'), policy('soon-agent', '2027-01-20', 'team-b@example.com'))
      await writeFile(join(policies, 'old-agent.yaml'), policy('old-agent', '2027-01-01'))
      await writeFile(join(policies, 'gone-agent.yaml'), policy('gone-agent', '2030-01-01'))
      const config = Config.parse({
        issuer: ISSUER,
        policies_dir: policies,
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
        log: { level: 'silent' },
        ...(db.url === undefined ? {} : { storage: { database_url: db.url } }),
        admin: {
          keys: Object.entries(KEYS).map(([role, key]) => ({ name: `${role}-holder`, sha256: createHash('sha256').update(key).digest('hex'), roles: [role] })),
        },
      })
      m = await composeMandate(config, { dev: true, logger: createLogger('silent'), clock: () => now, filePollMs: 50, loadSignals: { eventLoopLag: () => 0 } })

      // Day 0: demo-agent for alice and bob, one denial; a delegation to demo-subagent; gone-agent once.
      const parent = await issue('demo-agent', 'demo-secret', 'alice')
      await issue('demo-agent', 'demo-secret', 'bob', 'demo:read demo:write')
      expect((await exchange('demo-agent', 'demo-secret', await userToken('alice'), 'demo:admin')).status).toBe(400)
      const sub = await m.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('demo-subagent', 'demo-sub-secret') },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: parent,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: 'https://demo.example',
          scope: 'demo:read',
        }).toString(),
      })
      expect(sub.status, await sub.clone().text()).toBe(200)
      await issue('gone-agent', 'gone-agent-secret', 'dave')
      // Two days later: demo-agent twice for alice, once for carol.
      now += 2 * DAY * 1000
      await issue('demo-agent', 'demo-secret', 'alice')
      await issue('demo-agent', 'demo-secret', 'alice')
      await issue('demo-agent', 'demo-secret', 'carol')
      // gone-agent's policy is removed: only the log still knows it.
      await unlink(join(policies, 'gone-agent.yaml'))
      const bound = Date.now() + 10_000
      while (Date.now() < bound && (await list('?state=unknown')).total === 0) await new Promise((r) => setTimeout(r, 50))
      const kill = await m.app.request('/admin/revocations', {
        method: 'POST',
        headers: { ...bearer(KEYS.responder), 'content-type': 'application/json' },
        body: JSON.stringify({ agent: 'demo-subagent', reason: 'inventory test' }),
      })
      expect(kill.status, await kill.clone().text()).toBe(201)
    }, 60_000)

    afterAll(async () => {
      await m?.close().catch(() => {})
      await rm(dir, { recursive: true, force: true })
      await db?.done()
    })

    it('counts tokens, denials and distinct users per window, from the summaries', async () => {
      const body = await list()
      const demo = body.agents.find((a) => a.agent === 'demo-agent')!
      expect(demo.state).toBe('active')
      expect(demo.owner).toBe('platform-team@example.com')
      // The three of the window were all issued in its last hour (the sparkline's last point).
      expect(demo.usage).toEqual({
        tokens_24h: 3,
        tokens_by_hour: [...(Array(23).fill(0) as number[]), 3],
        denials_24h: 0,
        users_24h: 2,
        tokens_30d: 5,
        denials_30d: 1,
        users_30d: 3,
      })
      expect(demo.last_token_at).toBe(new Date(now).toISOString().replace(/\.\d{3}Z$/, '.000Z'))
      expect(body.revocations_fresh).toBe(true)
    })

    it('says which agents are expiring, expired, killed and unknown', async () => {
      const states = Object.fromEntries((await list()).agents.map((a) => [a.agent, a.state]))
      expect(states).toEqual({
        'demo-agent': 'active',
        'demo-subagent': 'killed',
        'gone-agent': 'unknown',
        'old-agent': 'expired',
        'soon-agent': 'expiring',
      })
      const gone = (await list('?state=unknown')).agents
      expect(gone.map((a) => [a.agent, a.owner, a.usage.tokens_30d])).toEqual([['gone-agent', null, 1]])
      expect((await list('?state=killed')).agents[0]!.kills.map((k) => k.reason)).toEqual(['inventory test'])
    })

    it('filters by owner and expiry, sorts and pages', async () => {
      expect((await list('?owner=team-b%40example.com')).agents.map((a) => a.agent)).toEqual(['soon-agent'])
      expect((await list('?expiring=14d')).agents.map((a) => a.agent)).toEqual(['old-agent', 'soon-agent'])
      expect((await list('?sort=tokens_30d&limit=2')).agents.map((a) => a.agent)).toEqual(['demo-agent', 'demo-subagent'])
      const first = await list('?limit=2')
      expect(first.total).toBe(5)
      expect(first.next_offset).toBe(2)
      const rest = await list('?limit=2&offset=4')
      expect(rest.agents.map((a) => a.agent)).toEqual(['soon-agent'])
      expect(rest.next_offset).toBeNull()
    })

    it('shows one agent: per-grant usage, recent denials, chains, kills', async () => {
      const res = await get('/admin/agents/demo-agent', KEYS.auditor)
      expect(res.status).toBe(200)
      const body = (await res.json()) as {
        grant_usage: { audience: string; scope: string; tokens_30d: number }[]
        recent_denials: { error: string; reason: string }[]
        chains: { actors: string[] }[]
      }
      expect(body.grant_usage.map((g) => [g.scope, g.tokens_30d])).toEqual([
        ['demo:read', 5],
        ['demo:write', 1],
      ])
      expect(body.recent_denials.map((d) => d.error)).toEqual(['invalid_scope'])
      expect(body.chains.map((c) => c.actors)).toEqual([['demo-subagent', 'demo-agent']])
      const killed = (await (await get('/admin/agents/demo-subagent', KEYS.auditor)).json()) as { state: string; kills: unknown[] }
      expect(killed.state).toBe('killed')
      expect(killed.kills).toHaveLength(1)
      expect((await get('/admin/agents/nobody-at-all', KEYS.auditor)).status).toBe(404)
    })

    it.each(['/admin/agents', '/admin/agents/demo-agent'])('%s: no key 401, wrong key 401, responder 403', async (path) => {
      const missing = await get(path)
      expect(missing.status).toBe(401)
      expect(missing.headers.get('cache-control')).toBe('no-store')
      expect((await get(path, 'not-a-key')).status).toBe(401)
      expect((await get(path, KEYS.responder)).status).toBe(403)
      expect((await get(path, KEYS.admin)).status).toBe(200)
    })

    it.each([
      ['?bogus=1', 'unknown parameter: bogus'],
      ['?state=sleepy', 'invalid state'],
      ['?expiring=soon', 'invalid expiring'],
      ['?limit=0', 'invalid limit'],
      ['?limit=501', 'invalid limit'],
      ['?offset=-1', 'invalid offset'],
      ['?sort=random', 'invalid sort'],
      ['?owner=a%00b', 'invalid owner'],
    ])('GET /admin/agents%s is 400 (%s)', async (query, message) => {
      const res = await get(`/admin/agents${query}`, KEYS.auditor)
      expect(res.status).toBe(400)
      expect(res.headers.get('cache-control')).toBe('no-store')
      const body = (await res.json()) as { error: string; error_description: string }
      expect(body.error).toBe('invalid_request')
      expect(body.error_description).toContain(message)
    })

    it('mandate agents list and show print the inventory over HTTP, and exit non-zero on a refusal', async () => {
      const server: ServerType = serve({ fetch: m.app.fetch, hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => server.once('listening', () => resolve()))
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      const saved = { key: process.env['MANDATE_ADMIN_KEY'], write: process.stdout.write, err: process.stderr.write, code: process.exitCode }
      const out: string[] = []
      process.stdout.write = (chunk: string) => out.push(chunk) > 0
      process.stderr.write = (chunk: string) => out.push(chunk) > 0
      try {
        process.env['MANDATE_ADMIN_KEY'] = KEYS.auditor
        await agentsList({ url })
        await agentsShow('demo-agent', { url })
        const human = out.join('')
        if (process.env['INVENTORY_PRINT'] === '1') saved.write.call(process.stdout, human)
        expect(human).toMatch(/demo-agent +│ active +│ platform-team@example\.com/)
        expect(human).toMatch(/gone-agent +│ unknown/)
        expect(human).toMatch(/│ 3 \/ 2 +│ 5 \/ 3 +│/)
        expect(human).toContain('5 agents')
        expect(human).toContain('demo-agent -> demo-subagent')
        expect(human).toContain('invalid_scope')
        out.length = 0
        await agentsList({ url, json: true })
        expect((JSON.parse(out.join('')) as ListBody).total).toBe(5)
        expect(process.exitCode ?? 0).toBe(0)
        process.env['MANDATE_ADMIN_KEY'] = KEYS.responder
        await agentsList({ url })
        expect(process.exitCode).toBe(EXIT.AUTH)
      } finally {
        process.stdout.write = saved.write
        process.stderr.write = saved.err
        process.exitCode = saved.code
        if (saved.key === undefined) delete process.env['MANDATE_ADMIN_KEY']
        else process.env['MANDATE_ADMIN_KEY'] = saved.key
        server.close()
      }
    })

    // Last: it closes the broker to read its database.
    it('the summaries equal a recount from the log', async () => {
      await m.close()
      const database = await openDatabase(db.url, { dataDir: join(dir, 'data') })
      try {
        // drizzle's execute answers rows (postgres.js) or { rows } (PGlite).
        const all = async (q: string): Promise<Record<string, unknown>[]> => {
          const r: unknown = await database.db.execute(sql.raw(q))
          const list = Array.isArray(r) ? r : ((r as { rows?: unknown[] }).rows ?? [])
          return JSON.parse(JSON.stringify(list)) as Record<string, unknown>[]
        }
        const same = async (summary: string, recount: string) => {
          const [a, b] = [await all(summary), await all(recount)]
          expect(b.length).toBeGreaterThan(0)
          expect(a).toEqual(b)
        }
        await same(
          `select agent, day::int, tokens::int, denials::int, last_token_at::bigint::text as last from agent_usage_day order by 1, 2`,
          `select agent, floor(extract(epoch from at) / 86400)::int as day, (count(*) filter (where event = 'token.issued'))::int as tokens,
             (count(*) filter (where event = 'token.denied'))::int as denials, max(extract(epoch from at)) filter (where event = 'token.issued')::bigint::text as last
           from audit_log where event in ('token.issued', 'token.denied') group by 1, 2 order by 1, 2`,
        )
        await same(
          `select agent, hour::int, tokens::int, denials::int from agent_usage_hour order by 1, 2`,
          `select agent, floor(extract(epoch from at) / 3600)::int as hour, (count(*) filter (where event = 'token.issued'))::int as tokens,
             (count(*) filter (where event = 'token.denied'))::int as denials from audit_log where event in ('token.issued', 'token.denied') group by 1, 2 order by 1, 2`,
        )
        await same(
          `select agent, audience, scope, day::int, tokens::int from agent_grant_usage_day where tokens > 0 order by 1, 2, 3, 4`,
          `select agent, record::json->>'aud' as audience, s.scope, floor(extract(epoch from at) / 86400)::int as day, count(*)::int as tokens
           from audit_log, json_array_elements_text(record::json->'scopes') as s(scope) where event = 'token.issued' group by 1, 2, 3, 4 order by 1, 2, 3, 4`,
        )
        await same(
          `select agent, sub_iss, sub, first_at::text as f, last_at::text as l from agent_users order by 1, 2, 3`,
          `select agent, sub_iss, sub, min(extract(epoch from at))::bigint::text as f, max(extract(epoch from at))::bigint::text as l
           from audit_log where event = 'token.issued' group by 1, 2, 3 order by 1, 2, 3`,
        )
      } finally {
        await database.close()
      }
    })
  })
}

describeInventory('PGlite', async () => ({ url: undefined, done: async () => {} }))

let pg: TestDatabase | undefined
describeInventory(
  'PostgreSQL',
  async () => {
    pg = await createTestDatabase()
    return { url: pg.url, done: async () => pg?.drop() }
  },
  describePostgres,
)
