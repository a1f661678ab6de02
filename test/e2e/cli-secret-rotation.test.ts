/**
 * A client-secret rollover run as an operator runs it, against a real
 * `mandate serve --dev` (PGlite under its data dir) populated by real
 * exchanges: `mandate policy secret --rotate` edits the policy file (its
 * comment kept) and the broker reloads it, the old and the new secret both
 * work, `--retire` refuses while the ledger has not seen the new secret,
 * then retires the old one, which the broker then refuses. And the
 * inventory's credentials: `agents show`, `agents list --state shared-secret`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'

const root = new URL('../../', import.meta.url).pathname
const bin = join(root, 'bin/mandate.js')
const OLD = 'demo-secret'

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

describe('mandate policy secret --rotate / --retire against a running broker', () => {
  let server: ChildProcess
  let dir: string
  let policies: string
  let url: string
  let serverErr = ''

  function mandate(args: string[]): Promise<Run> {
    const env = { ...process.env, XDG_CONFIG_HOME: join(dir, 'xdg'), MANDATE_URL: url, MANDATE_ADMIN_KEY: 'demo-admin-key' }
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })))
  }

  async function exchange(secret: string): Promise<number> {
    const user = await fetch(`${url}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"demo:read"}' })
    const { access_token: subject } = (await user.json()) as { access_token: string }
    const res = await fetch(`${url}/oauth2/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`demo-agent:${encodeURIComponent(secret)}`).toString('base64')}`,
      },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: subject,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://demo.example',
      }).toString(),
    })
    await res.body?.cancel()
    return res.status
  }

  /** Waits (the broker reloads policies and flushes its ledger on its own) until `check` holds. */
  async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + 20_000
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`never: ${what}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-cli-secret-'))
    policies = join(dir, 'policies')
    await cp(join(root, 'policies/dev'), policies, { recursive: true })
    const port = await freePort()
    url = `http://127.0.0.1:${port}`
    const env: Record<string, string | undefined> = {
      ...process.env,
      PORT: String(port),
      MANDATE_DATA_DIR: join(dir, 'data'),
      MANDATE_POLICIES_DIR: policies,
      LOG_LEVEL: 'warn',
    }
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    server = spawn(process.execPath, [bin, 'serve', '--dev'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    server.stderr!.on('data', (d: Buffer) => (serverErr += d.toString()))
    server.stderr!.on('data', logSink('cli-secret test broker stderr'))
    server.stdout!.on('data', logSink('cli-secret test broker stdout'))
    const deadline = Date.now() + 50_000
    for (;;) {
      try {
        if ((await fetch(`${url}/healthz`)).ok) break
      } catch {
        // not listening yet
      }
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`broker did not start: ${serverErr}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }, 60_000)

  afterAll(async () => {
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    await rm(dir, { recursive: true, force: true })
  })

  it('rotates, serves both secrets, retires the old one once the new one was used, then refuses the old one', async () => {
    expect(await exchange(OLD)).toBe(200)

    const rotated = await mandate(['policy', 'secret', '--rotate', 'demo-agent', '--dir', policies, '--json'])
    expect(rotated.status, rotated.stderr).toBe(0)
    const { secret, secret_sha256: hash } = JSON.parse(rotated.stdout) as { secret: string; secret_sha256: string }
    const file = await readFile(join(policies, 'demo-agent.yaml'), 'utf8')
    expect(file).toContain('# sha256("demo-secret")')
    expect(file).toContain(`- ${hash}`)
    expect(file).toContain('# Dev only (loaded by `mandate serve --dev`)')

    // The new secret was not used yet: retiring the old one would lock the agent out.
    const early = await mandate(['policy', 'secret', '--retire', 'demo-agent', '--dir', policies])
    expect(early.status).toBe(1)
    expect(early.stderr).toContain('has not been used yet')
    expect(await readFile(join(policies, 'demo-agent.yaml'), 'utf8')).toBe(file)

    await eventually(async () => (await exchange(secret)) === 200, 'the reloaded policy accepts the new secret')
    expect(await exchange(OLD)).toBe(200)

    await eventually(async () => {
      const shown = await mandate(['agents', 'show', 'demo-agent', '--json'])
      const body = JSON.parse(shown.stdout) as { credentials: { credentials: { id: string }[] } }
      return body.credentials.credentials.some((c) => c.id === hash)
    }, 'the ledger holds the new secret')
    const human = await mandate(['agents', 'show', 'demo-agent'])
    expect(human.status).toBe(0)
    expect(human.stdout).toContain('credentials (max age 90 d)')
    expect(human.stdout).toContain(`${hash.slice(0, 16)}…`)
    expect(human.stdout).toMatch(/suggested fix: move to private_key_jwt/)

    const retired = await mandate(['policy', 'secret', '--retire', 'demo-agent', '--dir', policies])
    expect(retired.status, retired.stderr).toBe(0)
    expect(retired.stdout).toContain('retired 1 secret of demo-agent')
    expect(retired.stdout).toContain(`kept ${hash.slice(0, 12)}…, last used `)
    expect(await readFile(join(policies, 'demo-agent.yaml'), 'utf8')).toContain(`secret_sha256: ${hash}\n`)

    await eventually(async () => (await exchange(OLD)) === 401, 'the old secret is refused')
    expect(await exchange(secret)).toBe(200)
  }, 90_000)

  it('lists the agents still on shared secrets, with the suggested fix', async () => {
    const list = await mandate(['agents', 'list', '--state', 'shared-secret'])
    expect(list.status, list.stderr).toBe(0)
    expect(list.stdout).toContain('demo-agent')
    expect(list.stdout).toContain('demo-subagent')
    expect(list.stdout).toMatch(/credential/)
    expect(list.stdout).toContain('suggested fix for each: move to private_key_jwt')
    const json = await mandate(['agents', 'list', '--state', 'shared-secret', '--json'])
    const body = JSON.parse(json.stdout) as { agents: { agent: string; authentication: string; credentials: { kind: string } }[] }
    expect(body.agents.every((a) => a.authentication === 'client_secret_basic' && a.credentials.kind === 'secret')).toBe(true)
  })
})
