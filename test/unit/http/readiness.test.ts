/**
 * /readyz on the real app over real files: a rejected policy reload, a
 * policies directory that went away, a keys file that went away. Each turns
 * the broker not ready (503, the reason in the body) while the last good
 * state keeps serving, and ready again once the files are back. The tests
 * wait for the watcher to act (polling the probe), never for a set time.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { basic, SECRET, startTestBroker, type TestBroker } from '../../support/broker.js'
import { expectToken } from './helpers.js'

interface ReadyBody {
  status: string
  reasons: { check: string; detail: string }[]
  [check: string]: unknown
}

const CHECKS = ['revocation_mirror', 'replay_cache', 'audit_log', 'signing_keys', 'policies', 'upstream_jwks']

async function readyz(b: TestBroker): Promise<{ status: number; body: ReadyBody; cacheControl: string | null }> {
  const res = await Promise.resolve(b.mandate.app.request('/readyz'))
  return { status: res.status, body: (await res.json()) as ReadyBody, cacheControl: res.headers.get('cache-control') }
}

/** Polls the probe until `status` (the watcher reacts to the file system in its own time). */
async function readyzUntil(b: TestBroker, status: number) {
  return vi.waitFor(
    async () => {
      const r = await readyz(b)
      expect(r.status, JSON.stringify(r.body)).toBe(status)
      return r
    },
    { timeout: 4_000, interval: 25 },
  )
}

describe('/readyz', { timeout: 15_000 }, () => {
  let b: TestBroker | undefined
  afterEach(async () => {
    await b?.close()
    b = undefined
  })

  it('answers 200 ready with every check named and ready, no-store', async () => {
    b = await startTestBroker()
    const r = await readyz(b)
    expect(r.status).toBe(200)
    expect(r.cacheControl).toBe('no-store')
    expect(r.body.status).toBe('ready')
    expect(r.body.reasons).toEqual([])
    for (const check of CHECKS) expect(r.body[check], check).toMatchObject({ ready: true })
    expect(r.body['upstream_jwks']).toMatchObject({
      issuers: [
        { issuer: 'https://idp.test', role: 'subjects', state: 'local' },
        { issuer: 'https://workloads.test', role: 'workloads', state: 'local' },
      ],
    })
    expect((await Promise.resolve(b.mandate.app.request('/healthz'))).status).toBe(200)
  })

  it('a rejected policy reload: 503 naming file and line until a good reload; the last good set serves meanwhile', async () => {
    b = await startTestBroker({ filePollMs: 50 })
    const file = join(b.mandate.config.policies_dir, 'workload-agent.yaml')
    const good = await readFile(file, 'utf8')
    await writeFile(file, good.replace(/^owner: .*\n/m, ''))

    const r = await readyzUntil(b, 503)
    expect(r.cacheControl).toBe('no-store')
    expect(r.body.status).toBe('not_ready')
    expect(r.body.reasons).toEqual([{ check: 'policies', detail: expect.stringContaining(`${file}:`) }])
    expect(r.body['policies']).toMatchObject({
      ready: false,
      agents: 5,
      issue_count: 1,
      issues: [expect.stringMatching(new RegExp(`^${file}:\\d+:\\d+: owner: `))],
    })
    // Only the policies check failed.
    for (const check of CHECKS.filter((c) => c !== 'policies')) expect(r.body[check], check).toMatchObject({ ready: true })
    // The last good set still serves.
    await expectToken(await b.token(b.exchangeForm(await b.userToken()), basic('secret-agent', SECRET)))

    await writeFile(file, good)
    const back = await readyzUntil(b, 200)
    expect(back.body['policies']).toMatchObject({ ready: true, agents: 5, issue_count: 0, issues: [] })
  })

  it('the policies directory removed: 503 naming it; ready again once it is back', async () => {
    b = await startTestBroker({ filePollMs: 50 })
    const dir = b.mandate.config.policies_dir
    const files = new Map<string, string>()
    for (const name of await readdir(dir)) files.set(name, await readFile(join(dir, name), 'utf8'))
    await rm(dir, { recursive: true })

    const r = await readyzUntil(b, 503)
    expect(r.body.reasons).toEqual([{ check: 'policies', detail: expect.stringContaining(`${dir}:0:0: cannot read directory (ENOENT)`) }])
    expect(r.body['policies']).toMatchObject({ ready: false, agents: 5 })

    await mkdir(dir)
    for (const [name, text] of files) await writeFile(join(dir, name), text)
    await readyzUntil(b, 200)
  })

  it('the keys file removed: 503 on signing_keys while the last good key still signs; ready again once it is back', async () => {
    b = await startTestBroker({ filePollMs: 20 })
    const file = join(b.mandate.config.data_dir, 'signing-keys.json')
    const text = await readFile(file, 'utf8')
    const before = await readyz(b)
    await rm(file)

    const r = await readyzUntil(b, 503)
    expect(r.body.reasons).toEqual([{ check: 'signing_keys', detail: expect.stringContaining('ENOENT') }])
    expect(r.body['signing_keys']).toMatchObject({
      ready: false,
      keys_file: 'unusable',
      signing: (before.body['signing_keys'] as { signing: string }).signing,
    })
    expect(JSON.stringify(r.body)).not.toContain('"d":')

    await writeFile(file, text, { mode: 0o600 })
    const back = await readyzUntil(b, 200)
    expect(back.body['signing_keys']).toMatchObject({ ready: true, keys_file: 'ok' })
  })
})
