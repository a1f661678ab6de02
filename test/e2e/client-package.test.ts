/**
 * `@mandate/client` as a user gets it: `npm pack` of packages/client, the
 * tarball installed into an empty project (its one dependency from the
 * registry, or npm's cache), and the README's example run there, as written,
 * against `mandate serve --dev` started by this test. Only the broker's URL
 * and the user token come from the environment, as the README says.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'
import { packageRuntimes } from '../support/node-runtimes.js'

const root = new URL('../../', import.meta.url).pathname
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** The first `js` block of the README's "Example" section: the one copy of the example. */
function exampleOf(readme: string): string {
  const start = readme.indexOf('\n## Example')
  const end = readme.indexOf('\n## ', start + 1)
  const block = /```js\n([\s\S]*?)```/.exec(readme.slice(start, end))
  if (block === null) throw new Error("no js block in the README's Example section")
  return block[1]!
}

async function du(path: string): Promise<number> {
  const info = await stat(path)
  if (!info.isDirectory()) return info.size
  let total = 0
  for (const entry of await readdir(path)) total += await du(join(path, entry))
  return total
}

function run(cmd: string, args: readonly string[], cwd: string): string {
  const result = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 120_000 })
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${String(result.status)}): ${result.stderr}`)
  return result.stdout
}

describe('@mandate/client package, installed from its tarball', () => {
  let dir: string
  let project: string
  let server: ChildProcess | undefined
  let port: number
  let stderr = ''
  let tarball: { filename: string; size: number; unpackedSize: number; files: { path: string }[] }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-client-pack-'))
    project = join(dir, 'project')
    // prepack builds dist/ from the sources.
    tarball = (JSON.parse(run(npm, ['pack', '--workspace', 'packages/client', '--pack-destination', dir, '--json'], root)) as (typeof tarball)[])[0]!
    await (await import('node:fs/promises')).mkdir(project)
    await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'client-pack-test', private: true, type: 'module' }))
    run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', join(dir, tarball.filename)], project)

    port = await freePort()
    server = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
      cwd: root,
      env: { ...process.env, PORT: String(port), MANDATE_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    server.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    server.stderr!.on('data', logSink('client package broker stderr'))
    server.stdout!.on('data', logSink('client package broker stdout'))
    const deadline = Date.now() + 30_000
    for (;;) {
      const up = await fetch(`http://127.0.0.1:${port}/.well-known/oauth-authorization-server`).then(
        (r) => r.ok,
        () => false,
      )
      if (up) break
      if (Date.now() > deadline) throw new Error(`broker did not start: ${stderr}`)
      // Polls a starting process, bounded by the deadline above.
      await new Promise((r) => setTimeout(r, 200))
    }
  }, 180_000)

  afterAll(async () => {
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((resolve) => server!.once('exit', resolve))
      server.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    await rm(dir, { recursive: true, force: true })
  })

  it('packs only dist and the README, and installs in under 10 MB', async () => {
    const paths = tarball.files.map((f) => f.path)
    expect(paths).toContain('README.md')
    expect(paths).toContain('dist/index.js')
    expect(paths).toContain('dist/index.d.ts')
    expect(paths.every((p) => p === 'README.md' || p === 'package.json' || p.startsWith('dist/'))).toBe(true)
    const installed = await du(join(project, 'node_modules'))
    expect(installed).toBeLessThan(10 * 1024 * 1024)
    const deps = (await readdir(join(project, 'node_modules'))).filter((d) => !d.startsWith('.'))
    expect(deps.sort()).toEqual(['@mandate', 'oauth4webapi'])
    console.log(`@mandate/client: tarball ${tarball.size} B, unpacked ${tarball.unpackedSize} B, installed node_modules ${installed} B`)
  })

  it.each(packageRuntimes())('runs the README example as written on $name', async ({ bin }) => {
    const issuer = `http://localhost:${port}`
    const answer = await fetch(`${issuer}/dev/users/alice/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ scope: 'demo:read demo:write' }),
    })
    expect(answer.status).toBe(200)
    const { access_token: userToken } = (await answer.json()) as { access_token: string }
    const example = exampleOf(await readFile(join(root, 'packages/client/README.md'), 'utf8'))
    await writeFile(join(project, 'example.mjs'), example)
    const result = spawnSync(bin, ['example.mjs'], {
      cwd: project,
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env['PATH'], MANDATE_URL: issuer, USER_TOKEN: userToken },
    })
    expect(result.status, result.stderr).toBe(0)
    const lines = result.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^got demo:read for https:\/\/demo\.example, expires \d{4}-/)
    expect(lines[1]).toBe('cached: true')
    expect(lines[2]).toBe('delegated: {"sub":"demo-subagent","act":{"sub":"demo-agent"}}')
    expect(lines[3]).toBe('refused: invalid_scope (400)')
    expect(lines).toHaveLength(4)
  })

  it.each(packageRuntimes())('binds tokens to DPoP keys, a sub-agent’s to its own with the parent’s proof, on $name', async ({ bin }) => {
    const issuer = `http://localhost:${port}`
    const answer = await fetch(`${issuer}/dev/users/alice/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ scope: 'demo:read' }),
    })
    const { access_token: userToken } = (await answer.json()) as { access_token: string }
    // The README's DPoP delegation flow, with the dev agents: parent and sub-agent each with a key of its own.
    await writeFile(
      join(project, 'dpop.mjs'),
      `import { clientSecret, createClient, MandateClientError } from '@mandate/client'
const jkt = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).cnf?.jkt
const issuer = process.env.MANDATE_URL
const parent = createClient({ issuer, clientId: 'demo-agent', auth: clientSecret('demo-secret'), dpop: true })
const sub = createClient({ issuer, clientId: 'demo-subagent', auth: clientSecret('demo-sub-secret'), dpop: true })
const mine = await parent.getToken({ subjectToken: process.env.USER_TOKEN, audience: 'https://demo.example', scope: 'demo:read' })
console.log('parent', mine.tokenType, jkt(mine.accessToken) === (await parent.dpopThumbprint()))
const proof = await parent.delegationProof(mine.accessToken)
const child = await sub.delegate({ parentToken: mine.accessToken, subjectTokenProof: proof, audience: 'https://demo.example', scope: 'demo:read' })
console.log('child', child.tokenType, jkt(child.accessToken) === (await sub.dpopThumbprint()))
// A client of its own: \`sub\` would answer from its cache.
const another = createClient({ issuer, clientId: 'demo-subagent', auth: clientSecret('demo-sub-secret'), dpop: true })
try {
  await another.delegate({ parentToken: mine.accessToken, audience: 'https://demo.example', scope: 'demo:read' })
} catch (err) {
  if (!(err instanceof MandateClientError)) throw err
  console.log('without the parent proof:', err.error)
}
`,
    )
    const result = spawnSync(bin, ['dpop.mjs'], {
      cwd: project,
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env['PATH'], MANDATE_URL: issuer, USER_TOKEN: userToken },
    })
    expect(result.status, result.stderr).toBe(0)
    expect(result.stdout.trim().split('\n')).toEqual(['parent DPoP true', 'child DPoP true', 'without the parent proof: invalid_dpop_proof'])
  })

  it.each(packageRuntimes())(
    'asks a person to approve one payment and waits for it, on $name',
    async ({ bin }) => {
      const issuer = `http://localhost:${port}`
      const answer = await fetch(`${issuer}/dev/users/alice/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ scope: 'payments:initiate' }),
      })
      const { access_token: userToken } = (await answer.json()) as { access_token: string }
      // demo-payer (policies/dev) needs its user's approval for every payment.
      await writeFile(
        join(project, 'approval.mjs'),
        `import { clientSecret, createClient } from '@mandate/client'
const mandate = createClient({ issuer: process.env.MANDATE_URL, clientId: 'demo-payer', auth: clientSecret('demo-payer-secret') })
const pending = await mandate.requestApproval({
  subjectToken: process.env.USER_TOKEN,
  audience: 'https://payments.example',
  authorizationDetails: [{ type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '42.00' }, creditorName: 'Merchant B' }],
  bindingMessage: 'Pay 42.00 EUR to Merchant B',
})
console.log('pending', pending.interval)
const token = await mandate.waitForApproval(pending, { signal: AbortSignal.timeout(60_000) })
console.log('approved', JSON.stringify(token.authorizationDetails))
`,
      )
      const script = spawn(bin, ['approval.mjs'], { cwd: project, env: { PATH: process.env['PATH'], MANDATE_URL: issuer, USER_TOKEN: userToken } })
      let out = ''
      let err = ''
      script.stdout.on('data', (d: Buffer) => (out += d.toString()))
      script.stderr.on('data', (d: Buffer) => (err += d.toString()))
      const exited = new Promise<number | null>((resolve) => script.once('exit', resolve))
      // The dev user alice decides, with the dev-only approver key, once the request is in the queue.
      const admin = { authorization: 'Bearer demo-approver-key' }
      let id: string | undefined
      const deadline = Date.now() + 30_000
      while (id === undefined && Date.now() < deadline) {
        const queue = (await (await fetch(`${issuer}/admin/approvals?status=pending&agent=demo-payer`, { headers: admin })).json()) as {
          approvals: { id: string; binding_message: string }[]
        }
        id = queue.approvals.find((a) => a.binding_message === 'Pay 42.00 EUR to Merchant B')?.id
        // Polls the queue of a running broker, bounded by the deadline above.
        if (id === undefined) await new Promise((r) => setTimeout(r, 200))
      }
      expect(id, err).toBeDefined()
      const decided = await fetch(`${issuer}/admin/approvals/${id!}`, {
        method: 'POST',
        headers: { ...admin, 'content-type': 'application/json' },
        body: JSON.stringify({ decision: 'approve' }),
      })
      expect(decided.status).toBe(200)
      expect(await exited, err).toBe(0)
      expect(out.trim().split('\n')).toEqual([
        'pending 5',
        'approved [{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"42.00"},"creditorName":"Merchant B"}]',
      ])
    },
    90_000,
  )
})
