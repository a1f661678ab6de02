/**
 * The approver's sign-in page, end to end over HTTP: a broker composed as
 * `mandate serve` composes it (PGlite and PostgreSQL, served on a port) and a real OpenID
 * Provider (oidc-provider) that the approver signs in to, headlessly as a
 * browser would. The signed one-time link, the code + PKCE sign-in, the
 * entitlement check, the confirm form, and every way to misuse them: another
 * person, a second use, a link or cookie for another request, an expired
 * link, a tampered cookie, a missing CSRF token.
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { serve, type ServerType } from '@hono/node-server'
import { createHash } from 'node:crypto'
import { Validator } from '@seriousme/openapi-schema-validator'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { captureLogs } from '../support/log-sink.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { CookieJar, startUpstreamIdp, type UpstreamIdp } from '../support/oidc-provider.js'
import { payload, secret, startReceiver, type Receiver } from '../support/webhook-receiver.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const PAYMENTS = 'https://payments.example'
const CIBA = 'urn:openid:params:grant-type:ciba'
const CLIENT_ID = 'mandate-approvals'
const CLIENT_SECRET = 'mandate-approvals-secret-0123456789abcdef'
const AUDITOR_KEY = 'auditor-key-0123456789'
const SESSION = 'mandate_approval_session'
const PAYMENT = [{ type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '12.00' }, creditorName: '<b>Merchant</b> & Co' }]

const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` })

function payPolicy(agent: string, idpIssuer: string, approvers: string): string {
  return `agent: ${agent}
owner: finance-owner@example.com
purpose: pays invoices for its user
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(`${agent}-secret`).toString('hex')} }
users: [{ issuer: ${idpIssuer} }]
grants:
  - audience: ${PAYMENTS}
    scopes: [payments:initiate]
    default_scopes: [payments:initiate]
    approval: { required: true, approvers: ${approvers}, timeout: 300s }
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
              amount: { type: string }
          creditorName: { type: string, maxLength: 70 }
token_ttl: { default: 300, max: 300 }
`
}

interface Asked {
  readonly id: string
  readonly authReqId: string
  readonly expiresAt: number
  readonly agent: string
}

function describeLink(name: string, databaseUrl: () => Promise<{ url: string | undefined; done: () => Promise<void> }>, d: typeof describe = describe): void {
  d(`approval link: sign in with the upstream IdP and confirm (${name})`, () => {
    let dir: string
    let server: ServerType
    let broker: string
    let idp: UpstreamIdp
    let m: Mandate
    let offset = 0
    let db: { url: string | undefined; done: () => Promise<void> } | undefined
    let approvers: Receiver
    const logs: string[] = []

    beforeAll(async () => {
      db = await databaseUrl()
      dir = await mkdtemp(join(tmpdir(), 'mandate-approval-link-'))
      let app: Mandate['app'] | undefined
      server = serve({ fetch: (req, env) => (app === undefined ? new Response(null, { status: 503 }) : app.fetch(req, env)), hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
      broker = `http://localhost:${(server.address() as AddressInfo).port}`
      idp = await startUpstreamIdp({
        resourceServers: { [broker]: broker },
        scope: 'payments:initiate',
        clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [`${broker}/approvals/callback`] }],
        claims: (sub) =>
          // fake-owner typed the owner's address in, and the provider says it never verified it.
          sub === 'fake-owner'
            ? { email: 'finance-owner@example.com', email_verified: false }
            : { email: `${sub}@example.com`, email_verified: true, groups: sub === 'gina' ? ['payments-approvers'] : ['staff'] },
      })
      const policies = join(dir, 'policies')
      await cp(join(root, 'policies/dev'), policies, { recursive: true })
      await writeFile(join(policies, 'pay-agent.yaml'), payPolicy('pay-agent', idp.issuer, 'user'))
      await writeFile(join(policies, 'group-agent.yaml'), payPolicy('group-agent', idp.issuer, 'group:payments-approvers'))
      await writeFile(join(policies, 'owner-agent.yaml'), payPolicy('owner-agent', idp.issuer, 'owner'))
      const hookSecret = secret()
      approvers = await startReceiver(hookSecret)
      await writeFile(join(dir, 'hook-secret'), hookSecret)
      const secretFile = join(dir, 'idp-client-secret')
      await writeFile(secretFile, `${CLIENT_SECRET}\n`, { mode: 0o600 })
      const config = Config.parse({
        issuer: broker,
        policies_dir: policies,
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
        trust: { subjects: [{ issuer: idp.issuer, algorithms: ['RS256'] }] },
        approvals: { poll_interval: 1, sign_in: { issuer: idp.issuer, client_id: CLIENT_ID, client_secret_file: secretFile, groups_scope: 'groups' } },
        admin: { keys: [{ name: 'auditor', sha256: createHash('sha256').update(AUDITOR_KEY).digest('hex'), roles: ['auditor'] }] },
        notifications: {
          webhooks: [{ id: 'approvers', url: approvers.url, events: ['approval.requested'], secret_file: join(dir, 'hook-secret') }],
          retry: { max_attempts: 5, initial_delay_ms: 10, max_delay_ms: 50 },
        },
        log: { level: 'warn' },
        ...(db.url === undefined ? {} : { storage: { database_url: db.url } }),
      })
      m = await composeMandate(config, {
        dev: false,
        logger: createLogger('warn', captureLogs('approval-link broker', logs).stream),
        clock: () => Date.now() + offset,
      })
      app = m.app
    }, 120_000)

    afterAll(async () => {
      if (server !== undefined) {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()))
        ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
        await closed
      }
      await idp?.stop()
      await approvers?.close()
      await m?.close().catch(() => {})
      if (dir !== undefined) await rm(dir, { recursive: true, force: true })
      await db?.done()
    })

    const auditor = { authorization: `Bearer ${AUDITOR_KEY}` }
    const seen = new Set<string>()
    const approval = async (id: string) => {
      const res = await fetch(`${broker}/admin/approvals/${id}`, { headers: auditor })
      expect(res.status, await res.clone().text()).toBe(200)
      return (await res.json()) as { status: string; decided_via: string | null; decided_by: string | null; expires_at: string; agent: string }
    }
    const form = (path: string, agent: string, body: Record<string, string>) =>
      fetch(`${broker}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(agent, `${agent}-secret`) },
        body: new URLSearchParams(body).toString(),
      })
    /** `user`'s agent asks for approval of a payment, with the user's access token from the IdP as the login hint. */
    const ask = async (agent: string, user: string): Promise<Asked> => {
      const userToken = (await idp.signIn(user, broker)).access_token
      const res = await form('/oauth2/bc-authorize', agent, {
        login_hint_token: userToken,
        audience: PAYMENTS,
        scope: 'openid payments:initiate',
        authorization_details: JSON.stringify(PAYMENT),
        binding_message: 'Pay 12.00 EUR <now>',
      })
      expect(res.status, await res.clone().text()).toBe(200)
      const authReqId = ((await res.json()) as { auth_req_id: string }).auth_req_id
      // The request just made: the one pending request not seen before (several may share a second of creation).
      const list = await fetch(`${broker}/admin/approvals?agent=${agent}&status=pending&limit=500`, { headers: auditor })
      const fresh = ((await list.json()) as { approvals: { id: string; expires_at: string }[] }).approvals.filter((r) => !seen.has(r.id))
      expect(fresh).toHaveLength(1)
      const row = fresh[0]!
      seen.add(row.id)
      return { id: row.id, authReqId, expiresAt: Date.parse(row.expires_at) / 1000, agent }
    }
    const poll = async (a: Asked) => {
      const res = await form('/oauth2/token', a.agent, { grant_type: CIBA, auth_req_id: a.authReqId })
      return { status: res.status, body: (await res.json()) as { error?: string; access_token?: string; authorization_details?: unknown } }
    }
    /** Opens the link in a fresh browser and signs in as `login`: the page it lands on and the browser's cookies. */
    const open = async (link: string, login: string) => {
      const jar = new CookieJar()
      const page = await idp.browse(link, login, jar)
      return { page, jar }
    }
    const fieldOf = (html: string, name: string) => new RegExp(`name="${name}" value="([^"]+)"`).exec(html)?.[1]
    const confirm = (cookie: string, fields: Record<string, string>) =>
      fetch(`${broker}/approvals/confirm`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
        body: new URLSearchParams(fields).toString(),
      })
    const fieldsOf = (html: string, decision: 'approve' | 'deny') => ({ approval: fieldOf(html, 'approval')!, csrf: fieldOf(html, 'csrf')!, decision })
    const sessionCookie = (jar: CookieJar) => `${SESSION}=${jar.get(SESSION)!}`

    it('the user signs in and approves: the page shows the request, escaped; the agent’s poll gets the token; decided via link', async () => {
      const a = await ask('pay-agent', 'alice')
      expect((await poll(a)).body.error).toBe('authorization_pending')
      // The link the approvers were sent, in the signed notification of the request.
      const told = await approvers.waitFor((d) => payload(d).type === 'approval.requested' && payload(d).data['approval_id'] === a.id, 10_000)
      expect(told.verified).toBe(true)
      const link = payload(told).data['link'] as string
      expect(link.startsWith(`${broker}/approvals/link?t=`)).toBe(true)
      const { page, jar } = await open(link, 'alice')
      expect(page.prompts).toEqual(['login', 'consent'])
      expect(page.url.startsWith(`${broker}/approvals/callback?`)).toBe(true)
      expect(page.status, page.html).toBe(200)
      expect(page.html).toContain('Pay 12.00 EUR &lt;now&gt;')
      expect(page.html).toContain('&lt;b&gt;Merchant&lt;/b&gt; &amp; Co')
      expect(page.html).not.toContain('<b>Merchant')
      expect(page.html).toContain('pays invoices for its user')
      const res = await confirm(sessionCookie(jar), fieldsOf(page.html, 'approve'))
      expect(res.status, await res.clone().text()).toBe(200)
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(res.headers.get('content-security-policy')).toBe("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
      expect(res.headers.get('x-frame-options')).toBe('DENY')
      const decided = await approval(a.id)
      expect(decided).toMatchObject({ status: 'approved', decided_via: 'link' })
      expect(decided.decided_by).toContain(`(alice of ${idp.issuer}, signed in)`)
      // The poll interval, in real time: the broker's clock is the wall clock here, as the IdP's is.
      await new Promise((resolve) => setTimeout(resolve, 1_100))
      const polled = await poll(a)
      expect(polled.status, JSON.stringify(polled.body)).toBe(200)
      expect(polled.body.authorization_details).toEqual(PAYMENT)
      expect(decodeJwt(polled.body.access_token!)).toMatchObject({ sub: 'alice', approval: a.id })

      // The same link again, and the same confirmation again: both refused, nothing changes.
      const again = await open(link, 'alice')
      expect(again.page.status).toBe(409)
      const replay = await confirm(sessionCookie(jar), fieldsOf(page.html, 'deny'))
      expect(replay.status).toBe(409)
      expect((await approval(a.id)).status).toBe('issued')
    }, 60_000)

    it('deny: the poll answers access_denied', async () => {
      const a = await ask('pay-agent', 'alice')
      const { page, jar } = await open(await m.approvalLinks!.link(a.id, a.expiresAt), 'alice')
      expect((await confirm(sessionCookie(jar), fieldsOf(page.html, 'deny'))).status).toBe(200)
      expect((await approval(a.id)).status).toBe('denied')
      expect((await poll(a)).body.error).toBe('access_denied')
    }, 60_000)

    it('a person who is not the user (another sub): 403 page, logged, no buttons, nothing decided', async () => {
      const a = await ask('pay-agent', 'alice')
      const before = logs.length
      const { page } = await open(await m.approvalLinks!.link(a.id, a.expiresAt), 'mallory')
      expect(page.status).toBe(403)
      expect(page.html).not.toContain('name="csrf"')
      expect((await approval(a.id)).status).toBe('pending')
      const warned = logs.slice(before).map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(warned).toContainEqual(expect.objectContaining({ level: 'warn', approval: a.id, iss: idp.issuer, sub: 'mallory' }))
    }, 60_000)

    it('approvers: group:NAME, from the ID token’s groups claim: a member approves, a non-member is refused', async () => {
      const a = await ask('group-agent', 'alice')
      const link = await m.approvalLinks!.link(a.id, a.expiresAt)
      // alice is the user, but this grant names the group, and she is not in it.
      expect((await open(link, 'alice')).page.status).toBe(403)
      const { page, jar } = await open(link, 'gina')
      expect(page.status, page.html).toBe(200)
      expect((await confirm(sessionCookie(jar), fieldsOf(page.html, 'approve'))).status).toBe(200)
      expect((await approval(a.id)).status).toBe('approved')
    }, 60_000)

    it('approvers: owner, by the ID token’s email: the owner approves; an unverified address naming the owner does not', async () => {
      const a = await ask('owner-agent', 'alice')
      const link = await m.approvalLinks!.link(a.id, a.expiresAt)
      expect((await open(link, 'fake-owner')).page.status).toBe(403)
      const { page, jar } = await open(link, 'finance-owner')
      expect(page.status, page.html).toBe(200)
      expect((await confirm(sessionCookie(jar), fieldsOf(page.html, 'approve'))).status).toBe(200)
      expect(await approval(a.id)).toMatchObject({ status: 'approved', decided_by: `finance-owner@example.com (finance-owner of ${idp.issuer}, signed in)` })
    }, 60_000)

    it('one link, two sign-ins: the first confirmation decides, the second is refused (the link is spent)', async () => {
      const a = await ask('pay-agent', 'alice')
      const link = await m.approvalLinks!.link(a.id, a.expiresAt)
      const first = await open(link, 'alice')
      const second = await open(link, 'alice')
      expect(second.page.status).toBe(200)
      // Both at once, as from two tabs or two instances: exactly one decides.
      const answers = await Promise.all([
        confirm(sessionCookie(first.jar), fieldsOf(first.page.html, 'deny')),
        confirm(sessionCookie(second.jar), fieldsOf(second.page.html, 'approve')),
      ])
      expect(answers.map((r) => r.status).sort()).toEqual([200, 409])
      const refused = answers.find((r) => r.status === 409)!
      expect(await refused.text()).toContain('used already')
      const won = answers.findIndex((r) => r.status === 200)
      expect((await approval(a.id)).status).toBe(won === 0 ? 'denied' : 'approved')
    }, 60_000)

    it('a link for A cannot decide B: a re-signed claim fails, and A’s session with B’s id is refused', async () => {
      const a = await ask('pay-agent', 'alice')
      const b = await ask('pay-agent', 'alice')
      expect(b.id).not.toBe(a.id)
      const link = await m.approvalLinks!.link(a.id, a.expiresAt)
      const [head = '', payload = '', signature = ''] = new URL(link).searchParams.get('t')!.split('.')
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>
      const forged = `${head}.${Buffer.from(JSON.stringify({ ...claims, approval: b.id })).toString('base64url')}.${signature}`
      const tampered = await fetch(`${broker}/approvals/link?t=${forged}`, { redirect: 'manual' })
      expect(tampered.status).toBe(400)
      expect(tampered.headers.get('set-cookie')).toBeNull()

      const { page, jar } = await open(link, 'alice')
      const res = await confirm(sessionCookie(jar), { ...fieldsOf(page.html, 'approve'), approval: b.id })
      expect(res.status).toBe(403)
      expect((await approval(a.id)).status).toBe('pending')
      expect((await approval(b.id)).status).toBe('pending')
    }, 60_000)

    it('neither an access token nor any other JWT of the broker passes as a link (explicit typ)', async () => {
      const a = await ask('pay-agent', 'alice')
      const { page, jar } = await open(await m.approvalLinks!.link(a.id, a.expiresAt), 'alice')
      await confirm(sessionCookie(jar), fieldsOf(page.html, 'approve'))
      const token = (await poll(a)).body.access_token!
      const res = await fetch(`${broker}/approvals/link?t=${token}`, { redirect: 'manual' })
      expect(res.status).toBe(400)
      expect((await fetch(`${broker}/approvals/link?t=junk`, { redirect: 'manual' })).status).toBe(400)
      expect((await fetch(`${broker}/approvals/link`, { redirect: 'manual' })).status).toBe(400)
    }, 60_000)

    it('a tampered session cookie, a missing or wrong CSRF token, no cookie at all: refused, nothing decided', async () => {
      const a = await ask('pay-agent', 'alice')
      const { page, jar } = await open(await m.approvalLinks!.link(a.id, a.expiresAt), 'alice')
      const fields = fieldsOf(page.html, 'approve')
      const value = jar.get(SESSION)!
      const flipped = value.slice(0, -3) + (value.at(-3) === 'A' ? 'B' : 'A') + value.slice(-2)
      expect((await confirm(`${SESSION}=${flipped}`, fields)).status).toBe(400)
      expect((await confirm('', fields)).status).toBe(400)
      const { csrf: _csrf, ...noCsrf } = fields
      expect((await confirm(sessionCookie(jar), noCsrf)).status).toBe(400)
      expect((await confirm(sessionCookie(jar), { ...fields, csrf: 'x'.repeat(43) })).status).toBe(403)
      // The link cookie is no session cookie: sealed for another purpose, it does not open as one.
      const link = await fetch(await m.approvalLinks!.link(a.id, a.expiresAt), { redirect: 'manual' })
      const linkCookie = /mandate_approval_link=([^;]+)/.exec(link.headers.get('set-cookie') ?? '')![1]!
      expect((await confirm(`${SESSION}=${linkCookie}`, fields)).status).toBe(400)
      expect((await approval(a.id)).status).toBe('pending')
      // A callback without the sign-in cookie is refused before any code is spent.
      expect((await fetch(`${broker}/approvals/callback?code=x&state=y`)).status).toBe(400)
      // And the untouched session still works.
      expect((await confirm(sessionCookie(jar), fields)).status).toBe(200)
    }, 60_000)

    it('the link cookie is HttpOnly, SameSite=Lax, Path=/approvals; the redirect asks for code + PKCE S256 with a nonce', async () => {
      const a = await ask('pay-agent', 'alice')
      const res = await fetch(await m.approvalLinks!.link(a.id, a.expiresAt), { redirect: 'manual' })
      expect(res.status).toBe(302)
      expect(res.headers.get('referrer-policy')).toBe('no-referrer')
      const cookie = res.headers.get('set-cookie')!
      expect(cookie).toMatch(/HttpOnly/i)
      expect(cookie).toMatch(/SameSite=Lax/i)
      expect(cookie).toMatch(/Path=\/approvals/)
      const to = new URL(res.headers.get('location')!)
      expect(to.origin).toBe(idp.issuer)
      expect(Object.fromEntries(to.searchParams)).toMatchObject({
        client_id: CLIENT_ID,
        redirect_uri: `${broker}/approvals/callback`,
        response_type: 'code',
        scope: 'openid email groups',
        code_challenge_method: 'S256',
      })
      expect(to.searchParams.get('nonce')).toMatch(/^[A-Za-z0-9_-]{43}$/)
    })

    it('an expired link: refused, and a request past its expiry cannot be decided', async () => {
      const a = await ask('pay-agent', 'alice')
      const link = await m.approvalLinks!.link(a.id, a.expiresAt)
      offset = 301_000
      try {
        const res = await fetch(link, { redirect: 'manual' })
        expect(res.status).toBe(400)
        expect(await res.text()).toContain('expired')
      } finally {
        offset = 0
      }
      expect((await approval(a.id)).status).toBe('pending')
    })

    it('the OpenAPI document describes the three pages, and stays valid', async () => {
      const doc = (await (await fetch(`${broker}/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, { tags?: string[] }>> }
      expect(doc.paths['/approvals/link']?.['get']?.tags).toEqual(['Approvals'])
      expect(doc.paths['/approvals/callback']?.['get']?.tags).toEqual(['Approvals'])
      expect(doc.paths['/approvals/confirm']?.['post']?.tags).toEqual(['Approvals'])
      const result = await new Validator().validate(structuredClone(doc))
      expect(result.valid, JSON.stringify(result.errors)).toBe(true)
    })
  })
}

describeLink('PGlite', async () => ({ url: undefined, done: async () => {} }))

let pg: TestDatabase | undefined
describeLink(
  'PostgreSQL',
  async () => {
    pg = await createTestDatabase()
    return { url: pg.url, done: async () => pg?.drop() }
  },
  describePostgres,
)
