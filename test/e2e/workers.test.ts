/**
 * `mandate serve --workers 2`, built (`tsc -p
 * tsconfig.build.json`, what `npm run build` runs) and started from the
 * build, against the real PostgreSQL and Redis, with a production config
 * (no --dev): a local RS256 identity provider serving its JWKS over HTTP,
 * a policy directory, a keys file. Traffic runs on fresh connections; SIGTERM
 * reaches the primary mid-traffic. Then:
 *
 * - every request the broker accepted got a complete answer: a 200 with a
 *   token, or a 503 `temporarily_unavailable` JSON error while closing; a
 *   connection refused once the port closed is the only other outcome, and a
 *   reset or a truncated body fails the test;
 * - the primary and both workers exit 0, within the bound;
 * - every token answered 200 has its `token.issued` row, and the log holds no
 *   other issuance; both workers served (two instances in the log);
 * - the hash chains verify (`mandate audit verify`, from the build too).
 *
 * The build goes to a directory of its own, laid out as the Docker image is
 * (dist/, migrations/, package.json, node_modules), so the tests that run
 * bin/mandate.js from the sources at the same time are not switched to it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer, request, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeJwt, exportJWK, generateKeyPair, type CryptoKey } from 'jose'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { generateSigningJwk } from '../../src/tokens/keys.js'
import { freePort } from '../support/net.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { REDIS_URL, redisAvailable } from '../support/redis.js'
import { logSink } from '../support/log-sink.js'
import { userAccessToken } from '../support/tokens.js'

const root = new URL('../../', import.meta.url).pathname
const SECRET = 'workers-test-secret-0123456789abcdef0123456789abcdef'
const AUDIENCE = 'https://api.workers.test'
const LOOPS = 12
/** The primary gives its workers 15 s; the test allows a little more. */
const EXIT_BOUND_MS = 20_000

const redisUp = await redisAvailable('workers.test.ts')

interface Outcome {
  readonly kind: 'ok' | 'refused-503' | 'conn-refused' | 'reset' | 'broken'
  /** Epoch ms the outcome was seen. */
  readonly at?: number
  /** Absent when no response came back. */
  readonly status?: number | undefined
  readonly jti?: string
  readonly detail?: string
}

/** One exchange on a fresh connection (no keep-alive: a refused connection is then unambiguous). */
function exchangeOnce(port: number, body: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/oauth2/token',
        method: 'POST',
        agent: false,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
          authorization: `Basic ${Buffer.from(`workers-agent:${SECRET}`).toString('base64')}`,
        },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (text += d))
        res.on('error', (err) => resolve({ kind: 'broken', status: res.statusCode, detail: `response: ${err.message}` }))
        res.on('end', () => {
          if (!res.complete) return resolve({ kind: 'broken', status: res.statusCode, detail: 'response cut short' })
          let json: Record<string, unknown>
          try {
            json = JSON.parse(text) as Record<string, unknown>
          } catch {
            return resolve({ kind: 'broken', status: res.statusCode, detail: `not JSON: ${text.slice(0, 100)}` })
          }
          if (res.statusCode === 200 && typeof json['access_token'] === 'string') {
            return resolve({ kind: 'ok', status: 200, jti: String(decodeJwt(json['access_token']).jti) })
          }
          if (res.statusCode === 503 && json['error'] === 'temporarily_unavailable') return resolve({ kind: 'refused-503', status: 503 })
          resolve({ kind: 'broken', status: res.statusCode, detail: text.slice(0, 200) })
        })
      },
    )
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') return resolve({ kind: 'conn-refused' })
      // No response at all: a connection the closing listener never handed to the broker (its
      // backlog is reset when it closes) looks the same as one the broker dropped. The test tells
      // them apart by the broker's own request lines.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.message === 'socket hang up')
        return resolve({ kind: 'reset', at: Date.now(), detail: err.code ?? err.message })
      resolve({ kind: 'broken', detail: `${err.code ?? ''} ${err.message}` })
    })
    req.end(body)
  })
}

