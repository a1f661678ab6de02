/**
 * Human approval (OpenID CIBA Core 1.0, poll mode; RFC 9396 details) on a
 * broker composed as `mandate serve` composes it, on PGlite and PostgreSQL:
 * the backchannel request, the approver's decision through the admin API
 * (entitled or not), the polls (pending, slow_down, the token with exactly
 * the approved details, then invalid_grant), denial, expiry, bad details,
 * other agents' handles, the pending bound, reuse, a kill cancelling, and the
 * log's records of it all.
 */
import { createHash } from 'node:crypto'
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { payload, secret, startReceiver, type Receiver } from '../support/webhook-receiver.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const ISSUER = 'https://mandate.test'
const DEV_USERS = 'https://users.dev.mandate.invalid'
const PAYMENTS = 'https://payments.example'
const T0 = 1_800_000_000
const CIBA = 'urn:openid:params:grant-type:ciba'
const KEYS = {
  alice: 'alice-approver-key-0123456789',
  bob: 'bob-approver-key-0123456789',
  owner: 'owner-approver-key-0123456789',
  auditor: 'auditor-key-0123456789',
  responder: 'responder-key-0123456789',
} as const

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` })
const sha = (key: string) => createHash('sha256').update(key).digest('hex')

function payPolicy(agent: string, approvers: string, reuse = 'none'): string {
  return `agent: ${agent}
owner: finance-owner@example.com
purpose: pays invoices for its user
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(`${agent}-secret`).toString('hex')} }
users: [{ issuer: ${DEV_USERS} }]
grants:
  - audience: ${PAYMENTS}
    scopes: [payments:initiate]
    default_scopes: [payments:initiate]
    approval: { required: true, approvers: ${approvers}, timeout: 300s, reuse: ${reuse} }
    authorization_details:
      payment_initiation:
        type: object
        required: [instructedAmount, creditorName]
        additionalProperties: false
        properties:
          instructedAmount:
            type: object
            required: [currency, amount]
            additionalProperties: false
            properties:
              currency: { const: EUR }
              amount: { type: string, pattern: "^[0-9]{1,3}(\\\\.[0-9]{2})?$" }
          creditorName: { type: string, maxLength: 70 }
