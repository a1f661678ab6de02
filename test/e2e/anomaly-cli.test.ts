/**
 * An anomaly quarantine seen through the CLI: a real `mandate serve --dev`
 * (its own process, PGlite) with a `denial_burst` quarantine rule in its
 * config file, real exchanges over HTTP until the rule trips, then
 * `mandate agents show` and `mandate agents list --state quarantined`, human
 * and --json, as a person and a script run them.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'

const root = new URL('../../', import.meta.url).pathname
const bin = join(root, 'bin/mandate.js')

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

describe('mandate agents show: a quarantine made by an anomaly rule', () => {
  let server: ChildProcess
  let dir: string
  let main: string
  let serverErr = ''

  function mandate(args: string[]): Promise<Run> {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MANDATE_URL' && k !== 'MANDATE_ADMIN_KEY'))
    const env = { ...base, XDG_CONFIG_HOME: join(dir, 'xdg'), MANDATE_URL: main, MANDATE_ADMIN_KEY: 'demo-admin-key' }
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })))
  }

  const exchange = async (scope: string) => {
    const user = await fetch(`${main}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"demo:read"}' })
    const subjectToken = ((await user.json()) as { access_token: string }).access_token
    return fetch(`${main}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}` },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: subjectToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://demo.example',
        scope,
      }).toString(),
    })
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-anomaly-cli-'))
    const config = join(dir, 'mandate.yaml')
    await writeFile(config, 'governance:\n  anomalies:\n    rules:\n      denial_burst: { action: quarantine, count: 5, window_seconds: 60 }\n')
    const port = await freePort()
    main = `http://127.0.0.1:${port}`
    const env: Record<string, string | undefined> = { ...process.env, PORT: String(port), MANDATE_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'warn' }
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    server = spawn(process.execPath, [bin, 'serve', '--dev', '--config', config], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    server.stderr!.on('data', (d: Buffer) => (serverErr += d.toString()))
    server.stderr!.on('data', logSink('anomaly-cli test broker stderr'))
    server.stdout!.on('data', logSink('anomaly-cli test broker stdout'))
    const deadline = Date.now() + 50_000
    for (;;) {
      try {
        if ((await fetch(`${main}/healthz`)).ok) break
      } catch {
        // not listening yet
      }
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`broker did not start: ${serverErr}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    expect((await exchange('demo:read')).status).toBe(200)
    for (let i = 0; i < 5; i++) expect((await exchange('demo:admin')).status).toBe(400)
    const bound = Date.now() + 5_000
    while ((await exchange('demo:read')).status === 200) {
      if (Date.now() > bound) throw new Error('demo-agent was not quarantined')
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

  it('shows the agent quarantined, with the anomaly, the rule and its kill', async () => {
    const human = await mandate(['agents', 'show', 'demo-agent'])
    expect(human.stderr).toBe('')
    expect(human.status).toBe(0)
    if (process.env['ANOMALY_PRINT'] === '1') process.stdout.write(human.stdout)
    expect(human.stdout).toMatch(/│ state +│ quarantined +│/)
    expect(human.stdout).toMatch(/quarantine: denial_burst/)
    expect(human.stdout).toMatch(/recent anomalies\n[^\n]*\n│ at +│ rule +│ action +│ detail/)
    expect(human.stdout).toMatch(/│ denial_burst │ quarantine \(kill [0-9a-f-]{36}\) │ 5 denials within \d+ s; trips at 5 within 60 s/)

    const json = await mandate(['agents', 'show', 'demo-agent', '--json'])
    expect(json.status).toBe(0)
    const body = JSON.parse(json.stdout) as {
      state: string
      recent_anomalies: { rule: string; action: string; revocation_id: string }[]
      kills: { id: string }[]
    }
    expect(body.state).toBe('quarantined')
    expect(body.recent_anomalies).toEqual([expect.objectContaining({ rule: 'denial_burst', action: 'quarantine', revocation_id: body.kills[0]!.id })])
  })

  it('lists quarantined agents apart from killed ones', async () => {
    const listed = await mandate(['agents', 'list', '--state', 'quarantined', '--json'])
    expect(listed.status).toBe(0)
    expect((JSON.parse(listed.stdout) as { agents: { agent: string }[] }).agents.map((a) => a.agent)).toEqual(['demo-agent'])
    const killed = await mandate(['agents', 'list', '--state', 'killed', '--json'])
    expect((JSON.parse(killed.stdout) as { agents: unknown[] }).agents).toEqual([])
  })
})