describePostgres.runIf(redisUp)('mandate serve --workers 2, from the build, SIGTERM mid-traffic', () => {
  let dir: string
  let db: TestDatabase
  let idp: Server
  let idpKey: CryptoKey
  let idpIssuer: string
  let broker: ChildProcess | undefined
  let output = ''
  const prefix = `mandate-test-workers-${randomBytes(4).toString('hex')}:`
  const env = () => ({
    ...process.env,
    DATABASE_URL: db.url,
    REDIS_URL,
    MANDATE_REDIS_PREFIX: prefix,
    MANDATE_CONFIG: join(dir, 'mandate.yaml'),
    MANDATE_DATA_DIR: join(dir, 'data'),
    MANDATE_CHECKPOINT_DIR: join(dir, 'checkpoints'),
    LOG_LEVEL: 'info',
  })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-workers-'))
    // The build, laid out as the image is.
    const app = join(dir, 'app')
    await mkdir(join(app, 'bin'), { recursive: true })
    const tsc = spawnSync(
      process.execPath,
      [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(app, 'dist')],
      {
        cwd: root,
        encoding: 'utf8',
        timeout: 180_000,
      },
    )
    expect(tsc.status, `tsc: ${tsc.stdout}${tsc.stderr}`).toBe(0)
    await copyFile(join(root, 'package.json'), join(app, 'package.json'))
    await copyFile(join(root, 'bin/mandate.js'), join(app, 'bin/mandate.js'))
    await symlink(join(root, 'migrations'), join(app, 'migrations'))
    await symlink(join(root, 'node_modules'), join(app, 'node_modules'))

    db = await createTestDatabase()

    // A company IdP: RS256 user tokens, its JWKS over HTTP.
    const { privateKey, publicKey } = await generateKeyPair('RS256')
    idpKey = privateKey
    const jwk = { ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'RS256', use: 'sig' }
    idp = createServer((req, res) => {
      if (req.url === '/jwks') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }))
      } else res.writeHead(404).end()
    })
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r))
    const idpPort = (idp.address() as { port: number }).port
    idpIssuer = `http://127.0.0.1:${idpPort}`

    await mkdir(join(dir, 'policies'))
    await writeFile(
      join(dir, 'policies', 'workers-agent.yaml'),
      `agent: workers-agent
owner: platform@example.com
purpose: the workers test
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }
users:
  - issuer: ${idpIssuer}
grants:
  - { audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }
token_ttl: { default: 300, max: 300 }
`,
    )
    await writeFile(join(dir, 'keys.json'), JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 })
  }, 240_000)

  afterAll(async () => {
    if (broker !== undefined && broker.exitCode === null && broker.signalCode === null) broker.kill('SIGKILL')
    await new Promise<void>((r) => (idp === undefined ? r() : idp.close(() => r())))
    await db?.drop()
    const { Redis } = await import('ioredis')
    const redis = new Redis(REDIS_URL)
    try {
      for (;;) {
        const keys = await redis.keys(`${prefix}*`)
        if (keys.length === 0) break
        await redis.del(...keys)
      }
    } finally {
      redis.disconnect()
    }
    await rm(dir, { recursive: true, force: true })
  })

  it('answers every accepted request completely, exits 0, and every issued token has its audit record', async () => {
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    await writeFile(
      join(dir, 'mandate.yaml'),
      `issuer: ${base}
listen: { host: 127.0.0.1, port: ${port} }
policies_dir: ${join(dir, 'policies')}
signing: { keys_file: ${join(dir, 'keys.json')} }
trust:
  subjects:
    - { issuer: ${idpIssuer}, jwks_uri: ${idpIssuer}/jwks, algorithms: [RS256] }
`,
    )
    const child = spawn(process.execPath, [join(dir, 'app/bin/mandate.js'), 'serve', '--workers', '2'], {
      cwd: dir,
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    broker = child
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })))
    child.stdout.on('data', (d: Buffer) => (output += d.toString()))
    child.stderr.on('data', (d: Buffer) => (output += d.toString()))
    child.stdout.on('data', logSink('workers broker stdout'))
    child.stderr.on('data', logSink('workers broker stderr'))
    const lines = () =>
      output
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)

    // Ready: both workers listening, and /readyz answers 200.
    const deadline = Date.now() + 60_000
    for (;;) {
      if (child.exitCode !== null) throw new Error(`broker exited (${child.exitCode}): ${output.slice(-3000)}`)
      const listening = lines().filter((l) => l['msg'] === 'worker listening').length
      const ready =
        listening === 2 &&
        (await fetch(`${base}/readyz`).then(
          (r) => r.status === 200,
          () => false,
        ))
      if (ready) break
      if (Date.now() > deadline) throw new Error(`not ready in 60 s: ${output.slice(-3000)}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    // The build served it, not the sources through tsx.
    expect(output).not.toMatch(/tsx/)

    const now = Math.floor(Date.now() / 1000)
    const userToken = (sub: string) =>
      userAccessToken(
        { privateKey: idpKey, alg: 'RS256', kid: 'idp-1' },
        { iss: idpIssuer, sub, aud: base, client_id: 'idp-client', jti: randomBytes(8).toString('hex') },
        { now, lifetime: 3600 },
      )
    const bodies = await Promise.all(
      Array.from({ length: LOOPS }, async (_, i) =>
        new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: await userToken(`user-${i}`),
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: AUDIENCE,
          scope: 'read',
        }).toString(),
      ),
    )

    const outcomes: Outcome[] = []
    let sigtermAt = 0
    const loops = bodies.map(async (body) => {
      for (;;) {
        const o = await exchangeOnce(port, body)
        outcomes.push(o)
        // Keep sending until the port is closed: requests are in flight when SIGTERM lands.
        if ((o.kind === 'conn-refused' || o.kind === 'reset') && sigtermAt > 0) return
        if (o.kind === 'broken' || o.kind === 'reset') return
      }
    })
    // Traffic first, then SIGTERM to the primary while it flows.
    const trafficDeadline = Date.now() + 30_000
    while (outcomes.filter((o) => o.kind === 'ok').length < 300) {
      if (child.exitCode !== null || outcomes.some((o) => o.kind !== 'ok') || Date.now() > trafficDeadline) {
        throw new Error(
          `traffic before SIGTERM: ${JSON.stringify(outcomes.filter((o) => o.kind !== 'ok').slice(0, 3))}, ${outcomes.length} answers; ${output.slice(-2000)}`,
        )
      }
      await new Promise((r) => setTimeout(r, 20))
    }
    sigtermAt = Date.now()
    child.kill('SIGTERM')
    const exit = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), EXIT_BOUND_MS))])
    await Promise.all(loops)

    const byKind = outcomes.reduce<Record<string, number>>((a, o) => ((a[o.kind] = (a[o.kind] ?? 0) + 1), a), {})
    const broken = outcomes.filter((o) => o.kind === 'broken' || (o.kind === 'reset' && o.at! < sigtermAt))
    expect(broken.slice(0, 5), `outcomes ${JSON.stringify(byKind)}`).toEqual([])
    // Every exchange the broker handled, it answered, and the answer arrived whole: its request
    // lines (written before the process exits) match the complete answers the clients got.
    const handled = lines().filter((l) => l['msg'] === 'request' && l['path'] === '/oauth2/token')
    expect(handled.filter((l) => l['status'] === 200).length).toBe(byKind['ok'])
    expect(handled.length).toBe((byKind['ok'] ?? 0) + (byKind['refused-503'] ?? 0))
    expect(exit, output.slice(-3000)).toEqual({ code: 0, signal: null })
    expect(Date.now() - sigtermAt).toBeLessThan(EXIT_BOUND_MS)
    const stopped = lines().filter((l) => l['msg'] === 'worker stopped')
    expect(stopped.map((l) => l['code'])).toEqual([0, 0])
    // Some requests were in flight across the signal: answered after it.
    expect(byKind['ok']).toBeGreaterThan(300)

    // Every token answered 200 has its record; the log holds no other issuance.
    const sql = postgres(db.url, { max: 1, onnotice: () => {} })
    try {
      const rows = await sql<{ jti: string; instance: string }[]>`select jti, instance from audit_log where event = 'token.issued'`
      const issued = outcomes.filter((o) => o.kind === 'ok').map((o) => o.jti!)
      expect(new Set(issued).size).toBe(issued.length)
      const logged = new Set(rows.map((r) => r.jti))
      expect(issued.filter((j) => !logged.has(j))).toEqual([])
      expect(rows.length).toBe(issued.length)
      // Both workers served, each on a chain of its own.
      expect(new Set(rows.map((r) => r.instance)).size).toBe(2)
      const withheld = await sql`select count(*)::int as n from audit_log where event = 'token.withheld'`
      expect(withheld[0]!['n']).toBe(0)
    } finally {
      await sql.end({ timeout: 5 })
    }

    const verify = spawnSync(process.execPath, [join(dir, 'app/bin/mandate.js'), 'audit', 'verify', '--checkpoints', join(dir, 'checkpoints')], {
      cwd: dir,
      env: env(),
      encoding: 'utf8',
      timeout: 60_000,
    })
    expect(verify.status, `${verify.stdout}${verify.stderr}`).toBe(0)
    console.log(
      `workers: ${JSON.stringify(byKind)} across SIGTERM; exit ${JSON.stringify(exit)} ${Date.now() - sigtermAt} ms after it; ${verify.stdout.trim()}`,
    )
  }, 120_000)
})
