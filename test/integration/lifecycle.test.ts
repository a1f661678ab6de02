/**
 * Agent lifecycle through real brokers and real token exchanges, on PGlite
 * and on PostgreSQL through the same code: an overdue attestation refused
 * with `unauthorized_client` until attested, then reinstated; an orphan
 * (owners file) and a dormant agent suspended; the attestation over the
 * admin API (RBAC, input, the `agent.attested` record); explain's
 * `attestation` check; the inventory's states and attestation fields; and,
 * on PostgreSQL, two brokers on one database sweeping at once write each
 * transition once.
 */
import { createHash } from 'node:crypto'
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { createTestDatabase, describePostgres } from '../support/pg-database.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const ISSUER = 'https://mandate.test'
const DEV_USERS = 'https://users.dev.mandate.invalid'
const KEYS = { auditor: 'auditor-key-0123456789', admin: 'admin-key-0123456789' } as const
const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z
const DAY = 86_400
/** A refusal recorded in the delegation log names its request (RFC 6749 §5.2 `error_uri`), for `mandate audit show`. */
const RECORDED_DENIAL = expect.stringMatching(/^urn:mandate:request:[A-Za-z0-9._-]+$/) as unknown as string

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` })

function policy(agent: string, owner: string, extra = ''): string {
  return `agent: ${agent}