token_ttl: { default: 300, max: 300 }
`
}

const PAYMENT = [{ type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '123.50' }, creditorName: 'Merchant A' }]

interface Approval {
  id: string
  status: string
  agent: string
  user: { iss: string; sub: string }
  binding_message: string | null
  authorization_details: unknown[]
  decided_by: string | null
  decided_via: string | null
  purpose: string | null
}

function describeApprovals(
  name: string,
  databaseUrl: () => Promise<{ url: string | undefined; done: () => Promise<void> }>,
  d: typeof describe = describe,
): void {
  d(`human approval (CIBA): ${name}`, () => {
    let dir: string
    let m: Mandate
    let now = T0 * 1000
    let db: { url: string | undefined; done: () => Promise<void> }
    let approvers: Receiver
    const wait = (seconds: number) => {
      now += seconds * 1000
    }
    const form = (path: string, agent: string, body: Record<string, string>) =>
      m.app.request(path, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(agent, `${agent}-secret`) },
        body: new URLSearchParams(body).toString(),
      })
    const userToken = async (sub: string) => {
      const res = await m.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"payments:initiate"}' })
      expect(res.status).toBe(200)
      return ((await res.json()) as { access_token: string }).access_token
    }
    const ask = async (agent: string, sub: string, extra: Record<string, string> = {}) =>
      form('/oauth2/bc-authorize', agent, {
        login_hint_token: await userToken(sub),
        audience: PAYMENTS,
        scope: 'openid payments:initiate',
        authorization_details: JSON.stringify(PAYMENT),
        binding_message: 'Pay 123.50 EUR to Merchant A',
        ...extra,
      })
    const asked = async (agent: string, sub: string, extra: Record<string, string> = {}) => {
      // A second apart, so that the newest request is the one just made (the queue lists newest first).
      wait(1)
      const res = await ask(agent, sub, extra)
      expect(res.status, await res.clone().text()).toBe(200)
      return (await res.json()) as { auth_req_id: string; expires_in: number; interval: number }
    }
    const poll = (agent: string, authReqId: string) => form('/oauth2/token', agent, { grant_type: CIBA, auth_req_id: authReqId })
    const pollError = async (agent: string, authReqId: string) => {
      const res = await poll(agent, authReqId)
      expect(res.status, await res.clone().text()).toBe(400)
      return ((await res.json()) as { error: string }).error
    }
    const queue = async (query = '') => {
      const res = await m.app.request(`/admin/approvals${query}`, { headers: bearer(KEYS.auditor) })
      expect(res.status, await res.clone().text()).toBe(200)
      return (await res.json()) as { approvals: Approval[]; total: number }
    }
    const latest = async (agent: string) => (await queue(`?agent=${agent}&limit=1`)).approvals[0]!
    const decide = (id: string, key: string, decision: 'approve' | 'deny', note?: string) =>
      m.app.request(`/admin/approvals/${id}`, {
        method: 'POST',
        headers: { ...bearer(key), 'content-type': 'application/json' },
        body: JSON.stringify({ decision, ...(note === undefined ? {} : { note }) }),
      })
    const records = async (query: string) => {
      const res = await m.app.request(`/admin/audit?${query}`, { headers: bearer(KEYS.auditor) })
      expect(res.status, await res.clone().text()).toBe(200)
      return ((await res.json()) as { records: { record: Record<string, unknown> }[] }).records.map((r) => ({
        event: r.record['event'] as string,
        record: r.record,
      }))
    }

    beforeAll(async () => {
      db = await databaseUrl()
      dir = await mkdtemp(join(tmpdir(), 'mandate-approvals-'))
      const policies = join(dir, 'policies')
      await cp(join(root, 'policies/dev'), policies, { recursive: true })
      await writeFile(join(policies, 'pay-agent.yaml'), payPolicy('pay-agent', 'user'))
      await writeFile(join(policies, 'owner-pay-agent.yaml'), payPolicy('owner-pay-agent', 'owner', '10m'))
      await writeFile(join(policies, 'other-agent.yaml'), payPolicy('other-agent', 'user'))
      const hookSecret = secret()
      approvers = await startReceiver(hookSecret)
      await writeFile(join(dir, 'hook-secret'), hookSecret)
      const config = Config.parse({
        issuer: ISSUER,
        policies_dir: policies,
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
        log: { level: 'silent' },
        approvals: { max_pending_per_agent: 3, poll_interval: 5 },
        notifications: {
          webhooks: [{ id: 'approvers', url: approvers.url, events: ['approval.requested', 'approval.decided'], secret_file: join(dir, 'hook-secret') }],
          retry: { max_attempts: 5, initial_delay_ms: 10, max_delay_ms: 50 },
          timeout_ms: 2_000,
        },
        ...(db.url === undefined ? {} : { storage: { database_url: db.url } }),
        admin: {
          keys: [
            { name: 'alice-key', sha256: sha(KEYS.alice), roles: ['approver'], approver: { issuer: DEV_USERS, sub: 'alice' } },
            { name: 'bob-key', sha256: sha(KEYS.bob), roles: ['approver'], approver: { issuer: DEV_USERS, sub: 'bob' } },
            {
              name: 'owner-key',
              sha256: sha(KEYS.owner),
              roles: ['approver'],
              approver: { issuer: DEV_USERS, sub: 'fiona', email: 'Finance-Owner@example.com' },
            },
            { name: 'auditor', sha256: sha(KEYS.auditor), roles: ['auditor'] },
            { name: 'responder', sha256: sha(KEYS.responder), roles: ['responder'] },
          ],
        },
      })
      m = await composeMandate(config, { dev: true, logger: createLogger('silent'), clock: () => now, filePollMs: 50, loadSignals: { eventLoopLag: () => 0 } })
    }, 60_000)

    afterAll(async () => {
      await m?.close().catch(() => {})
      await approvers?.close()
      await rm(dir, { recursive: true, force: true })
      await db?.done()
    })

    it('advertises the backchannel endpoint, poll mode, the CIBA grant and the declared detail types', async () => {
      const meta = (await (await m.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      expect(meta['backchannel_authentication_endpoint']).toBe(`${ISSUER}/oauth2/bc-authorize`)
      expect(meta['backchannel_token_delivery_modes_supported']).toEqual(['poll'])
      expect(meta['grant_types_supported']).toContain(CIBA)
      expect(meta['authorization_details_types_supported']).toEqual(['payment_initiation'])
    })

    it('refuses to exchange a token for a grant that needs approval (interaction_required), and records it', async () => {
      const res = await form('/oauth2/token', 'pay-agent', {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: await userToken('alice'),
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: PAYMENTS,
      })
      expect(res.status).toBe(400)
      const body = (await res.json()) as { error: string; error_uri?: string }
      expect(body.error).toBe('interaction_required')
      expect(body.error_uri).toMatch(/^urn:mandate:request:/)
    })

    it('policy explain says why: the approval check refuses as the exchange does, naming the approvers', async () => {
      const res = await m.app.request('/admin/policy/explain', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...bearer(KEYS.auditor) },
        body: JSON.stringify({ agent: 'pay-agent', iss: DEV_USERS, sub: 'alice', audience: PAYMENTS, claims: { scope: 'payments:initiate' } }),
      })
      expect(res.status, await res.clone().text()).toBe(200)
      const body = (await res.json()) as { decision: string; checks: { check: string; outcome: string; error?: string; reason?: string }[] }
      expect(body.decision).toBe('denied')
      const approval = body.checks.find((c) => c.check === 'approval')
      expect(approval, JSON.stringify(approval)).toMatchObject({
        outcome: 'fail',
        error: 'interaction_required',
        reason: `aud=${PAYMENTS} needs approval by user`,
      })
      expect(body.checks.find((c) => c.check === 'revocation')?.outcome).toBe('not_reached')
    })

    it('the user approves: pending, slow_down, then one token with exactly the approved details, then invalid_grant', async () => {
      const r = await asked('pay-agent', 'alice')
      expect(r.interval).toBe(5)
      expect(r.expires_in).toBe(300)
      expect(r.auth_req_id).toMatch(/^[A-Za-z0-9_-]{43}$/)
      expect(await pollError('pay-agent', r.auth_req_id)).toBe('authorization_pending')
      wait(2)
      expect(await pollError('pay-agent', r.auth_req_id)).toBe('slow_down')
      const pending = await latest('pay-agent')
      expect(pending).toMatchObject({
        status: 'pending',
        user: { iss: DEV_USERS, sub: 'alice' },
        binding_message: 'Pay 123.50 EUR to Merchant A',
        authorization_details: PAYMENT,
        purpose: 'pays invoices for its user',
      })
      expect(JSON.stringify(pending)).not.toContain(r.auth_req_id)
      // bob is an approver, but not the user this grant names.
      expect((await decide(pending.id, KEYS.bob, 'approve')).status).toBe(403)
      // An auditor key may read the queue, not decide.
      expect((await decide(pending.id, KEYS.auditor, 'approve')).status).toBe(403)
      const ok = await decide(pending.id, KEYS.alice, 'approve', 'yes, that invoice')
      expect(ok.status, await ok.clone().text()).toBe(200)
      expect(((await ok.json()) as Approval).decided_via).toBe('admin_api')
      expect((await decide(pending.id, KEYS.alice, 'deny')).status).toBe(409)
      wait(11)
      const res = await poll('pay-agent', r.auth_req_id)
      expect(res.status, await res.clone().text()).toBe(200)
      const body = (await res.json()) as { access_token: string; authorization_details: unknown; scope: string }
      expect(body.authorization_details).toEqual(PAYMENT)
      expect(body.scope).toBe('payments:initiate')
      const claims = decodeJwt(body.access_token)
      expect(claims).toMatchObject({ sub: 'alice', client_id: 'pay-agent', aud: PAYMENTS, approval: pending.id, authorization_details: PAYMENT })
      wait(6)
      expect(await pollError('pay-agent', r.auth_req_id)).toBe('invalid_grant')
      expect((await latest('pay-agent')).status).toBe('issued')

      // The approvers were told, signed (Standard Webhooks), with what they need to decide; then the decision.
      const told = await approvers.waitFor((x) => payload(x).type === 'approval.requested' && payload(x).data['approval_id'] === pending.id, 10_000)
      expect(told.verified).toBe(true)
      expect(payload(told).data).toMatchObject({
        agent: 'pay-agent',
        user: { iss: DEV_USERS, sub: 'alice' },
        purpose: 'pays invoices for its user',
        audience: PAYMENTS,
        scopes: ['payments:initiate'],
        authorization_details: PAYMENT,
        binding_message: 'Pay 123.50 EUR to Merchant A',
        approvers: 'user',
      })
      const decided = await approvers.waitFor((x) => payload(x).type === 'approval.decided' && payload(x).data['approval_id'] === pending.id, 10_000)
      expect(payload(decided).data).toMatchObject({ decision: 'approved', via: 'admin_api' })

      const log = await records(`agent=pay-agent&limit=20`)
      const mine = log.filter((x) => x.record['approval'] === pending.id)
      expect(mine.map((x) => x.event).sort()).toEqual(['approval.decided', 'approval.requested', 'token.issued'])
      expect(mine.find((x) => x.event === 'approval.decided')!.record).toMatchObject({ decision: 'approved', via: 'admin_api', note: 'yes, that invoice' })
    })

    it('denied: access_denied', async () => {
      const r = await asked('pay-agent', 'alice')
      expect((await decide((await latest('pay-agent')).id, KEYS.alice, 'deny')).status).toBe(200)
      expect(await pollError('pay-agent', r.auth_req_id)).toBe('access_denied')
    })

    it('undecided past the timeout: expired_token, and the queue says expired; a late decision is 409', async () => {
      const r = await asked('pay-agent', 'alice', { requested_expiry: '60' })
      expect(r.expires_in).toBe(60)
      const id = (await latest('pay-agent')).id
      wait(61)
      expect(await pollError('pay-agent', r.auth_req_id)).toBe('expired_token')
      expect((await latest('pay-agent')).status).toBe('expired')
      expect((await decide(id, KEYS.alice, 'approve')).status).toBe(409)
    })

    it.each([
      ['an amount over the schema', [{ ...PAYMENT[0], instructedAmount: { currency: 'EUR', amount: '1500.00' } }]],
      ['another currency', [{ ...PAYMENT[0], instructedAmount: { currency: 'USD', amount: '1.00' } }]],
      ['an extra member', [{ ...PAYMENT[0], iban: 'DE00' }]],
      ['an undeclared type', [{ type: 'account_information' }]],
      ['no type', [{ creditorName: 'x' }]],
      ['an object, not an array', { type: 'payment_initiation' }],
      ['an empty array', []],
    ])('authorization_details with %s: invalid_authorization_details', async (_what, details) => {
      const res = await ask('pay-agent', 'alice', { authorization_details: JSON.stringify(details) })
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: string }).error).toBe('invalid_authorization_details')
    })

    it('malformed requests are refused before anything is stored', async () => {
      const cases: [Record<string, string>, string][] = [
        [{ binding_message: 'x'.repeat(65) }, 'invalid_request'],
        [{ binding_message: 'two\nlines' }, 'invalid_request'],
        [{ requested_expiry: '-1' }, 'invalid_request'],
        [{ authorization_details: '{not json' }, 'invalid_authorization_details'],
        [{ audience: 'https://demo.example' }, 'invalid_target'],
        [{ scope: 'payments:refund' }, 'invalid_scope'],
        [{ login_hint: 'alice' }, 'invalid_request'],
        [{ id_token_hint: 'x' }, 'invalid_request'],
        [{ user_code: '1234' }, 'invalid_request'],
      ]
      const before = (await queue('?agent=pay-agent')).total
      for (const [extra, error] of cases) {
        const res = await ask('pay-agent', 'alice', extra)
        expect(res.status, JSON.stringify(extra)).toBe(400)
        expect(((await res.json()) as { error: string }).error, JSON.stringify(extra)).toBe(error)
      }
      expect((await queue('?agent=pay-agent')).total).toBe(before)
      const noHint = await form('/oauth2/bc-authorize', 'pay-agent', { audience: PAYMENTS })
      expect(((await noHint.json()) as { error: string }).error).toBe('invalid_request')
      const wrongSecret = await m.app.request('/oauth2/bc-authorize', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('pay-agent', 'nope') },
        body: new URLSearchParams({ login_hint_token: await userToken('alice'), audience: PAYMENTS }).toString(),
      })
      expect(wrongSecret.status).toBe(401)
      // id_token_hint is verified as the user's token is: the same token is good there, junk is not.
      const viaHint = await form('/oauth2/bc-authorize', 'pay-agent', { id_token_hint: await userToken('alice'), audience: PAYMENTS })
      expect(viaHint.status, await viaHint.clone().text()).toBe(200)
      const junkHint = await form('/oauth2/bc-authorize', 'pay-agent', { id_token_hint: 'eyJhbGciOiJub25lIn0.e30.', audience: PAYMENTS })
      expect(((await junkHint.json()) as { error: string }).error).toBe('invalid_request')
    })

    it('a handle is good only for the agent it was given to; an unknown one is invalid_grant', async () => {
      const r = await asked('pay-agent', 'alice')
      expect(await pollError('other-agent', r.auth_req_id)).toBe('invalid_grant')
      expect(await pollError('pay-agent', 'A'.repeat(43))).toBe('invalid_grant')
      expect(await pollError('pay-agent', 'short')).toBe('invalid_grant')
      await decide((await latest('pay-agent')).id, KEYS.alice, 'deny')
    })

    it('bounds the pending requests of one agent (429), and a kill of the agent cancels them', async () => {
      for (let i = 0; i < 3; i++) await asked('other-agent', 'alice')
      const over = await ask('other-agent', 'alice')
      expect(over.status).toBe(429)
      const pending = await queue('?agent=other-agent&status=pending')
      expect(pending.total).toBe(3)
      const kill = await m.app.request('/admin/revocations', {
        method: 'POST',
        headers: { ...bearer(KEYS.responder), 'content-type': 'application/json' },
        body: JSON.stringify({ agent: 'other-agent', reason: 'approvals test' }),
      })
      expect(kill.status, await kill.clone().text()).toBe(201)
      const bound = Date.now() + 5_000
      while (Date.now() < bound && (await queue('?agent=other-agent&status=cancelled')).total < 3) await new Promise((r) => setTimeout(r, 20))
      expect((await queue('?agent=other-agent&status=cancelled')).total).toBe(3)
      const all = await records('agent=other-agent&limit=50')
      const cancelled = all.filter((x) => x.event === 'approval.cancelled')
      expect(cancelled, JSON.stringify(all.map((x) => x.event))).toHaveLength(3)
      expect((await decide(pending.approvals[0]!.id, KEYS.alice, 'approve')).status).toBe(409)
    })

    it('a kill of the user cancels her requests with every agent, and only hers', async () => {
      const hers = await asked('pay-agent', 'dora')
      const his = await asked('pay-agent', 'erin')
      const kill = await m.app.request('/admin/revocations', {
        method: 'POST',
        headers: { ...bearer(KEYS.responder), 'content-type': 'application/json' },
        body: JSON.stringify({ sub: 'dora', iss: DEV_USERS, reason: 'account compromised' }),
      })
      expect(kill.status, await kill.clone().text()).toBe(201)
      const cancelled = async () => (await queue('?agent=pay-agent&status=cancelled')).approvals.map((a) => a.user.sub)
      const bound = Date.now() + 5_000
      while (Date.now() < bound && !(await cancelled()).includes('dora')) await new Promise((r) => setTimeout(r, 20))
      expect(await cancelled()).toEqual(['dora'])
      expect(await pollError('pay-agent', hers.auth_req_id)).toBe('access_denied')
      expect(await pollError('pay-agent', his.auth_req_id)).toBe('authorization_pending')
    })

    it('the owner approves for `approvers: owner` (email matched case-insensitively); reuse covers the same action for 10 minutes, not another', async () => {
      const first = await asked('owner-pay-agent', 'carol')
      const id = (await latest('owner-pay-agent')).id
      expect((await decide(id, KEYS.alice, 'approve')).status).toBe(403)
      expect((await decide(id, KEYS.owner, 'approve')).status).toBe(200)
      wait(6)
      expect((await poll('owner-pay-agent', first.auth_req_id)).status).toBe(200)

      wait(60)
      const again = await asked('owner-pay-agent', 'carol')
      const reused = await latest('owner-pay-agent')
      expect(reused).toMatchObject({ status: 'approved', decided_via: 'reuse' })
      expect((await poll('owner-pay-agent', again.auth_req_id)).status).toBe(200)

      // Another amount is another action: it waits for the owner.
      const other = await asked('owner-pay-agent', 'carol', {
        authorization_details: JSON.stringify([{ ...PAYMENT[0], instructedAmount: { currency: 'EUR', amount: '9.99' } }]),
      })
      expect(await pollError('owner-pay-agent', other.auth_req_id)).toBe('authorization_pending')
      // Past the reuse window the same action waits too.
      wait(11 * 60)
      const late = await asked('owner-pay-agent', 'carol')
      expect(await pollError('owner-pay-agent', late.auth_req_id)).toBe('authorization_pending')
    })

    it('without approvals.sign_in: no link is made and the approver pages do not exist', async () => {
      expect(m.approvalLinks).toBeUndefined()
      for (const path of ['/approvals/link?t=x', '/approvals/callback?code=x&state=y']) expect((await m.app.request(path)).status).toBe(404)
      expect((await m.app.request('/approvals/confirm', { method: 'POST' })).status).toBe(404)
    })

    it('admin API input: unknown id 404, malformed id or body 400, no key 401', async () => {
      expect((await decide('apr_AAAAAAAAAAAAAAAAAAAAAA', KEYS.alice, 'approve')).status).toBe(404)
      expect((await decide('not-an-id', KEYS.alice, 'approve')).status).toBe(400)
      const junk = await m.app.request('/admin/approvals/apr_AAAAAAAAAAAAAAAAAAAAAA', {
        method: 'POST',
        headers: { ...bearer(KEYS.alice), 'content-type': 'application/json' },
        body: JSON.stringify({ decision: 'maybe' }),
      })
      expect(junk.status).toBe(400)
      expect((await m.app.request('/admin/approvals')).status).toBe(401)
      expect((await m.app.request('/admin/approvals?status=sleepy', { headers: bearer(KEYS.auditor) })).status).toBe(400)
    })
  })
}

describeApprovals('PGlite', async () => ({ url: undefined, done: async () => {} }))

let pg: TestDatabase | undefined
describeApprovals(
  'PostgreSQL',
  async () => {
    pg = await createTestDatabase()
    return { url: pg.url, done: async () => pg?.drop() }
  },
  describePostgres,
)
