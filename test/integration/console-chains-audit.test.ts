/**
 * The console's Chains and Audit pages against a real broker composed as
 * `serve --dev` composes it, on PostgreSQL (a second connection edits the
 * log behind the broker's back, as someone with database rights could):
 * a delegation (agent, then sub-agent) drawn as a graph and listed below it,
 * kill links only for those who may kill, a revoked token marked; the audit
 * filters narrowing the records; one record's detail with its hash; and the
 * chains' verification state, bounded per call, flagging an edited record.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { and, eq, sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { chainHash } from '../../src/audit/record.js'
import { createSqlAuditLog } from '../../src/audit/sql.js'
import { createAuditVerifier } from '../../src/audit/verification.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { openDatabase, type Database, type Db } from '../../src/storage/database.js'
import { auditLog } from '../../src/storage/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { consoleSignIn } from '../support/console.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { jtiOf } from '../support/tokens.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')

interface Verification {
  complete: boolean
  chains: { chain: string; verified_through_seq: number; last_seq: number; ok: boolean; problem: { seq: number; id: number | null; message: string } | null }[]
}

describePostgres('console Chains and Audit pages', () => {
  let dir: string
  let pg: TestDatabase
  let m: Mandate
  let database: Database
  let parent: string
  let child: string
  const cookies = new Map<string, { cookie: string; csrf: string }>()

  const userToken = async (sub: string) =>
    ((await (await m.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read demo:write"}' })).json()) as { access_token: string })
      .access_token
  const exchange = (id: string, secret: string, subjectToken: string, scope = 'demo:read') =>
    m.app.request('/oauth2/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: subjectToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://demo.example',
        scope,
      }).toString(),
    })

  async function signIn(person: string): Promise<{ cookie: string; csrf: string }> {
    const known = cookies.get(person)
    if (known !== undefined) return known
    const { cookie, csrf } = await consoleSignIn(m.app, person)
    cookies.set(person, { cookie, csrf })
    return { cookie, csrf }
  }
  const page = async (path: string, person = 'alice') => {
    const res = await m.app.request(path, { headers: { cookie: (await signIn(person)).cookie } })
    return { status: res.status, location: res.headers.get('location'), html: await res.text() }
  }
  const api = async <T>(path: string, person = 'alice') => {
    const res = await m.app.request(path, { headers: { cookie: (await signIn(person)).cookie } })
    expect(res.status, path).toBe(200)
    return (await res.json()) as T
  }
  const svgOf = (html: string) => /<svg class="graph"[\s\S]*?<\/svg>/.exec(html)?.[0] ?? ''
  const recordIds = (html: string) => [...html.matchAll(/href="\/console\/audit\/records\/(\d+)"/g)].map((x) => Number(x[1]))

  /** Runs `change` with the log's append-only trigger off, in one transaction. */
  const behindTrigger = (change: (tx: Db) => Promise<unknown>) =>
    database.db.transaction(async (tx) => {
      await tx.execute(sql`alter table audit_log disable trigger user`)
      await change(tx)
      await tx.execute(sql`alter table audit_log enable trigger user`)
    })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-console-chains-'))
    pg = await createTestDatabase()
    await cp(join(root, 'policies/dev'), join(dir, 'policies'), { recursive: true })
    const config = Config.parse({
      issuer: 'https://mandate.test',
      policies_dir: join(dir, 'policies'),
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      log: { level: 'silent' },
      storage: { database_url: pg.url },
    })
    m = await composeMandate(config, { dev: true, logger: createLogger('silent'), loadSignals: { eventLoopLag: () => 0 } })
    database = await openDatabase(pg.url, { dataDir: join(dir, 'data') })
    const user = await userToken('alice')
    const first = await exchange('demo-agent', 'demo-secret', user)
    expect(first.status).toBe(200)
    parent = ((await first.json()) as { access_token: string }).access_token
    const second = await exchange('demo-subagent', 'demo-sub-secret', parent)
    expect(second.status).toBe(200)
    child = ((await second.json()) as { access_token: string }).access_token
    // A denial, and another user's chain.
    expect((await exchange('demo-agent', 'demo-secret', user, 'demo:admin')).status).toBe(400)
    expect((await exchange('demo-agent', 'demo-secret', await userToken('bob'))).status).toBe(200)
  }, 120_000)

  afterAll(async () => {
    await m?.close()
    await database?.close()
    await pg?.drop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a chain page draws the user, the agent and the sub-agent, and lists the same tree below', async () => {
    const { status, html } = await page(`/console/chains/${jtiOf(child)}`)
    expect(status).toBe(200)
    const svg = svgOf(html)
    expect(svg).toMatch(/aria-label="Delegation tree of user alice: 2 tokens from agent demo-agent/)
    expect(svg).toContain('user alice')
    expect(svg).toMatch(/<g class="node agent active">[\s\S]*?>demo-agent</)
    expect(svg).toMatch(/<g class="node agent active asked">[\s\S]*?>demo-subagent</)
    // One edge user → agent, one agent → sub-agent; each node links to its entry below.
    expect(svg.match(/<path class="edge"/g)).toHaveLength(2)
    expect(svg).toContain(`href="#token-${jtiOf(parent)}"`)
    expect(svg).toContain(`href="#token-${jtiOf(child)}"`)
    // No inline style anywhere (the console's CSP allows none): presentation comes from classes.
    expect(html).not.toMatch(/\sstyle=/)
    // The list: the sub-agent's token nested inside the agent's.
    const list = html.slice(html.indexOf('<h2>Tokens</h2>'))
    const outer = list.indexOf(`id="token-${jtiOf(parent)}"`)
    const inner = list.indexOf(`id="token-${jtiOf(child)}"`)
    expect(outer).toBeGreaterThan(0)
    expect(inner).toBeGreaterThan(outer)
    expect(list.slice(outer, inner)).toContain('<ul class="tree">')
    expect(list).toMatch(/TTL|lifetime 5 min/)
    // alice is an admin: she may kill the chain and revoke each token.
    expect(html).toContain(`href="/console/kill?chain=${jtiOf(parent)}"`)
    expect(html).toContain(`href="/console/kill?jti=${jtiOf(child)}"`)
    expect(html).toContain(`href="/console/kill?jti=${jtiOf(parent)}"`)
  })

  it('a viewer sees the chain without the kill links', async () => {
    const { status, html } = await page(`/console/chains/${jtiOf(parent)}`, 'vera')
    expect(status).toBe(200)
    expect(svgOf(html)).toContain('demo-subagent')
    expect(html).not.toContain('/console/kill?')
    expect(html).not.toContain('Kill this chain')
  })

  it('finds chains by user (newest first) and by token; an unknown token is 404', async () => {
    const { html } = await page('/console/chains?user=alice')
    expect(html).toContain(`<a href="/console/chains/${jtiOf(parent)}">${jtiOf(parent)}</a>`)
    expect(html).toMatch(/demo-subagent, demo-agent|demo-agent, demo-subagent/)
    expect(html).toContain('1 chain of alice')
    expect(html).not.toContain(jtiOf(child)) // a delegated token is in its root's chain, not a chain of its own
    const bob = await page('/console/chains?user=bob')
    expect(bob.html).toContain('1 chain of bob')
    expect(bob.html).not.toContain(jtiOf(parent))
    expect(await page(`/console/chains?token=${jtiOf(child)}`)).toMatchObject({ status: 302, location: `/console/chains/${jtiOf(child)}` })
    expect((await page('/console/chains/no-such-token')).status).toBe(404)
  })

  it('a revoked token is marked, in the graph and the list, and its revocation listed', async () => {
    const { cookie, csrf } = await signIn('alice')
    const revoked = await m.app.request('/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie, 'x-csrf-token': csrf },
      body: JSON.stringify({ jti: jtiOf(child), reason: 'console chain test' }),
    })
    expect(revoked.status).toBe(201)
    const { html } = await page(`/console/chains/${jtiOf(parent)}`)
    const svg = svgOf(html)
    expect(svg).toMatch(/<g class="node agent revoked">[\s\S]*?>demo-subagent<[\s\S]*?>REVOKED</)
    expect(svg).toMatch(/<g class="node agent active asked">[\s\S]*?>demo-agent</)
    expect(svg).toMatch(/1 killed or revoked/)
    expect(html).toMatch(new RegExp(`id="token-${jtiOf(child)}"[\\s\\S]*?<span class="badge killed">revoked</span>`))
    expect(html).toContain('console chain test')
    // Nothing left to revoke on the revoked token; its parent still can be.
    expect(html).not.toContain(`href="/console/kill?jti=${jtiOf(child)}"`)
    expect(html).toContain(`href="/console/kill?jti=${jtiOf(parent)}"`)
  })

  it('audit filters narrow the records: event, agent, user, time', async () => {
    const all = await page('/console/audit')
    expect(all.status).toBe(200)
    expect(all.html).toContain('token.issued')
    expect(all.html).toContain('token.denied')
    const denied = await page('/console/audit?event=token.denied')
    expect(denied.html).toContain('<span class="badge denied">token.denied</span>')
    expect(denied.html).not.toContain('<span class="badge issued">token.issued</span>')
    expect(denied.html).toContain('invalid_scope')
    expect(recordIds(denied.html).length).toBeGreaterThan(0)
    expect(recordIds(denied.html).length).toBeLessThan(recordIds(all.html).length)
    const sub = await page('/console/audit?agent=demo-subagent&event=token.issued')
    expect(sub.html).toContain('1 record, newest first')
    const bob = await page('/console/audit?user=bob&event=token.*')
    expect(bob.html).toContain('1 record, newest first')
    expect(bob.html).not.toContain('>alice<')
    const past = await page('/console/audit?to=2000-01-01T00:00')
    expect(past.html).toContain('No record matches.')
    const bad = await page('/console/audit?from=yesterday')
    expect(bad.status).toBe(400)
    expect(bad.html).toContain('“from” is not a date and time')
    // The event choices hold each family.
    for (const family of ['token.*', 'revocation.*', 'approval.*', 'agent.*', 'admin.*']) expect(all.html).toContain(`<option value="${family}"`)
  })

  it('one record in full: its fields, its chain, seq and hash, as the admin API has them', async () => {
    const id = recordIds((await page('/console/audit?event=token.denied')).html)[0]!
    const entry = await api<{ id: number; chain: string; seq: number; hash: string; record: Record<string, unknown> }>(`/admin/audit/records/${id}`)
    expect(entry.record['event']).toBe('token.denied')
    const { status, html } = await page(`/console/audit/records/${id}`)
    expect(status).toBe(200)
    expect(html).toContain(`<h1>Record ${id}: token.denied</h1>`)
    expect(html).toContain(entry.hash)
    expect(html).toContain(entry.chain)
    expect(html).toContain(`<dd>${entry.seq}</dd>`)
    expect(html).toContain('<dt>reason</dt>')
    expect(html).toContain('&quot;event&quot;: &quot;token.denied&quot;')
    expect((await page('/console/audit/records/999999999')).status).toBe(404)
    expect((await page('/console/audit/records/abc')).status).toBe(404)
  })

  it('verification: each chain verified up to its last record, on the page too', async () => {
    const v = await api<Verification>('/admin/audit/verification')
    expect(v.chains.length).toBeGreaterThan(0)
    for (const ch of v.chains) expect(ch).toMatchObject({ ok: true, problem: null })
    // This read's own record is written before it is answered: every chain is verified to the end.
    expect(v.complete).toBe(true)
    const total = v.chains.reduce((n, ch) => n + ch.verified_through_seq, 0)
    const [{ count }] = (await database.db.select({ count: sql<number>`count(*)::int` }).from(auditLog)) as [{ count: number }]
    expect(total).toBeGreaterThan(10)
    expect(total).toBeLessThanOrEqual(count)
    const { html } = await page('/console/audit')
    expect(html).toMatch(/verified up to record \d+ of \d+ at <time/)
    expect(html).toContain('<span class="badge verified">verified</span>')
    expect(html).not.toContain('altered')
  })

  it('a bounded verifier carries a long chain forward over several calls, and catches a rewritten head', async () => {
    const verifier = createAuditVerifier(database.db, { now: () => 1_000, budget: 3, pageSize: 2, maxMillis: 60_000 })
    const first = await verifier.verify()
    expect(first.reduce((n, ch) => n + ch.verifiedThroughSeq, 0)).toBe(3)
    let rounds = 1
    let state = first
    while (state.some((ch) => ch.verifiedThroughSeq < ch.lastSeq) && rounds < 200) {
      state = await verifier.verify()
      rounds++
    }
    expect(rounds).toBeGreaterThan(3)
    // Out of time at once: each call still reads one page, so it makes progress.
    const hurried = createAuditVerifier(database.db, { now: () => 1_000, pageSize: 2, maxMillis: 0 })
    const through = async () => (await hurried.verify()).reduce((n, ch) => n + ch.verifiedThroughSeq, 0)
    expect(await through()).toBe(2)
    expect(await through()).toBe(4)
    expect(state.every((ch) => ch.ok && ch.verifiedThroughSeq === ch.lastSeq)).toBe(true)
    // Someone rewrites a chain's verified last record, hash and all: the verifier sees its head replaced.
    const target = state.find((ch) => ch.verifiedThroughSeq > 1)!
    const at = and(eq(auditLog.chainId, target.chain), eq(auditLog.seq, target.verifiedThroughSeq))
    const [row] = await database.db.select().from(auditLog).where(at)
    const edited = row!.record.replace(/"at":(\d+)/, (_, t: string) => `"at":${Number(t) + 1}`)
    expect(edited).not.toBe(row!.record)
    await behindTrigger((tx) =>
      tx
        .update(auditLog)
        .set({ record: edited, at: row!.at + 1, hash: chainHash(row!.prevHash, edited) })
        .where(at),
    )
    const after = (await verifier.verify()).find((ch) => ch.chain === target.chain)!
    expect(after.ok).toBe(false)
    expect(after.problem).toMatchObject({ seq: target.verifiedThroughSeq, id: row!.id })
    expect(after.problem!.message).toMatch(/replaced after it was verified/)
    // Put back, so that the broker's own verification (next test) sees the log as written.
    await behindTrigger((tx) => tx.update(auditLog).set({ record: row!.record, at: row!.at, hash: row!.hash }).where(at))
  })

  it('a chain deleted whole after it was verified is reported removed', async () => {
    // Another writer's chain of two records, verified, then every row of it deleted.
    const writer = createSqlAuditLog({
      database,
      instance: 'doomed-instance',
      clock: Date.now,
      groupMaxRecords: 10,
      groupMaxWaitMs: 0,
      writeTimeoutMs: 5_000,
      logger: createLogger('silent'),
    })
    const event = { type: 'key.rotated', at: 1_800_000_000, kid: 'k-1', previousKid: undefined } as const
    await writer.append(event)
    await writer.append({ ...event, kid: 'k-2', previousKid: 'k-1' })
    await writer.close()
    const verifier = createAuditVerifier(database.db, { now: () => 1_000, maxMillis: 60_000 })
    const [doomed] = (await verifier.verify()).filter((ch) => ch.instance === 'doomed-instance')
    expect(doomed).toMatchObject({ ok: true, verifiedThroughSeq: 2, lastSeq: 2 })
    await behindTrigger((tx) => tx.delete(auditLog).where(eq(auditLog.chainId, doomed!.chain)))
    const after = (await verifier.verify()).find((ch) => ch.chain === doomed!.chain)
    expect(after).toMatchObject({ ok: false, problem: { seq: 1, id: undefined } })
    expect(after!.problem!.message).toBe(`chain ${doomed!.chain} (instance doomed-instance) was removed after it was verified: it held 2 records`)
  })

  it('verification flags an edited record, naming it, and the page says so', async () => {
    // A token issued after the broker's last verification, its scopes then widened in the database.
    const extra = await exchange('demo-agent', 'demo-secret', await userToken('carol'))
    expect(extra.status).toBe(200)
    const jti = jtiOf(((await extra.json()) as { access_token: string }).access_token)
    const [row] = await database.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.event, 'token.issued'), eq(auditLog.jti, jti)))
    const edited = row!.record.replace('"scopes":["demo:read"]', '"scopes":["demo:admin","demo:read"]')
    expect(edited).not.toBe(row!.record)
    await behindTrigger((tx) => tx.update(auditLog).set({ record: edited }).where(eq(auditLog.id, row!.id)))
    const v = await api<Verification>('/admin/audit/verification')
    const flagged = v.chains.find((ch) => ch.chain === row!.chainId)!
    expect(flagged).toMatchObject({ ok: false, verified_through_seq: row!.seq - 1, problem: { seq: row!.seq, id: row!.id } })
    expect(flagged.problem!.message).toBe(`record ${row!.chainId}/${row!.seq} (id ${row!.id}) was changed: its content does not match its hash`)
    const { html } = await page('/console/audit')
    expect(html).toContain('<span class="badge killed">altered</span>')
    expect(html).toContain(`<a href="/console/audit/records/${row!.id}">record ${row!.chainId}/${row!.seq}`)
  })
})
