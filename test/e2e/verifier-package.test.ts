/**
 * @mandate/verifier as a user gets it: `npm pack` of packages/verifier,
 * `npm install` of the tarball into an empty project (jose from the registry
 * or npm's cache, nothing else), the installed size, then the README's
 * example, extracted from packages/verifier/README.md and run as written
 * against a real `mandate serve --dev` (a separate process, PGlite under a
 * directory of its own) that this test starts with a `resource_servers`
 * entry: a token minted through the broker gets 200, and 401 within 100 ms
 * of the admin API acknowledging a kill of its agent.
 *
 * The example runs under this test's Node and under Node 22 (`MANDATE_NODE22`,
 * test/support/node-runtimes.ts), side by side, and both must see the kill.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'
import { packageRuntimes } from '../support/node-runtimes.js'

const root = new URL('../../', import.meta.url).pathname
const packageDir = join(root, 'packages/verifier')
const RS_SECRET = randomBytes(24).toString('base64url')
const AUDIENCE = 'https://demo.example'
/** The installed package and its dependencies: a resource server pulls in little. */
const MAX_INSTALLED_BYTES = 10 * 1024 * 1024

/** The first `js` block of the README's "Example" section: the code a reader copies. */
function exampleOf(readme: string): string {
  const start = readme.indexOf('## Example')
  const end = readme.indexOf('\n## ', start + 1)
  const block = /```js\n([\s\S]*?)```/.exec(readme.slice(start, end))
  if (start === -1 || block === null) throw new Error('packages/verifier/README.md has no js block under "## Example"')
  return block[1]!
}

/** Bytes of every file under `dir` (links not followed). */
async function sizeOf(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) total += await sizeOf(path)
    else total += (await lstat(path)).size
  }
  return total
}

