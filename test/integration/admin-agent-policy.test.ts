/**
 * GET /admin/agents/{id}/policy: the file as written, with its path, secret
 * hashes redacted; `current` turns false once the file is edited and the
 * edit is not in force.
 */
import { writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_KEYS, bearer, startTestBroker, type TestBroker } from '../support/broker.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'

const SECRET_HASH = hashClientSecret('policy-file-secret-0123456789abcdef').toString('hex')
const POLICY = `# The reporting agent: reads the ledger for the monthly report.
agent: reporter
owner: finance@example.com
purpose: monthly report
expires: 2099-01-01
authentication:
  method: client_secret_basic
  secret_sha256: [${SECRET_HASH}]
grants:
  - audience: https://api.test # the ledger
    scopes: [read]
token_ttl: { default: 300, max: 300 }
`

describe('GET /admin/agents/{id}/policy', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ policies: { 'reporter.yaml': POLICY }, logLevel: 'warn', filePollMs: 3_600_000 })
  })
  afterAll(async () => {
    await b?.close()
  })
  const get = (path: string, key: string | null = ADMIN_KEYS.auditor) => b.mandate.app.request(path, { headers: key === null ? {} : bearer(key) })

  it('answers the file’s text, comments kept, the secret hash redacted, and where it was loaded from', async () => {
    const res = await get('/admin/agents/reporter/policy')
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    const body = (await res.json()) as Record<string, unknown>
    expect(body['file']).toMatch(/\/policies\/reporter\.yaml$/)
    expect(body['current']).toBe(true)
    expect(body['redacted']).toEqual(['authentication.secret_sha256'])
    expect(body['yaml']).toBe(POLICY.replace(SECRET_HASH, "'<redacted>'"))
    expect(JSON.stringify(body)).not.toContain(SECRET_HASH)
    expect(body['sha256']).toMatch(/^[0-9a-f]{64}$/)
  })

  it('says when the file no longer holds the text in force', async () => {
    const before = (await (await get('/admin/agents/reporter/policy')).json()) as { file: string }
    await writeFile(before.file, POLICY.replace('monthly report', 'weekly report'))
    const after = (await (await get('/admin/agents/reporter/policy')).json()) as Record<string, unknown>
    expect(after['current']).toBe(false)
    expect(String(after['yaml'])).toContain('weekly report')
  })

  it('refuses without a key (401), and an agent no policy names is 404', async () => {
    expect((await get('/admin/agents/reporter/policy', null)).status).toBe(401)
    const missing = await get('/admin/agents/nobody/policy')
    expect(missing.status).toBe(404)
    expect(((await missing.json()) as { error: string }).error).toBe('not_found')
  })
})
