/**
 * The delegation log over HTTP, on the embedded default (PGlite): the
 * /admin/audit routes (RBAC, validation, filters, keyset pages, the
 * delegation tree), admin reads recorded with their caller, and the token
 * endpoint failing closed (503, no token) when the log cannot take a record.
 */
import { createHash } from 'node:crypto'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AuditUnavailable, type AuditEvent, type AuditLog } from '../../src/audit/port.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import { createLogger } from '../../src/telemetry/log.js'
import { jtiOf } from '../support/tokens.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const ISSUER = 'https://mandate.test'
const KEYS = { responder: 'responder-key-0123456789', auditor: 'auditor-key-0123456789', admin: 'admin-key-0123456789' } as const

async function setup(dir: string, audit?: AuditLog): Promise<Mandate> {
  const policies = join(dir, 'policies')
  // The human-approval walkthrough's agent (demo-payer) is not this test's: its figures count the exchange agents only.
  await cp(join(root, 'policies/dev'), policies, { recursive: true, filter: (f) => !f.endsWith('demo-payer.yaml') })
  const config = Config.parse({
    issuer: ISSUER,
    policies_dir: policies,
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    log: { level: 'silent' },
    admin: {
      keys: Object.entries(KEYS).map(([role, key]) => ({ name: `${role}-holder`, sha256: createHash('sha256').update(key).digest('hex'), roles: [role] })),
    },
  })
  return composeMandate(config, {
    dev: true,
    logger: createLogger('silent'),
    // A busy test machine must not shed these requests.
    loadSignals: { eventLoopLag: () => 0 },
    ...(audit === undefined ? {} : { audit, revocationLog: createMemoryRevocationLog() }),
  })
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` })

async function userToken(m: Mandate, sub: string): Promise<string> {
  const res = await m.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read demo:write"}' })
  return ((await res.json()) as { access_token: string }).access_token
}

function exchange(m: Mandate, auth: Record<string, string>, subjectToken: string, extra: Record<string, string> = {}) {
  return m.app.request('/oauth2/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'https://demo.example',
      scope: 'demo:read',
      ...extra,
    }).toString(),
  })
}

interface Entry {
  id: number
  chain: string
  seq: number
  hash: string
  record: Record<string, unknown>
}

describe('/admin/audit over PGlite', () => {
  let dir: string
  let m: Mandate
  let parent: string
  let child: string

  const get = (path: string, key?: string) => m.app.request(path, { headers: key === undefined ? {} : bearer(key) })
  const page = async (query: string, key: string = KEYS.auditor) => {
    const res = await get(`/admin/audit${query}`, key)
    expect(res.status, await res.clone().text()).toBe(200)
    return (await res.json()) as { records: Entry[]; next: string | null }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-admin-audit-'))
    m = await setup(dir)
    const user = await userToken(m, 'alice')
    const first = await exchange(m, basic('demo-agent', 'demo-secret'), user)
    expect(first.status).toBe(200)
    parent = ((await first.json()) as { access_token: string }).access_token
    const second = await exchange(m, basic('demo-subagent', 'demo-sub-secret'), parent)
    expect(second.status).toBe(200)
    child = ((await second.json()) as { access_token: string }).access_token
    // A denial, and another user's issuance.
    expect((await exchange(m, basic('demo-agent', 'demo-secret'), user, { scope: 'demo:admin' })).status).toBe(400)
    expect((await exchange(m, basic('demo-agent', 'demo-secret'), await userToken(m, 'bob'))).status).toBe(200)
  }, 60_000)

  afterAll(async () => {
    await m?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it.each(['/admin/audit', '/admin/audit/chains/some-jti', '/admin/audit/records/1', '/admin/audit/verification'])(
    '%s refuses a missing key, a wrong key (401) and a key without read (403)',
    async (path) => {
      const missing = await get(path)
      expect(missing.status).toBe(401)
      expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/)
      expect((await get(path, 'not-a-key')).status).toBe(401)
      expect((await get(path, KEYS.responder)).status).toBe(403)
      expect([200, 404]).toContain((await get(path, KEYS.auditor)).status)
      expect([200, 404]).toContain((await get(path, KEYS.admin)).status)
    },
  )

  it.each([
    ['?bogus=1', 'unknown parameter: bogus'],
    ['?event=token.nope', 'invalid event'],
    ['?event=nope.*', 'invalid event'],
    ['?limit=0', 'invalid limit'],
    ['?limit=501', 'invalid limit'],
    ['?limit=ten', 'invalid limit'],
    ['?before=abc', 'invalid before'],
    ['?from=yesterday', 'invalid from'],
    ['?from=2000&to=1000', 'from is after to'],
    ['?to=999999999999', 'invalid to'],
    ['?sub=a%00b', 'invalid sub'],
    ['?iss=https%3A%2F%2Fidp.test', 'iss names the issuer of a user'],
  ])('GET /admin/audit%s is 400 (%s), and records nothing', async (query, message) => {
    const before = (await page('?event=admin.audit.read&limit=1')).records[0]!.id
    const res = await get(`/admin/audit${query}`, KEYS.auditor)
    expect(res.status).toBe(400)
    const body = (await res.json()) as { error: string; error_description: string }
    expect(body.error).toBe('invalid_request')
    expect(body.error_description).toContain(message)
    // The only newer admin.audit.read is the next probe's own.
    const after = (await page('?event=admin.audit.read&limit=2')).records
    expect(after[1]!.id).toBe(before)
  })

  it('lists token.issued newest first with the whole record, and filters by agent, sub, jti, event family and time', async () => {
    const issued = (await page('?event=token.issued')).records
    expect(issued.map((e) => e.record['sub'])).toEqual(['bob', 'alice', 'alice'])
    const childRecord = issued[1]!.record
    expect(childRecord).toMatchObject({
      event: 'token.issued',
      agent: 'demo-subagent',
      actors: ['demo-subagent', 'demo-agent'],
      sub: 'alice',
      jti: jtiOf(child),
      parent_jti: jtiOf(parent),
      root_jti: jtiOf(parent),
      aud: 'https://demo.example',
      scopes: ['demo:read'],
    })
    expect(childRecord['trace_id']).toMatch(/^[0-9a-f]{32}$/)
    expect(JSON.stringify(issued)).not.toContain(child) // never the token itself

    expect((await page('?agent=demo-subagent&event=token.*')).records.map((e) => e.record['jti'])).toEqual([jtiOf(child)])
    expect((await page('?agent=demo-agent&event=token.issued')).records).toHaveLength(3) // in the chain of the child too
    expect((await page('?sub=bob')).records.every((e) => e.record['sub'] === 'bob')).toBe(true)
    expect((await page(`?jti=${jtiOf(parent)}`)).records.map((e) => e.record['event'])).toEqual(['token.issued'])
    const denied = (await page('?event=token.denied')).records
    expect(denied).toHaveLength(1)
    expect(denied[0]!.record).toMatchObject({ error: 'invalid_scope', agent: 'demo-agent', sub: 'alice' })
    const at = issued[0]!.record['at'] as number
    expect((await page(`?event=token.issued&from=${at + 3600}`)).records).toEqual([])
    expect((await page(`?event=token.issued&to=${new Date((at + 3600) * 1000).toISOString()}`)).records).toHaveLength(3)
    expect((await page('?event=policy.loaded')).records.map((e) => e.record['agent']).sort()).toEqual(['demo-agent', 'demo-subagent'])
    expect((await page('?event=key.rotated')).records).toHaveLength(1)
  })

  it('pages by keyset: every record once, newest first, next null on the last page', async () => {
    const all = (await page('?limit=500')).records
    const seen: number[] = []
    let cursor: string | null = null
    do {
      const p: { records: Entry[]; next: string | null } = await page(`?limit=3${cursor === null ? '' : `&before=${cursor}`}`)
      seen.push(...p.records.map((e) => e.id))
      cursor = p.next
    } while (cursor !== null)
    // Each page read is itself recorded, after the first listing: compare what existed then.
    const expected = all.map((e) => e.id)
    expect(seen.filter((id) => id <= expected[0]!)).toEqual(expected)
    expect([...seen].sort((a, b) => b - a)).toEqual(seen)
  })

  it('serves the delegation tree around a token, with the revocations touching it', async () => {
    const revoked = await m.app.request('/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(KEYS.responder) },
      body: JSON.stringify({ chain: jtiOf(child), reason: 'tree test' }),
    })
    expect(revoked.status).toBe(201)
    const res = await get(`/admin/audit/chains/${jtiOf(child)}`, KEYS.auditor)
    expect(res.status).toBe(200)
    const tree = (await res.json()) as {
      tokens: number
      root: { jti: string; agent: string; children: { jti: string; agent: string; parent: string; actors: string[]; children: unknown[] }[] }
      revocations: Entry[]
    }
    expect(tree.tokens).toBe(2)
    expect(tree.root).toMatchObject({ jti: jtiOf(parent), agent: 'demo-agent' })
    expect(tree.root.children).toHaveLength(1)
    expect(tree.root.children[0]).toMatchObject({
      jti: jtiOf(child),
      agent: 'demo-subagent',
      parent: jtiOf(parent),
      actors: ['demo-subagent', 'demo-agent'],
      children: [],
    })
    expect(tree.revocations.map((r) => r.record['event'])).toEqual(['revocation.created'])
    expect(tree.revocations[0]!.record).toMatchObject({ by: 'responder-holder', revocation: { kind: 'chain', jti: jtiOf(child), reason: 'tree test' } })
    // The same tree from the root's side.
    expect(((await (await get(`/admin/audit/chains/${jtiOf(parent)}`, KEYS.auditor)).json()) as { tokens: number }).tokens).toBe(2)
    expect((await get('/admin/audit/chains/unknown-jti', KEYS.auditor)).status).toBe(404)
  })

  it('user queries key on (iss, sub): alice at another issuer is another user; a kill naming no issuer matches both', async () => {
    const issued = (await page('?event=token.issued&sub=alice')).records
    const devIssuer = issued[0]!.record['sub_iss'] as string
    expect(devIssuer).toMatch(/^https:\/\//)
    const other = 'https://other-idp.test'
    const kill = await m.app.request('/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(KEYS.responder) },
      body: JSON.stringify({ sub: 'alice', iss: other, force: true, reason: 'other IdP' }),
    })
    expect(kill.status).toBe(201)
    const atDev = (await page(`?sub=alice&iss=${encodeURIComponent(devIssuer)}&event=token.*`)).records
    expect(atDev.map((e) => e.record['event'])).toEqual(['token.denied', 'token.issued', 'token.issued'])
    // The denial knows whose token it refused: the user is named with the issuer.
    expect(atDev[0]!.record).toMatchObject({ sub: 'alice', sub_iss: devIssuer })
    expect((await page(`?sub=alice&iss=${encodeURIComponent(devIssuer)}&event=revocation.*`)).records).toEqual([])
    const atOther = (await page(`?sub=alice&iss=${encodeURIComponent(other)}`)).records
    expect(atOther.map((e) => e.record['event'])).toEqual(['revocation.created'])
    expect(atOther[0]!.record).toMatchObject({ revocation: { kind: 'sub', sub: 'alice', iss: other } })
    // Without iss, every alice.
    expect((await page('?sub=alice&event=revocation.*')).records).toHaveLength(1)
    // alice@dev's delegation tree is untouched by alice@other's kill.
    const tree = (await (await get(`/admin/audit/chains/${jtiOf(child)}`, KEYS.auditor)).json()) as { revocations: Entry[] }
    expect(tree.revocations.map((r) => (r.record['revocation'] as { kind: string }).kind)).not.toContain('sub')
  })

  it('serves one record by its id, as the query showed it, and records the read', async () => {
    const [denied] = (await page('?event=token.denied&limit=1')).records
    const res = await get(`/admin/audit/records/${denied!.id}`, KEYS.auditor)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(await res.json()).toEqual(denied)
    const [read] = (await page('?event=admin.*&limit=2')).records.slice(1)
    expect(read!.record).toMatchObject({ event: 'admin.audit.read', by: 'auditor-holder', request: `/admin/audit/records/${denied!.id}` })
    expect((await get('/admin/audit/records/999999999', KEYS.auditor)).status).toBe(404)
    for (const bad of ['0', 'abc', '-1', '1e3', '1234567890123456789']) {
      const refused = await get(`/admin/audit/records/${bad}`, KEYS.auditor)
      expect(refused.status, bad).toBe(400)
      expect(await refused.json()).toMatchObject({ error: 'invalid_request' })
    }
  })

  it('says each chain is verified up to its last record, and what was checked', async () => {
    const res = await get('/admin/audit/verification', KEYS.auditor)
    expect(res.status).toBe(200)
    const body = (await res.json()) as {
      checked: string
      complete: boolean
      chains: { verified_through_seq: number; last_seq: number; ok: boolean; at: string }[]
    }
    expect(body.complete).toBe(true)
    expect(body.checked).toMatch(/hash/)
    // PGlite: one chain, this broker's.
    expect(body.chains).toHaveLength(1)
    expect(body.chains[0]).toMatchObject({ ok: true, problem: null })
    expect(body.chains[0]!.verified_through_seq).toBe(body.chains[0]!.last_seq)
    expect(body.chains[0]!.verified_through_seq).toBeGreaterThan(5)
    expect(Date.parse(body.chains[0]!.at)).toBeGreaterThan(Date.now() - 60_000)
  })

  it('records every admin read with its caller and request', async () => {
    expect((await get('/admin/revocations?limit=5', KEYS.auditor)).status).toBe(200)
    const reads = (await page('?event=admin.*&limit=2')).records
    // Newest first: this very query, then the revocation list.
    expect(reads[0]!.record).toMatchObject({ event: 'admin.audit.read', by: 'auditor-holder', request: '/admin/audit?event=admin.*&limit=2' })
    expect(reads[1]!.record).toMatchObject({ event: 'admin.revocations.read', by: 'auditor-holder', request: '/admin/revocations?limit=5' })
  })
})

describe('the token endpoint when the log cannot write', () => {
  let dir: string
  let m: Mandate
  let failing = false
  const appended: AuditEvent[] = []
  const audit: AuditLog = {
    append(event) {
      if (failing && event.type === 'token.issued') return Promise.reject(new AuditUnavailable('database down', 'not_written'))
      appended.push(event)
      return Promise.resolve({ seq: appended.length })
    },
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-audit-down-'))
    m = await setup(dir, audit)
  }, 60_000)
  afterAll(async () => {
    await m?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('answers 503 temporarily_unavailable with Retry-After and no token, then issues again once it can write', async () => {
    const user = await userToken(m, 'carol')
    failing = true
    const res = await exchange(m, basic('demo-agent', 'demo-secret'), user)
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('1')
    expect(res.headers.get('cache-control')).toBe('no-store')
    const body = (await res.json()) as Record<string, unknown>
    expect(body['error']).toBe('temporarily_unavailable')
    expect(body['access_token']).toBeUndefined()
    expect(JSON.stringify(body)).not.toMatch(/at |\.ts:|database down/) // no stack, no internals
    expect(appended.filter((e) => e.type === 'token.issued' || e.type === 'token.denied')).toEqual([])
    failing = false
    const again = await exchange(m, basic('demo-agent', 'demo-secret'), user)
    expect(again.status).toBe(200)
    expect(appended.filter((e) => e.type === 'token.issued')).toHaveLength(1)
  })
})
