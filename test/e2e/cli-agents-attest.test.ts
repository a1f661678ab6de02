/**
 * `mandate agents attest` against a real `mandate serve --dev` (a separate
 * process, PGlite under its data dir) that issued real tokens: what a person
 * sees and what a script gets (--json), the admin role it needs, an unknown
 * agent, and the attestation shown back by `agents show` and `agents list --json`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'

const root = new URL('../../', import.meta.url).pathname
const bin = join(root, 'bin/mandate.js')
const AUDITOR_KEY = 'cli-attest-test-auditor-key-7c2e9a1b0d3f'
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

describe('mandate agents attest against a running broker', () => {
  let server: ChildProcess
  let dir: string
  let xdg: string
  let base: string
  let serverErr = ''

  function mandate(args: string[], key = 'demo-admin-key'): Promise<Run> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MANDATE_URL' && k !== 'MANDATE_ADMIN_KEY'))
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...env, XDG_CONFIG_HOME: xdg, MANDATE_URL: base, MANDATE_ADMIN_KEY: key },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })))
  }

  const exchange = async () => {
    const user = (await (await fetch(`${base}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"demo:read"}' })).json()) as { access_token: string }
    return fetch(`${base}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}` },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://demo.example',
        scope: 'demo:read',
      }).toString(),
    })
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-cli-attest-'))
    xdg = join(dir, 'xdg')
    await mkdir(xdg)
    const keysFile = join(dir, 'admin-keys.yaml')
    await writeFile(keysFile, `- name: auditor-only\n  sha256: ${sha256(AUDITOR_KEY)}\n  roles: [auditor]\n`)
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    const env: Record<string, string | undefined> = {
      ...process.env,
      PORT: String(port),
      MANDATE_DATA_DIR: join(dir, 'data'),
      MANDATE_ADMIN_KEYS_FILE: keysFile,
      LOG_LEVEL: 'warn',
    }
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    delete env['MANDATE_ADMIN_PORT']
    server = spawn(process.execPath, [bin, 'serve', '--dev'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    server.stderr!.on('data', (d: Buffer) => (serverErr += d.toString()))
    server.stderr!.on('data', logSink('cli-attest test broker stderr'))
    server.stdout!.on('data', logSink('cli-attest test broker stdout'))
    const deadline = Date.now() + 50_000
    for (;;) {
      try {
        if ((await fetch(`${base}/healthz`)).ok) break
      } catch {
        // not listening yet
      }
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`broker did not start: ${serverErr}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    expect((await exchange()).status).toBe(200)
  }, 60_000)

  afterAll(async () => {
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    await rm(dir, { recursive: true, force: true })
  })

  it('an agent never attested: "never" in agents show', async () => {
    const r = await mandate(['agents', 'show', 'demo-agent'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/attested\s+│?\s*never/)
  })

  it('attests for a person: one line naming the admin key and the next due date', async () => {
    const r = await mandate(['agents', 'attest', 'demo-agent', '--note', 'still needed'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^attested demo-agent at \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z as dev-admin; next attestation due \d{4}-\d{2}-\d{2}\n$/)
    expect(r.stderr).toBe('')
    const show = await mandate(['agents', 'show', 'demo-agent'])
    expect(show.stdout).toMatch(/attested\s+│?\s*\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z by dev-admin/)
    // Tokens still flow.
    expect((await exchange()).status).toBe(200)
  })

  it('--json for scripts, and the attestation in agents list --json', async () => {
    const r = await mandate(['agents', 'attest', 'demo-agent', '--json'])
    expect(r.status, r.stderr).toBe(0)
    const done = JSON.parse(r.stdout) as { agent: string; attested_at: string; by: string; next_due: string }
    expect(done).toMatchObject({ agent: 'demo-agent', by: 'dev-admin' })
    const list = JSON.parse((await mandate(['agents', 'list', '--json'])).stdout) as {
      agents: { agent: string; attestation: { last_attested_at: string; by: string; next_due: string } | null }[]
    }
    expect(list.agents.find((a) => a.agent === 'demo-agent')!.attestation).toEqual({
      last_attested_at: done.attested_at,
      by: 'dev-admin',
      next_due: done.next_due,
    })
  })

  it('an auditor key may not attest (exit 4); an unknown agent is a refusal (exit 1)', async () => {
    const auditor = await mandate(['agents', 'attest', 'demo-agent'], AUDITOR_KEY)
    expect(auditor.status).toBe(4)
    expect(auditor.stderr).toMatch(/403 forbidden: this key may not attest\).*attest the admin role/)
    const unknown = await mandate(['agents', 'attest', 'no-such-agent'])
    expect(unknown.status).toBe(1)
    expect(unknown.stderr).toBe('mandate: 404 not_found: no policy names that agent\n')
  })
})