owner: ${owner}
purpose: lifecycle test
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(`${agent}-secret`).toString('hex')} }
users: [{ issuer: ${DEV_USERS} }]
grants: [{ audience: https://demo.example, scopes: [demo:read], default_scopes: [demo:read] }]
token_ttl: { default: 300, max: 300 }
${extra}`
}

interface Lifecycle {
  agent: string
  transition: string
  suspended: boolean
  detail: string
}

function describeLifecycle(
  name: string,
  databaseUrl: () => Promise<{ url: string | undefined; done: () => Promise<void> }>,
  brokers: 1 | 2,
  d = describe,
): void {
  d(`agent lifecycle: ${name}`, () => {
    let dir: string
    const m: Mandate[] = []
    let now = T0 * 1000
    let db: { url: string | undefined; done: () => Promise<void> }

    const userToken = async (b: Mandate, sub: string) => {
      const res = await b.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read"}' })
      return ((await res.json()) as { access_token: string }).access_token
    }
    const exchange = async (b: Mandate, agent: string) => {
      const res = await b.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(agent, `${agent}-secret`) },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: await userToken(b, 'alice'),
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: 'https://demo.example',
        }).toString(),
      })
      return { status: res.status, body: (await res.json()) as { error?: string; error_description?: string } }
    }
    const attest = (b: Mandate, agent: string, key: string, body?: string) =>
      b.app.request(`/admin/agents/${agent}/attest`, {
        method: 'POST',
        headers: { ...bearer(key), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body }),
      })
    const records = async (event: string): Promise<Record<string, unknown>[]> => {
      const res = await m[0]!.app.request(`/admin/audit?event=${event}&limit=500`, { headers: bearer(KEYS.auditor) })
      expect(res.status).toBe(200)
      return ((await res.json()) as { records: { record: Record<string, unknown> }[] }).records.map((r) => r.record).reverse()
    }
    const transitions = async (agent: string) =>
      ((await records('agent.lifecycle')) as unknown as Lifecycle[]).filter((r) => r.agent === agent).map((r) => [r.transition, r.suspended])
    const sweepAll = () => Promise.all(m.map((b) => b.lifecycle.sweep()))
    const agentEntry = async (agent: string) => {
      const res = await m[0]!.app.request(`/admin/agents/${agent}`, { headers: bearer(KEYS.auditor) })
      expect(res.status).toBe(200)
      return (await res.json()) as { state: string; attestation: { last_attested_at: string | null; by: string | null; next_due: string | null } | null }
    }

    beforeAll(async () => {
      db = await databaseUrl()
      dir = await mkdtemp(join(tmpdir(), 'mandate-lifecycle-'))
      const policies = join(dir, 'policies')
      await cp(join(root, 'policies/dev'), policies, { recursive: true })
      await writeFile(join(policies, 'attest-agent.yaml'), policy('attest-agent', 'ops@example.com', 'attest_every: 30d\n'))
      await writeFile(join(policies, 'idle-agent.yaml'), policy('idle-agent', 'ops@example.com'))
      await writeFile(join(policies, 'orphan-agent.yaml'), policy('orphan-agent', 'left@example.com'))
      const owners = join(dir, 'owners.txt')
      await writeFile(owners, '# current owners\nplatform-team@example.com\nOPS@example.com  # case does not matter\n')
      for (let i = 0; i < brokers; i++) {
        const config = Config.parse({
          issuer: ISSUER,
          instance_id: `broker-${i + 1}`,
          policies_dir: policies,
          data_dir: join(dir, `data-${i + 1}`),
          signing: { generate_if_missing: true },
          log: { level: 'silent' },
          ...(db.url === undefined ? {} : { storage: { database_url: db.url } }),
          admin: {
            keys: Object.entries(KEYS).map(([role, key]) => ({
              name: `${role}-holder`,
              sha256: createHash('sha256').update(key).digest('hex'),
              roles: [role],
            })),
          },
          governance: {
            attestation_grace: '7d',
            dormant_after: '60d',
            on_dormant: 'suspend',
            owners_file: owners,
            on_orphan: 'suspend',
            lifecycle_sweep_seconds: 3600,
          },
        })
        m.push(
          await composeMandate(config, { dev: true, logger: createLogger('silent'), clock: () => now, filePollMs: 50, loadSignals: { eventLoopLag: () => 0 } }),
        )
      }
    }, 60_000)

    afterAll(async () => {
      for (const b of m) await b.close().catch(() => {})
      await rm(dir, { recursive: true, force: true })
      await db?.done()
    })

    it('suspends the orphan from the start, recorded once however many brokers started', async () => {
      for (const b of m)
        expect(await exchange(b, 'orphan-agent')).toEqual({
          status: 400,
          body: { error: 'unauthorized_client', error_description: 'agent orphaned', error_uri: RECORDED_DENIAL },
        })
      expect(await transitions('orphan-agent')).toEqual([['orphaned', true]])
      expect((await agentEntry('orphan-agent')).state).toBe('orphaned')
    })

    it('issues to an agent within its attestation interval, and warns 14 days ahead', async () => {
      for (const b of m) expect((await exchange(b, 'attest-agent')).status).toBe(200)
      expect((await exchange(m[0]!, 'idle-agent')).status).toBe(200)
      now = (T0 + 17 * DAY) * 1000
      await sweepAll()
      expect(await transitions('attest-agent')).toEqual([['attestation_due', false]])
      expect((await exchange(m[0]!, 'attest-agent')).status).toBe(200)
    })

    it('refuses an overdue attestation on every broker, records the transition once, and explain says why', async () => {
      now = (T0 + 37 * DAY) * 1000
      // Refused from memory as soon as the clock says so, before any sweep.
      for (const b of m) {
        expect(await exchange(b, 'attest-agent')).toEqual({
          status: 400,
          body: { error: 'unauthorized_client', error_description: 'attestation overdue', error_uri: RECORDED_DENIAL },
        })
      }
      await sweepAll()
      await sweepAll()
      expect(await transitions('attest-agent')).toEqual([
        ['attestation_due', false],
        ['attestation_overdue', true],
      ])
      expect((await agentEntry('attest-agent')).state).toBe('attestation_overdue')
      const explained = await m.at(-1)!.app.request('/admin/policy/explain', {
        method: 'POST',
        headers: { ...bearer(KEYS.auditor), 'content-type': 'application/json' },
        body: JSON.stringify({ agent: 'attest-agent', iss: DEV_USERS, sub: 'alice', audience: 'https://demo.example' }),
      })
      const e = (await explained.json()) as { decision: string; failed_check: string; error_description: string; checks: { check: string; outcome: string }[] }
      expect(e).toMatchObject({ decision: 'denied', failed_check: 'attestation', error_description: 'attestation overdue' })
      expect(e.checks.map((c) => c.check).slice(-3)).toEqual(['revocation', 'attestation', 'rate_limit'])
    })

    it('refuses attestations without the admin role, of unknown agents, and with junk bodies', async () => {
      expect((await attest(m[0]!, 'attest-agent', KEYS.auditor)).status).toBe(403)
      expect((await attest(m[0]!, 'attest-agent', 'not-a-key-0123456789')).status).toBe(401)
      expect((await attest(m[0]!, 'no-such-agent', KEYS.admin)).status).toBe(404)
      for (const body of ['{"note":""}', '{"note":"a\\u0000b"}', '{"other":1}', 'not json', '[]']) {
        const res = await attest(m[0]!, 'attest-agent', KEYS.admin, body)
        expect(res.status, body).toBe(400)
        expect(((await res.json()) as { error: string }).error).toBe('invalid_request')
      }
      expect(await records('agent.attested')).toEqual([])
    })

    it('an attestation reinstates the agent at once where it was made, on the others at their sweep, recorded once', async () => {
      const res = await attest(m[0]!, 'attest-agent', KEYS.admin, '{"note":"still needed for the Q3 reports"}')
      expect(res.status).toBe(200)
      const nextDue = new Date((T0 + 67 * DAY) * 1000).toISOString()
      expect(await res.json()).toEqual({ agent: 'attest-agent', attested_at: new Date(now).toISOString(), by: 'admin-holder', next_due: nextDue })
      expect((await exchange(m[0]!, 'attest-agent')).status).toBe(200)
      await sweepAll()
      for (const b of m) expect((await exchange(b, 'attest-agent')).status).toBe(200)
      expect(await records('agent.attested')).toEqual([
        expect.objectContaining({
          event: 'agent.attested',
          agent: 'attest-agent',
          by: 'admin-holder',
          next_due: T0 + 67 * DAY,
          note: 'still needed for the Q3 reports',
        }),
      ])
      expect(await transitions('attest-agent')).toEqual([
        ['attestation_due', false],
        ['attestation_overdue', true],
        ['reinstated', false],
      ])
      const entry = await agentEntry('attest-agent')
      expect(entry.state).toBe('active')
      expect(entry.attestation).toEqual({ last_attested_at: new Date(now).toISOString(), by: 'admin-holder', next_due: nextDue })
    })

    it('re-reads the owners file when it changes: an owner listed again reinstates the orphan', async () => {
      await writeFile(join(dir, 'owners.txt'), 'platform-team@example.com\nops@example.com\nleft@example.com\n')
      const bound = Date.now() + 10_000
      while (Date.now() < bound && (await exchange(m[0]!, 'orphan-agent')).status !== 200) await new Promise((r) => setTimeout(r, 50))
      for (const b of m) expect((await exchange(b, 'orphan-agent')).status).toBe(200)
      await sweepAll()
      expect(await transitions('orphan-agent')).toEqual([
        ['orphaned', true],
        ['reinstated', false],
      ])
    })

    it('suspends a dormant agent under on_dormant: suspend until attested', async () => {
      // idle-agent's last token was at T0; attest-agent's at T0 + 37 d.
      now = (T0 + 61 * DAY) * 1000
      await sweepAll()
      expect(await transitions('idle-agent')).toEqual([['dormant', true]])
      for (const b of m)
        expect(await exchange(b, 'idle-agent')).toEqual({
          status: 400,
          body: { error: 'unauthorized_client', error_description: 'agent dormant', error_uri: RECORDED_DENIAL },
        })
      expect((await exchange(m[0]!, 'attest-agent')).status).toBe(200)
      expect((await agentEntry('idle-agent')).state).toBe('dormant')
      // Without attest_every, the next attestation is due when the agent would turn dormant again.
      const res = await attest(m.at(-1)!, 'idle-agent', KEYS.admin)
      expect(((await res.json()) as { next_due: string }).next_due).toBe(new Date((T0 + 121 * DAY) * 1000).toISOString())
      await sweepAll()
      for (const b of m) expect((await exchange(b, 'idle-agent')).status).toBe(200)
      expect(await transitions('idle-agent')).toEqual([
        ['dormant', true],
        ['reinstated', false],
      ])
    })
  })
}

describeLifecycle('PGlite', async () => ({ url: undefined, done: async () => {} }), 1)

describeLifecycle(
  'two brokers on one PostgreSQL',
  async () => {
    const t = await createTestDatabase()
    return { url: t.url, done: () => t.drop() }
  },
  2,
  describePostgres,
)
