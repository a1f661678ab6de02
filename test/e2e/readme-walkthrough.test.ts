/**
 * Runs the README's walkthrough as written: starts `mandate serve --dev` as a
 * separate process (the same command `npm start` runs), then feeds every `sh`
 * block of the "Walkthrough" section to one bash, in order. Only the port and
 * the data directory differ from what a reader types.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../support/net.js'
import { logSink } from '../support/log-sink.js'

const root = new URL('../../', import.meta.url).pathname

function walkthroughBlocks(readme: string): string[] {
  const start = readme.indexOf('## Walkthrough')
  const end = readme.indexOf('\n## ', start + 1)
  const section = readme.slice(start, end)
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!)
}

describe('README walkthrough', () => {
  let server: ChildProcess
  let port: number
  let dataDir: string
  let stderr = ''

  beforeAll(async () => {
    port = await freePort()
    dataDir = await mkdtemp(join(tmpdir(), 'mandate-readme-'))
    server = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
      cwd: root,
      env: { ...process.env, PORT: String(port), MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    server.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    server.stderr!.on('data', logSink('readme walkthrough broker stderr'))
    server.stdout!.on('data', logSink('readme walkthrough broker stdout'))
    const deadline = Date.now() + 30_000
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/.well-known/oauth-authorization-server`)
        if (res.ok) break
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`broker did not start: ${stderr}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }, 40_000)

  afterAll(async () => {
    // The broker writes its last audit group and checkpoint on SIGTERM: let it finish before removing its files.
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((resolve) => server!.once('exit', resolve))
      server.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    await rm(dataDir, { recursive: true, force: true })
  })

  it('prints the banner with the first walkthrough command', () => {
    expect(stderr).toContain(`/dev/users/alice/token`)
  })

  it('works as written', async () => {
    const readme = await readFile(join(root, 'README.md'), 'utf8')
    const blocks = walkthroughBlocks(readme)
    expect(blocks.length).toBeGreaterThanOrEqual(5)
    const script = ['set -e', ...blocks.map((b, i) => `echo "::step ${i + 1}::"\n${b}`)]
      .join('\n')
      .replaceAll('http://localhost:8080', `http://localhost:${port}`)
    const run = spawnSync('bash', ['-c', script], { encoding: 'utf8', timeout: 30_000 })
    expect(run.status, run.stderr).toBe(0)
    const steps = run.stdout.split(/::step \d+::\n/).slice(1)

    expect(steps[0]).toMatch(/^eyJ/)
    const response = JSON.parse(steps[1]!.trim().split('\n')[0]!) as Record<string, unknown>
    expect(response).toMatchObject({
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: 300,
      scope: 'demo:read',
    })
    expect(steps[2]).toContain("typ: 'at+jwt'")
    expect(steps[2]).toContain("act: { sub: 'demo-agent' }")
    expect(JSON.parse(steps[3]!)).toEqual({
      error: 'invalid_scope',
      error_description: 'requested scope exceeds what this agent may get for this user',
      error_uri: expect.stringMatching(/^urn:mandate:request:[0-9a-f-]{36}$/),
    })
    const child = JSON.parse(steps[4]!) as { act: unknown; chain: string[]; scope: string }
    expect(child.act).toEqual({ sub: 'demo-subagent', act: { sub: 'demo-agent' } })
    expect(child.chain).toHaveLength(1)
    expect(child.scope).toBe('demo:read')
    expect(steps[5]!.trim()).toBe('2 tokens: demo-agent -> demo-subagent')
  })
})
