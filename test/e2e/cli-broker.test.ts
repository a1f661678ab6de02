/**
 * `mandate revoke` against a real `mandate serve --dev` (a separate process,
 * its admin API on a port of its own): what a person sees, and the exit code
 * a script branches on, when the broker is down, the key is missing, wrong
 * or under-privileged, or the broker refuses the request; tables and --json;
 * and where the URL and the key come from (flag, environment, profile file).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'

const root = new URL('../../', import.meta.url).pathname
const bin = join(root, 'bin/mandate.js')
const AUDITOR_KEY = 'cli-broker-test-auditor-key-5d1f0c2b9a8e7d6c'
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

describe('mandate revoke against a running broker', () => {
  let server: ChildProcess
  let dir: string
  /** An empty XDG_CONFIG_HOME: no profile unless a test writes one. */
  let xdg: string
  let main: string
  let admin: string
  let serverErr = ''

  /** Runs the CLI with a clean environment: no MANDATE_URL, no MANDATE_ADMIN_KEY, no profile, unless given. */
  function mandate(args: string[], env: Record<string, string> = {}): Promise<Run> {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MANDATE_URL' && k !== 'MANDATE_ADMIN_KEY'))
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env: { ...base, XDG_CONFIG_HOME: xdg, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })))
  }
  const asAdmin = (args: string[], env: Record<string, string> = {}) => mandate(args, { MANDATE_URL: admin, MANDATE_ADMIN_KEY: 'demo-admin-key', ...env })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-cli-broker-'))
    xdg = join(dir, 'xdg')
    await mkdir(xdg)
    const keysFile = join(dir, 'admin-keys.yaml')
    await writeFile(keysFile, `- name: auditor-only\n  sha256: ${sha256(AUDITOR_KEY)}\n  roles: [auditor]\n`)
    const [port, adminPort] = [await freePort(), await freePort()]
    main = `http://127.0.0.1:${port}`
    admin = `http://127.0.0.1:${adminPort}`
    const env: Record<string, string | undefined> = {
      ...process.env,
      PORT: String(port),
      MANDATE_ADMIN_PORT: String(adminPort),
      MANDATE_DATA_DIR: join(dir, 'data'),
      MANDATE_ADMIN_KEYS_FILE: keysFile,
      LOG_LEVEL: 'warn',
    }
    // PGlite under the data dir: the broker is this test's own.
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    server = spawn(process.execPath, [bin, 'serve', '--dev'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    server.stderr!.on('data', (d: Buffer) => (serverErr += d.toString()))
    server.stderr!.on('data', logSink('cli-broker test broker stderr'))
    server.stdout!.on('data', logSink('cli-broker test broker stdout'))
    const deadline = Date.now() + 50_000
    for (;;) {
      try {
        if ((await fetch(`${admin}/healthz`)).ok && (await fetch(`${main}/healthz`)).ok) break
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

  it('a broker that is down: exit 5, and how to point at one', async () => {
    const down = `http://127.0.0.1:${await freePort()}`
    const viaFlag = await mandate(['revoke', 'list', '--url', down], { MANDATE_ADMIN_KEY: 'demo-admin-key' })
    expect(viaFlag.status).toBe(5)
    expect(viaFlag.stderr).toBe(`mandate: cannot reach the broker at ${down} (--url): is it running? (set MANDATE_URL or --url)\n`)
    expect(viaFlag.stdout).toBe('')
    const viaEnv = await mandate(['revoke', 'agent', 'demo-agent', '--reason', 'r'], { MANDATE_URL: down, MANDATE_ADMIN_KEY: 'demo-admin-key' })
    expect(viaEnv.status).toBe(5)
    expect(viaEnv.stderr).toContain(`cannot reach the broker at ${down} (MANDATE_URL): is it running?`)
  })

  it('no admin key: exit 4, naming both places one can be', async () => {
    const r = await mandate(['revoke', 'list'], { MANDATE_URL: admin })
    expect(r.status).toBe(4)
    expect(r.stderr).toBe(
      `mandate: no admin key: set MANDATE_ADMIN_KEY, or admin_key_file in ${join(xdg, 'mandate', 'config.yaml')} (dev mode: demo-admin-key)\n`,
    )
  })

  it('a wrong key: the broker answers 401, exit 4, naming where the key came from', async () => {
    const r = await asAdmin(['revoke', 'list'], { MANDATE_ADMIN_KEY: 'not-the-key' })
    expect(r.status).toBe(4)
    expect(r.stderr).toBe(`mandate: the broker at ${admin} refused the admin key from MANDATE_ADMIN_KEY (401 unauthorized: a valid admin key is required)\n`)
    expect(r.stderr).not.toContain('not-the-key')
  })

  it('a key without the role: the broker answers 403, exit 4, naming the roles needed', async () => {
    const r = await asAdmin(['revoke', 'agent', 'demo-agent', '--reason', 'r'], { MANDATE_ADMIN_KEY: AUDITOR_KEY })
    expect(r.status).toBe(4)
    expect(r.stderr).toMatch(
      /^mandate: the admin key from MANDATE_ADMIN_KEY is valid but may not do this \(403 forbidden: this key may not revoke\): revoke and lift need the responder or admin role/,
    )
    // The same key may read.
    expect((await asAdmin(['revoke', 'list'], { MANDATE_ADMIN_KEY: AUDITOR_KEY })).status).toBe(0)
  })

  it('a refusal (4xx): exit 1 with the error and its description', async () => {
    const unknown = await asAdmin(['revoke', 'agent', 'no-such-agent', '--reason', 'r'])
    expect(unknown.status).toBe(1)
    expect(unknown.stderr).toMatch(/^mandate: 404 not_found: no policy defines agent no-such-agent; to kill that id anyway .*\n$/)
    const untrusted = await asAdmin(['revoke', 'sub', 'alice', '--iss', 'https://elsewhere.example', '--reason', 'r'])
    expect(untrusted.status).toBe(1)
    expect(untrusted.stderr).toMatch(/^mandate: 400 invalid_request: iss is not trusted for user subjects/)
  })

  it('the main port of a broker whose admin API has a port of its own: exit 1 and where to look', async () => {
    const r = await asAdmin(['revoke', 'list'], { MANDATE_URL: main })
    expect(r.status).toBe(1)
    expect(r.stderr).toBe(
      'mandate: 404 not_found: no such route on this port (the admin API may be on a port of its own, listen.admin_port / MANDATE_ADMIN_PORT: point MANDATE_URL at it)\n',
    )
  })

  it('policy explain: every check with --json, a list for people; exit 0 granted, 1 denied (auditor key)', async () => {
    const user = ['--user', 'https://users.dev.mandate.invalid:alice', '--agent', 'demo-agent', '--audience', 'https://demo.example']
    const auditor = { MANDATE_ADMIN_KEY: AUDITOR_KEY }
    const granted = await asAdmin(['policy', 'explain', ...user, '--scope', 'demo:read', '--json'], auditor)
    expect(granted.status, granted.stderr).toBe(0)
    const g = JSON.parse(granted.stdout) as { decision: string; checks: { check: string; outcome: string }[] }
    expect(g.decision).toBe('granted')
    expect(g.checks.map((c) => c.check)).toContain('rate_limit')
    const denied = await asAdmin(['policy', 'explain', ...user, '--scope', 'demo:delete'], auditor)
    expect(denied.status).toBe(1)
    expect(denied.stdout).toMatch(/^denied at scope: 400 invalid_scope/)
    expect(denied.stdout).toMatch(/^ {2}FAIL scope \(invalid_scope\): beyond=demo:delete$/m)
    expect((await asAdmin(['policy', 'explain', '--user', 'nocolon', '--agent', 'a', '--audience', 'x'], auditor)).status).toBe(2)
  })

  it('usage errors exit 2 before anything is sent', async () => {
    const blank = await asAdmin(['revoke', 'agent', 'demo-agent', '--reason', '  '])
    expect(blank.status).toBe(2)
    expect(blank.stderr).toMatch(/^error: option '--reason <text>' argument ' {2}' is invalid\. must say why/)
    expect((await asAdmin(['revoke', 'list', '--limit', '0'])).status).toBe(2)
    expect((await asAdmin(['revoke', 'list', '--url', 'ftp://x'])).stderr).toBe('mandate: --url must be an http(s) URL (got ftp:)\n')
  })

  it('revoke, list and lift: a table for people, the broker’s JSON with --json; a second lift is 409, exit 1', async () => {
    const kill = await asAdmin(['revoke', 'agent', 'demo-subagent', '--reason', 'prompt injection seen in ticket 4711'])
    expect(kill.status, kill.stderr).toBe(0)
    expect(kill.stdout).toMatch(/^revoked agent agent=demo-subagent\n┌/)
    expect(kill.stdout).toMatch(/│ reason +│ prompt injection seen in ticket 4711 +│/)
    expect(kill.stdout).toMatch(/│ state +│ in force +│/)
    const id = /│ id +│ ([0-9a-f-]{36}) +│/.exec(kill.stdout)?.[1]
    expect(id).toBeDefined()

    // Where it has reached: this one process, which applied it; no feed stream, no SSF receiver.
    const status = await asAdmin(['revoke', 'status', id!], { MANDATE_ADMIN_KEY: AUDITOR_KEY })
    expect(status.status, status.stderr).toBe(0)
    expect(status.stdout).toMatch(new RegExp(`^agent ${String(id)} made [0-9-]+ [0-9:]+Z: COMPLETE \\(checked `))
    expect(status.stdout).toMatch(/│ instance +│ live +│ applied +│ last seen +│/)
    expect(status.stdout).toMatch(/│ yes +│ 20\d\d-/)
    expect(status.stdout).toContain('no open revocation-feed stream')
    expect(status.stdout).toContain('no SSF receiver')
    const statusJson = JSON.parse((await asAdmin(['revoke', 'status', id!, '--json'])).stdout) as { complete: boolean; instances: unknown[] }
    expect(statusJson).toMatchObject({ revocation_id: id, complete: true })
    expect(statusJson.instances).toHaveLength(1)
    expect((await asAdmin(['revoke', 'status', '00000000-0000-4000-8000-000000000000'])).stderr).toMatch(/^mandate: 404 not_found: /)

    const table = await asAdmin(['revoke', 'list'])
    expect(table.status).toBe(0)
    expect(table.stdout).toMatch(/│ id +│ kind +│ target +│ state +│ created +│ reason +│/)
    expect(table.stdout).toContain(`│ ${String(id)} │ agent │ agent=demo-subagent`)

    const json = await asAdmin(['revoke', 'list', '--json'])
    const page = JSON.parse(json.stdout) as { revocations: { id: string; in_force: boolean; reason: string }[]; next: string | null }
    expect(page.revocations.find((r) => r.id === id)).toMatchObject({ in_force: true, reason: 'prompt injection seen in ticket 4711' })

    const lift = await asAdmin(['revoke', 'lift', id!, '--json'])
    expect(lift.status).toBe(0)
    expect(JSON.parse(lift.stdout)).toMatchObject({ id, in_force: false, lifted_by: 'dev-admin' })
    const again = await asAdmin(['revoke', 'lift', id!])
    expect(again.status).toBe(1)
    expect(again.stderr).toMatch(/^mandate: 409 conflict: /)
  })

  it('revoke list pages: the next page’s --before on stderr, stdout the table alone', async () => {
    for (const agent of ['demo-agent', 'demo-subagent'])
      expect((await asAdmin(['revoke', 'agent', agent, '--reason', `page ${agent}`, '--json'])).status).toBe(0)
    const first = await asAdmin(['revoke', 'list', '--limit', '1'])
    expect(first.status).toBe(0)
    const next = /^more: --before ([0-9a-f-]{36})\n$/.exec(first.stderr)?.[1]
    expect(next).toBeDefined()
    const second = await asAdmin(['revoke', 'list', '--limit', '1', '--before', next!, '--json'])
    const page = JSON.parse(second.stdout) as { revocations: { id: string }[] }
    expect(page.revocations).toHaveLength(1)
    expect(page.revocations[0]!.id).not.toBe(next)
  })

  describe('the profile file', () => {
    const profile = () => join(xdg, 'mandate', 'config.yaml')
    const keyFile = () => join(dir, 'admin-key')
    beforeAll(async () => {
      await mkdir(join(xdg, 'mandate'), { recursive: true })
      await writeFile(keyFile(), 'demo-admin-key\n', { mode: 0o600 })
    })

    it('gives the URL and the key file; MANDATE_URL overrides its url, --url overrides both', async () => {
      await writeFile(profile(), `# the CLI's profile\nurl: ${admin}/\nadmin_key_file: ${keyFile()}\n`)
      const r = await mandate(['revoke', 'list', '--json'])
      expect(r.status, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout)).toHaveProperty('revocations')

      const down = `http://127.0.0.1:${await freePort()}`
      const env = await mandate(['revoke', 'list'], { MANDATE_URL: down })
      expect(env.status).toBe(5)
      expect(env.stderr).toContain(`${down} (MANDATE_URL)`)
      expect((await mandate(['revoke', 'list', '--url', admin], { MANDATE_URL: down })).status).toBe(0)

      await writeFile(profile(), `url: ${down}\n`)
      const fromProfile = await mandate(['revoke', 'list'], { MANDATE_ADMIN_KEY: 'demo-admin-key' })
      expect(fromProfile.status).toBe(5)
      expect(fromProfile.stderr).toContain(`${down} (url in ${profile()})`)
    })

    it('a wrong key in the key file: 401 names the file', async () => {
      await writeFile(profile(), `url: ${admin}\nadmin_key_file: ${keyFile()}\n`)
      await writeFile(keyFile(), 'not-the-key\n', { mode: 0o600 })
      const r = await mandate(['revoke', 'list'])
      expect(r.status).toBe(4)
      expect(r.stderr).toContain(`refused the admin key from admin_key_file in ${profile()} (401 unauthorized`)
      await writeFile(keyFile(), 'demo-admin-key\n', { mode: 0o600 })
    })

    it('a key file other users can read is refused, exit 4', async () => {
      await writeFile(profile(), `url: ${admin}\nadmin_key_file: ${keyFile()}\n`)
      await chmod(keyFile(), 0o644)
      try {
        const r = await mandate(['revoke', 'list'])
        expect(r.status).toBe(4)
        expect(r.stderr).toBe(`mandate: the admin key file ${keyFile()} is open to other users (mode 0644): chmod 600 ${keyFile()}\n`)
      } finally {
        await chmod(keyFile(), 0o600)
      }
    })

    it('an invalid profile stops the command, exit 2, naming the file and the field', async () => {
      await writeFile(profile(), `url: ${admin}\nadmin_key: demo-admin-key\n`)
      const r = await mandate(['revoke', 'list'])
      expect(r.status).toBe(2)
      expect(r.stderr).toBe(`mandate: ${profile()}: (root): Unrecognized key: "admin_key" (it may set url and admin_key_file)\n`)
      await writeFile(profile(), 'url: [\n')
      expect((await mandate(['revoke', 'list'])).stderr).toMatch(new RegExp(`^mandate: ${profile()}:\\d+:\\d+: not valid YAML\\n$`))
    })
  })
})
