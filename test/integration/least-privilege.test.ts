/**
 * Least privilege and `audit show` over a broker populated by real
 * exchanges, on PGlite and on PostgreSQL through the same code: the
 * summaries of denials per requested grant and of delegation depth (and
 * that they equal a recount from the log), GET /admin/policy/unused and its
 * evidence thresholds, GET /admin/audit/requests/{id} after a real denial
 * (whose caller sees only the standard error, a request id and an
 * `error_uri`), and the commands as a user runs them (`bin/mandate.js`):
 * `policy unused`, `policy shrink` (a diff that keeps comments, `--write`),
 * `audit show`.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { serve, type ServerType } from '@hono/node-server'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EXIT } from '../../src/cli/exit-codes.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { loadPolicies } from '../../src/policy/load.js'
import { openDatabase } from '../../src/storage/database.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const ISSUER = 'https://mandate.test'
const DEV_USERS = 'https://users.dev.mandate.invalid'
const KEYS = { responder: 'responder-key-0123456789', auditor: 'auditor-key-0123456789' } as const
const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z
const DAY = 86_400
const DEMO = 'https://demo.example'
const UNUSED = 'https://unused.example'

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` })
const secretHash = (agent: string) => hashClientSecret(`${agent}-secret`).toString('hex')

const LP_AGENT = `# Least-privilege test agent: these comments must survive a shrink.
agent: lp-agent
owner: lp-team@example.com
purpose: least privilege test
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${secretHash('lp-agent')} }
users: [{ issuer: ${DEV_USERS} }]
grants:
  # The API it calls every day.
  - audience: ${DEMO}
    scopes: [demo:read, demo:write, demo:admin] # admin: asked for, never held by its users
    default_scopes: [demo:read, demo:write]
  # A second API it never called.
  - audience: ${UNUSED}
    scopes: [x:read]
token_ttl: { default: 300, max: 300 }
delegation:
  max_depth: 3 # deeper than it ever delegates
  sub_agents: [lp-sub]
`
const simple = (agent: string, extra = '') => `agent: ${agent}
owner: lp-team@example.com
purpose: least privilege test
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${secretHash(agent)} }
users: [{ issuer: ${DEV_USERS} }]
grants: [{ audience: ${DEMO}, scopes: [demo:read] }]
token_ttl: { default: 300, max: 300 }
${extra}`

interface UnusedAgent {
  agent: string
  tokens: number
  suggest: boolean
  reason: string | null
  unused_audiences: string[]
  unused_scopes: { audience: string; scope: string }[]
  depth: { granted: number; used: number; unused: boolean }
  only_denied: { audience: string; scope: string | null; denials: number }[]
}

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** `bin/mandate.js` as a user runs it. */
function mandate(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

function describeLeastPrivilege(
  name: string,
  databaseUrl: () => Promise<{ url: string | undefined; done: () => Promise<void> }>,
  d: typeof describe = describe,
): void {
  d(`least privilege and audit show: ${name}`, () => {
    let dir: string
    let policies: string
    let m: Mandate
    let server: ServerType
    let url: string
    let now = T0 * 1000
    let db: { url: string | undefined; done: () => Promise<void> }
    let denial: { status: number; requestId: string | null; body: Record<string, unknown> }
    const get = (path: string, key?: string) => m.app.request(path, { headers: key === undefined ? {} : bearer(key) })
    const userToken = async (sub: string) => {
      const res = await m.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read demo:write"}' })
      return ((await res.json()) as { access_token: string }).access_token
    }
    const exchange = (agent: string, subjectToken: string, form: Record<string, string>, headers: Record<string, string> = {}) =>
      m.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(agent, `${agent}-secret`), ...headers },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: subjectToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: DEMO,
          ...form,
        }).toString(),
      })
    const issue = async (agent: string, subjectToken: string, scope: string) => {
      const res = await exchange(agent, subjectToken, { scope })
      expect(res.status, await res.clone().text()).toBe(200)
      return ((await res.json()) as { access_token: string }).access_token
    }
    const unused = async (query: string) => {
      const res = await get(`/admin/policy/unused${query}`, KEYS.auditor)
      expect(res.status, await res.clone().text()).toBe(200)
      expect(res.headers.get('cache-control')).toBe('no-store')
      return (await res.json()) as { since_days: number; min_tokens: number; agents: UnusedAgent[] }
    }
    const cli = (args: string[], key: string = KEYS.auditor) => mandate([...args, '--url', url], { MANDATE_ADMIN_KEY: key, NO_COLOR: '1' })

    beforeAll(async () => {
      db = await databaseUrl()
      dir = await mkdtemp(join(tmpdir(), 'mandate-least-privilege-'))
      policies = join(dir, 'policies')
      await cp(join(root, 'policies/dev'), policies, { recursive: true })
      await writeFile(join(policies, 'lp-agent.yaml'), LP_AGENT)
      await writeFile(
        join(policies, 'lp-sub.yaml'),
        simple('lp-sub', 'delegation: { max_depth: 2 }\n').replace(`users: [{ issuer: ${DEV_USERS} }]`, 'users: []'),
      )
      await writeFile(join(policies, 'young-agent.yaml'), simple('young-agent'))
      const config = Config.parse({
        issuer: ISSUER,
        policies_dir: policies,
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
        log: { level: 'silent' },
        governance: { shrink_min_tokens: 3 },
        ...(db.url === undefined ? {} : { storage: { database_url: db.url } }),
        admin: {
          keys: Object.entries(KEYS).map(([role, key]) => ({ name: `${role}-holder`, sha256: createHash('sha256').update(key).digest('hex'), roles: [role] })),
        },
      })
      m = await composeMandate(config, { dev: true, logger: createLogger('silent'), clock: () => now, filePollMs: 50, loadSignals: { eventLoopLag: () => 0 } })

      // Day 0: lp-agent's first token, with demo:write (which the window will not see), handed down to lp-sub.
      const first = await issue('lp-agent', await userToken('alice'), 'demo:read demo:write')
      await issue('lp-sub', first, 'demo:read')
      // Day 31: three tokens with demo:read only, one handed down to lp-sub (a chain of two); demo:admin asked for and denied.
      now += 31 * DAY * 1000
      const parent = await issue('lp-agent', await userToken('alice'), 'demo:read')
      await issue('lp-agent', await userToken('bob'), 'demo:read')
      await issue('lp-sub', parent, 'demo:read')
      await issue('lp-agent', await userToken('carol'), 'demo:read')
      await issue('young-agent', await userToken('alice'), 'demo:read')
      const denied = await exchange('lp-agent', await userToken('alice'), { scope: 'demo:admin' }, { 'x-request-id': 'lp-denied-1' })
      denial = { status: denied.status, requestId: denied.headers.get('x-request-id'), body: (await denied.json()) as Record<string, unknown> }
      // A denial that named no scope counts under the audience as a whole.
      expect((await exchange('lp-agent', 'not-a-token', { audience: UNUSED })).status).toBe(400)

      server = serve({ fetch: m.app.fetch, hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => server.once('listening', () => resolve()))
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    }, 60_000)

    afterAll(async () => {
      server?.close()
      await m?.close().catch(() => {})
      await rm(dir, { recursive: true, force: true })
      await db?.done()
    })

    it('a denied caller sees the standard error, its request id and an error_uri naming it (RFC 6749 §5.2), nothing more', () => {
      expect(denial.status).toBe(400)
      expect(denial.requestId).toBe('lp-denied-1')
      expect(denial.body).toEqual({ error: 'invalid_scope', error_description: expect.any(String), error_uri: 'urn:mandate:request:lp-denied-1' })
      expect(JSON.stringify(denial.body)).not.toContain('demo:admin')
    })

    it('reports unused audiences, scopes and depth, and grants only ever denied', async () => {
      const body = await unused('?since=30d')
      expect(body.since_days).toBe(30)
      expect(body.min_tokens).toBe(3)
      const lp = body.agents.find((a) => a.agent === 'lp-agent')!
      expect(lp.suggest).toBe(true)
      expect(lp.tokens).toBe(3)
      expect(lp.unused_audiences).toEqual([UNUSED])
      expect(lp.unused_scopes).toEqual([
        { audience: DEMO, scope: 'demo:admin' },
        { audience: DEMO, scope: 'demo:write' },
      ])
      expect(lp.depth).toEqual({ granted: 3, used: 2, unused: true })
      expect(lp.only_denied).toEqual([
        { audience: DEMO, scope: 'demo:admin', denials: 1 },
        { audience: UNUSED, scope: null, denials: 1 },
      ])
      // A window that reaches day 0 sees demo:write used.
      const wide = (await unused('?since=31d&agent=lp-agent')).agents
      expect(wide.map((a) => a.agent)).toEqual(['lp-agent'])
      expect(wide[0]!.unused_scopes).toEqual([{ audience: DEMO, scope: 'demo:admin' }])
    })

    it('suggests nothing for an agent younger than the window or with too few tokens, and says why', async () => {
      const agents = (await unused('')).agents
      const young = agents.find((a) => a.agent === 'young-agent')!
      expect(young.suggest).toBe(false)
      expect(young.reason).toContain('less than the 30-day window')
      expect(young.unused_scopes).toEqual([])
      const lp = (await unused('?since=2d&agent=lp-agent')).agents[0]!
      expect(lp.suggest).toBe(true)
      const demo = agents.find((a) => a.agent === 'demo-agent')!
      expect(demo.suggest).toBe(false)
      expect(demo.reason).toContain('never issued')
      // lp-sub is old enough for the window but had one token in it: fewer than shrink_min_tokens.
      const sub = agents.find((a) => a.agent === 'lp-sub')!
      expect(sub.suggest).toBe(false)
      expect(sub.reason).toContain('fewer than governance.shrink_min_tokens (3)')
      expect(sub.depth).toEqual({ granted: 2, used: 2, unused: false })
    })

    it.each([
      ['?bogus=1', 400, 'unknown parameter: bogus'],
      ['?since=30', 400, 'invalid since'],
      ['?since=0d', 400, 'invalid since'],
      ['?since=3651d', 400, 'invalid since'],
      ['?agent=a%20b', 400, 'invalid agent'],
      ['?agent=nobody', 404, 'no policy'],
    ])('GET /admin/policy/unused%s is %i', async (query, status, message) => {
      const res = await get(`/admin/policy/unused${query}`, KEYS.auditor)
      expect(res.status).toBe(status)
      expect(res.headers.get('cache-control')).toBe('no-store')
      const body = (await res.json()) as { error: string; error_description: string; agents?: unknown }
      expect(body.error).toBe(status === 404 ? 'not_found' : 'invalid_request')
      expect(body.error_description).toContain(message)
      expect(body.agents).toBeUndefined()
    })

    it.each(['/admin/policy/unused', '/admin/audit/requests/lp-denied-1'])('%s: no key 401, wrong key 401, responder 403', async (path) => {
      const missing = await get(path)
      expect(missing.status).toBe(401)
      expect(missing.headers.get('cache-control')).toBe('no-store')
      expect((await get(path, 'not-a-key')).status).toBe(401)
      expect((await get(path, KEYS.responder)).status).toBe(403)
    })

    it('GET /admin/audit/requests/{id} returns the denial with its reason; an unknown id is 404, a malformed one 400', async () => {
      const res = await get('/admin/audit/requests/lp-denied-1', KEYS.auditor)
      expect(res.status).toBe(200)
      const body = (await res.json()) as { request_id: string; records: { record: Record<string, unknown> }[] }
      expect(body.request_id).toBe('lp-denied-1')
      expect(body.records).toHaveLength(1)
      expect(body.records[0]!.record).toMatchObject({
        event: 'token.denied',
        agent: 'lp-agent',
        sub: 'alice',
        sub_iss: DEV_USERS,
        error: 'invalid_scope',
        requested_aud: [DEMO],
        requested_scopes: ['demo:admin'],
        request_id: 'lp-denied-1',
      })
      expect(body.records[0]!.record['reason']).toEqual(expect.any(String))
      const missing = await get('/admin/audit/requests/never-seen', KEYS.auditor)
      expect(missing.status).toBe(404)
      expect(((await missing.json()) as { error: string }).error).toBe('not_found')
      const bad = await get('/admin/audit/requests/a%3Bb', KEYS.auditor)
      expect(bad.status).toBe(400)
      expect(((await bad.json()) as { error: string }).error).toBe('invalid_request')
    })

    it('mandate audit show prints the denial from its error_uri; --json the records', async () => {
      const human = await cli(['audit', 'show', 'urn:mandate:request:lp-denied-1'])
      expect(human.stderr).toBe('')
      expect(human.code).toBe(0)
      if (process.env['LEAST_PRIVILEGE_PRINT'] === '1') process.stdout.write(human.stdout)
      expect(human.stdout).toContain('request lp-denied-1: 1 record')
      expect(human.stdout).toMatch(/event +token\.denied/)
      expect(human.stdout).toMatch(/agent +lp-agent/)
      expect(human.stdout).toMatch(/error +invalid_scope/)
      expect(human.stdout).toMatch(/requested_scopes +demo:admin/)
      expect(human.stdout).toMatch(/at +2027-02-15T08:00:00\.000Z/)
      const json = await cli(['audit', 'show', 'lp-denied-1', '--json'])
      expect((JSON.parse(json.stdout) as { records: unknown[] }).records).toHaveLength(1)
      expect((await cli(['audit', 'show', 'never-seen'])).code).toBe(EXIT.FAILED)
      expect((await cli(['audit', 'show', 'lp-denied-1'], KEYS.responder)).code).toBe(EXIT.AUTH)
      expect((await cli(['audit', 'show', 'a;b'])).code).toBe(EXIT.USAGE)
    })

    it('mandate policy unused prints each agent, or why nothing is suggested; --json the answer', async () => {
      const human = await cli(['policy', 'unused', '--since', '30d'])
      expect(human.code).toBe(0)
      if (process.env['LEAST_PRIVILEGE_PRINT'] === '1') process.stdout.write(human.stdout)
      expect(human.stdout).toContain('lp-agent (owner lp-team@example.com): 3 tokens in the window')
      expect(human.stdout).toContain(`- unused audience: ${UNUSED}`)
      expect(human.stdout).toContain(`- unused scope: demo:write at ${DEMO}`)
      expect(human.stdout).toContain('- unused delegation depth: max_depth 3, used 2')
      expect(human.stdout).toContain(`! only ever denied: scope demo:admin at ${DEMO} (1 denial)`)
      expect(human.stdout).toMatch(/young-agent .*\n {2}nothing suggested: first issued a token 0 day\(s\) ago/)
      const json = await cli(['policy', 'unused', 'lp-agent', '--json'])
      expect((JSON.parse(json.stdout) as { agents: UnusedAgent[] }).agents.map((a) => a.agent)).toEqual(['lp-agent'])
      expect((await cli(['policy', 'unused', '--since', 'a month'])).code).toBe(EXIT.USAGE)
    })

    it('mandate policy shrink prints a diff that keeps comments and layout; --write applies it and the result is a valid policy', async () => {
      const diff = await cli(['policy', 'shrink', 'lp-agent', '--since', '30d', '--dir', policies])
      expect(diff.stderr).toBe('')
      expect(diff.code).toBe(0)
      if (process.env['LEAST_PRIVILEGE_PRINT'] === '1') process.stdout.write(diff.stdout)
      const lines = diff.stdout.split('\n')
      expect(lines.filter((l) => /^[-+][^-+]/.test(l))).toEqual([
        '-    scopes: [demo:read, demo:write, demo:admin] # admin: asked for, never held by its users',
        '-    default_scopes: [demo:read, demo:write]',
        '-  # A second API it never called.',
        `-  - audience: ${UNUSED}`,
        '-    scopes: [x:read]',
        '+    scopes: [demo:read] # admin: asked for, never held by its users',
        '+    default_scopes: [demo:read]',
        '-  max_depth: 3 # deeper than it ever delegates',
        '+  max_depth: 2 # deeper than it ever delegates',
      ])
      expect(await readFile(join(policies, 'lp-agent.yaml'), 'utf8')).toBe(LP_AGENT)

      const written = await cli(['policy', 'shrink', 'lp-agent', '--since', '30d', '--dir', policies, '--write'])
      expect(written.code).toBe(0)
      expect(written.stderr).toContain('wrote ')
      const text = await readFile(join(policies, 'lp-agent.yaml'), 'utf8')
      expect(text).toContain('# Least-privilege test agent: these comments must survive a shrink.')
      expect(text).toContain('  # The API it calls every day.\n')
      expect(text).not.toContain(UNUSED)
      const loaded = await loadPolicies(policies)
      expect(loaded.ok).toBe(true)
      const lp = loaded.ok ? loaded.policies.find((p) => p.agent === 'lp-agent')! : undefined
      expect([...lp!.grants.keys()]).toEqual([DEMO])
      expect([...lp!.grants.get(DEMO)!.scopes]).toEqual(['demo:read'])
      expect(lp!.delegation.maxDepth).toBe(2)
    })

    it('mandate policy shrink removes nothing where nothing is suggested, and says why', async () => {
      const before = await readFile(join(policies, 'young-agent.yaml'), 'utf8')
      const run = await cli(['policy', 'shrink', 'young-agent', '--dir', policies, '--write'])
      expect(run.code).toBe(0)
      expect(run.stdout).toBe('')
      expect(run.stderr).toContain('nothing suggested: first issued a token 0 day(s) ago')
      expect(run.stderr).toContain('nothing to remove')
      expect(await readFile(join(policies, 'young-agent.yaml'), 'utf8')).toBe(before)
      expect((await cli(['policy', 'shrink', 'no-such-agent', '--dir', policies])).code).toBe(EXIT.FAILED)
    })

    // Last: it closes the broker to read its database.
    it('the denial and depth summaries equal a recount from the log', async () => {
      server.close()
      await m.close()
      const database = await openDatabase(db.url, { dataDir: join(dir, 'data') })
      try {
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
          `select agent, audience, scope, day::int, denials::int from agent_grant_usage_day where denials > 0 order by 1, 2, 3, 4`,
          `select agent, a.aud as audience, coalesce(s.scope, '') as scope, floor(extract(epoch from at) / 86400)::int as day, count(*)::int as denials
           from audit_log cross join lateral json_array_elements_text(record::json->'requested_aud') as a(aud)
             left join lateral json_array_elements_text(record::json->'requested_scopes') as s(scope) on true
           where event = 'token.denied' group by 1, 2, 3, 4 order by 1, 2, 3, 4`,
        )
        await same(
          `select agent, day::int, max_depth::int as depth from agent_depth_day order by 1, 2`,
          `select x.agent, floor(extract(epoch from at) / 86400)::int as day, max(cardinality(actors))::int as depth
           from audit_log cross join lateral unnest(actors) as x(agent) where event = 'token.issued' and cardinality(actors) > 1 group by 1, 2 order by 1, 2`,
        )
        // audit show's lookup can use the partial expression index: with scans off (the table is tiny) and without
        // the other partial index on denials, which a planner with no statistics finds as cheap (the last test: dropped for good).
        const plan = await database.db.transaction(async (tx) => {
          await tx.execute(sql.raw('set local enable_seqscan = off'))
          await tx.execute(sql.raw('drop index audit_log_denied_agent_idx'))
          return tx.execute(
            sql.raw(
              `explain select * from audit_log where ("audit_log"."record"::jsonb ->> 'request_id') = 'lp-denied-1' and "audit_log"."event" = 'token.denied'`,
            ),
          )
        })
        expect(JSON.stringify(plan)).toContain('audit_log_denied_request_id_idx')
      } finally {
        await database.close()
      }
    })
  })
}

describeLeastPrivilege('PGlite', async () => ({ url: undefined, done: async () => {} }))

let pg: TestDatabase | undefined
describeLeastPrivilege(
  'PostgreSQL',
  async () => {
    pg = await createTestDatabase()
    return { url: pg.url, done: async () => pg?.drop() }
  },
  describePostgres,
)