/** npm from the Node running the tests (npm ships beside node), never a different one on PATH. */
function npm(args: string[], cwd: string): string {
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`, npm_config_audit: 'false', npm_config_fund: 'false' }
  const run = spawnSync('npm', args, { cwd, env, encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`npm ${args.join(' ')} failed (${String(run.status)}): ${run.stderr}`)
  return run.stdout
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms: number, exited: () => boolean): Promise<T> {
  const deadline = performance.now() + ms
  for (;;) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined) return value
    if (exited() || performance.now() > deadline) throw new Error(`${what} did not come up`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('@mandate/verifier installed from its tarball', () => {
  let dir: string
  let broker: ChildProcess
  const examples: ChildProcess[] = []
  let issuer: string
  let brokerErr = ''
  const figures: Record<string, number> = {}

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-verifier-package-'))
    const port = await freePort()
    issuer = `http://localhost:${port}`
    const config = join(dir, 'mandate.yaml')
    const secretSha256 = createHash('sha256').update(RS_SECRET).digest('hex')
    await writeFile(
      config,
      `resource_servers:\n  - id: rs/demo\n    audiences: [${AUDIENCE}]\n    authentication: { method: client_secret_basic, secret_sha256: ${secretSha256} }\n`,
    )
    const env: Record<string, string | undefined> = { ...process.env, PORT: String(port), MANDATE_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'warn' }
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    delete env['MANDATE_ADMIN_PORT']
    broker = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev', '--config', config], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    broker.stderr!.on('data', (d: Buffer) => (brokerErr += d.toString()))
    broker.stderr!.on('data', logSink('verifier package broker stderr'))
    broker.stdout!.on('data', logSink('verifier package broker stdout'))
    await waitFor(
      `the broker (${brokerErr})`,
      async () => ((await fetch(`${issuer}/.well-known/oauth-authorization-server`)).ok ? true : undefined),
      50_000,
      () => broker.exitCode !== null,
    )
  }, 60_000)

  afterAll(async () => {
    for (const child of [...examples, broker]) {
      if (child.exitCode !== null) continue
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
    console.log(`@mandate/verifier sizes: ${JSON.stringify(figures)}`)
  })

  it('packs dist and the README only, installs into an empty project under 10 MB, and its README example sees a kill within 100 ms', async () => {
    // npm pack runs prepack (the package's build) and reports what it packed.
    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], packageDir)) as {
      filename: string
      size: number
      unpackedSize: number
      files: { path: string }[]
    }[]
    figures['tarballBytes'] = packed!.size
    figures['unpackedBytes'] = packed!.unpackedSize
    const paths = packed!.files.map((f) => f.path)
    expect(paths.filter((p) => !p.startsWith('dist/')).sort()).toEqual(['README.md', 'package.json'])
    expect(paths).toContain('dist/index.d.ts')
    expect(paths.some((p) => p.startsWith('src/') || p.startsWith('test/'))).toBe(false)

    const project = join(dir, 'project')
    await mkdir(project)
    npm(['init', '-y'], project)
    const manifest = JSON.parse(await readFile(join(project, 'package.json'), 'utf8')) as Record<string, unknown>
    await writeFile(join(project, 'package.json'), JSON.stringify({ ...manifest, type: 'module' }))
    npm(['install', '--prefer-offline', '--no-package-lock', join(dir, packed!.filename)], project)
    const installed = await readdir(join(project, 'node_modules'))
    expect(installed.sort()).toEqual(['.package-lock.json', '@mandate', 'jose'].sort())
    figures['installedBytes'] = await sizeOf(join(project, 'node_modules'))
    expect(figures['installedBytes']).toBeLessThan(MAX_INSTALLED_BYTES)

    // The README's example, as written, beside the installed package: one server per Node line.
    await writeFile(join(project, 'server.js'), exampleOf(await readFile(join(packageDir, 'README.md'), 'utf8')))
    const apis: { name: string; url: string }[] = []
    for (const runtime of packageRuntimes()) {
      const examplePort = await freePort()
      let output = ''
      const example = spawn(runtime.bin, ['server.js'], {
        cwd: project,
        env: { PATH: process.env['PATH'], MANDATE_ISSUER: issuer, MANDATE_RS_SECRET: RS_SECRET, PORT: String(examplePort) },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      examples.push(example)
      example.stdout.on('data', (d: Buffer) => (output += d.toString()))
      example.stderr.on('data', (d: Buffer) => (output += d.toString()))
      await waitFor(
        `the example on ${runtime.name} (${output})`,
        () => Promise.resolve(output.includes('listening') ? true : undefined),
        20_000,
        () => example.exitCode !== null,
      )
      apis.push({ name: runtime.name, url: `http://127.0.0.1:${examplePort}/` })
    }

    // A token for the demo audience, as the README walkthrough gets one.
    const user = (await (
      await fetch(`${issuer}/dev/users/alice/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"scope":"demo:read"}' })
    ).json()) as { access_token: string }
    const exchanged = await fetch(`${issuer}/oauth2/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: AUDIENCE,
        scope: 'demo:read',
      }),
    })
    expect(exchanged.status).toBe(200)
    const token = ((await exchanged.json()) as { access_token: string }).access_token

    for (const api of apis) {
      const bare = await fetch(api.url)
      expect(bare.status, api.name).toBe(401)
      expect(bare.headers.get('www-authenticate'), api.name).toBe(`Bearer realm="${AUDIENCE}"`)
      const ok = await fetch(api.url, { headers: { authorization: `Bearer ${token}` } })
      expect(ok.status, api.name).toBe(200)
      expect(await ok.json(), api.name).toEqual({ user: 'alice', agent: 'demo-agent' })
    }

    const kill = await fetch(`${issuer}/admin/revocations`, {
      method: 'POST',
      headers: { authorization: 'Bearer demo-admin-key', 'content-type': 'application/json' },
      body: JSON.stringify({ agent: 'demo-agent', reason: 'verifier package test' }),
    })
    expect(kill.status).toBe(201)
    const acknowledged = performance.now()
    // Polled as fast as each example answers: the bound is the kill switch's (docs/ARCHITECTURE.md), not this loop's.
    const refusals = await Promise.all(
      apis.map(async (api) => {
        while (performance.now() - acknowledged < 1_000) {
          const res = await fetch(api.url, { headers: { authorization: `Bearer ${token}` } })
          if (res.status !== 200) return { api, res, ms: Math.round(performance.now() - acknowledged) }
          await res.body?.cancel()
        }
        return { api, res: undefined, ms: Infinity }
      }),
    )
    for (const { api, res, ms } of refusals) {
      figures[`killToRefusalMs ${api.name}`] = ms
      expect(res?.status, api.name).toBe(401)
      expect(res?.headers.get('www-authenticate'), api.name).toMatch(/error="invalid_token", error_description="token revoked"/)
      expect(ms, api.name).toBeLessThan(100)
    }
  }, 120_000)
})
