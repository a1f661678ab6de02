/**
 * npm run bench:overload (also in bench:all): the kill switch under overload. Issue 3: "the
 * revocation API stays fast (p99 under 250 ms) while the token endpoint is
 * saturated".
 *
 * A real broker (`mandate serve --dev`, its own process) is measured twice in
 * the same run:
 *   1. reference: revocations made one at a time against an idle broker;
 *   2. overload: the same, while a load generator (another process, 64
 *      keep-alive connections, each posting the next exchange as soon as the
 *      last one answers) keeps the token endpoint saturated.
 * Each case prints p50/p99/max of the admin API's `POST /admin/revocations`
 * (time to its 201, which is after the record is durable and published), and
 * the overload case its ratio to the reference and the exchanges/s served
 * meanwhile. The load generator runs on the same cores as the broker; the
 * figures are for a broker sharing its machine, i.e. on the pessimistic side.
 *
 * Configurations: the embedded default (PGlite, in-memory revocation list),
 * then PostgreSQL + Redis (a database of its own created through
 * DATABASE_URL's server and dropped afterwards, a Redis key prefix of its own
 * deleted afterwards) when both answer. `--quick` makes fewer revocations.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import postgres from 'postgres'
import { freePort } from '../test/support/net.js'
import { deleteKeys } from './support/backing.js'

const quick = process.argv.includes('--quick')
const REVOCATIONS = quick ? 60 : 200
/** Least time between two revocation calls: a responder's pace, not a flood. */
const SPACING_MS = 40
const CONNECTIONS = 64
const ADMIN_KEY = 'demo-admin-key'
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const DATABASE_URL = process.env['DATABASE_URL'] || 'postgres://postgres@127.0.0.1:5432/postgres'
const REDIS_URL = process.env['REDIS_URL'] || 'redis://127.0.0.1:6379'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
function percentile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}
const ms = (x: number) => `${x.toFixed(1)} ms`


/** Keeps a pool of keep-alive connections busy with exchanges until told to stop; prints its counts. */
const LOAD_SCRIPT = `
import http from 'node:http'
import { createInterface } from 'node:readline'
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const { url, authorization, body, connections } = JSON.parse((await lines.next()).value)
let stop = false
lines.next().then(() => (stop = true))
const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
const target = new URL(url)
const statuses = {}
let counting = false
let counted = 0
let startedAt = 0
const once = () => new Promise((resolve) => {
  const req = http.request({ agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), authorization } }, (res) => {
    res.resume()
    res.on('end', () => { statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1; if (counting) counted++; resolve() })
  })
  req.on('error', () => { statuses.error = (statuses.error ?? 0) + 1; resolve() })
  req.end(body)
})
let warm = 0
const loop = async () => {
  await once()
  if (++warm === connections) { counting = true; startedAt = performance.now(); process.stdout.write('go\\n') }
  while (!stop) await once()
}
await Promise.all(Array.from({ length: connections }, loop))
process.stdout.write(JSON.stringify({ statuses, counted, ms: performance.now() - startedAt }) + '\\n')
process.exit(0)
`

interface Running {
  readonly base: string
  readonly child: ChildProcess
  output(): string
}

async function startBroker(env: Record<string, string>, dataDir: string): Promise<Running> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port), MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let tail = ''
  const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-4096))
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broker exited (${child.exitCode}): ${tail}`)
    const ok = await fetch(`${base}/readyz`).then((r) => r.ok, () => false)
    if (ok) break
    if (Date.now() > deadline) throw new Error(`broker not ready in 30 s: ${tail}`)
    await sleep(100)
  }
  return { base, child, output: () => tail }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await Promise.race([exited, sleep(5_000).then(() => child.kill('SIGKILL'))])
}

async function revokeTimes(base: string, count: number): Promise<number[]> {
  const times: number[] = []
  const started = performance.now()
  for (let i = 0; i < count; i++) {
    await sleep(Math.max(0, started + i * SPACING_MS - performance.now()))
    const t0 = performance.now()
    const res = await fetch(`${base}/admin/revocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
      body: JSON.stringify({ jti: `bench-${randomUUID()}`, reason: `overload bench ${i}` }),
    })
    await res.arrayBuffer()
    times.push(performance.now() - t0)
    if (res.status !== 201) throw new Error(`revocation ${i}: ${res.status}`)
  }
  return times
}

async function measure(label: string, env: Record<string, string>): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mandate-bench-'))
  const broker = await startBroker(env, dataDir)
  let load: ChildProcess | undefined
  try {
    const userRes = await fetch(`${broker.base}/dev/users/bench-user/token`, { method: 'POST', body: '{"scope":"demo:read"}' })
    const user = ((await userRes.json()) as { access_token: string }).access_token
    const body = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'https://demo.example',
      scope: 'demo:read',
    }).toString()
    const authorization = `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}`
    const probe = await fetch(`${broker.base}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
      body,
    })
    if (probe.status !== 200) throw new Error(`exchange probe: ${probe.status} ${await probe.text()}`)

    await revokeTimes(broker.base, 10) // warm-up
    const reference = await revokeTimes(broker.base, REVOCATIONS)

    const gen = spawn(process.execPath, ['--input-type=module', '-e', LOAD_SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] })
    load = gen
    let out = ''
    gen.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    gen.stdin!.write(JSON.stringify({ url: `${broker.base}/oauth2/token`, authorization, body, connections: CONNECTIONS }) + '\n')
    const deadline = Date.now() + 20_000
    while (!out.includes('go\n')) {
      if (gen.exitCode !== null || Date.now() > deadline) throw new Error(`load generator did not start: ${out}`)
      await sleep(10)
    }
    await sleep(500) // at full strength
    const loaded = await revokeTimes(broker.base, REVOCATIONS)
    gen.stdin!.end('stop\n')
    while (!out.trimEnd().endsWith('}')) {
      if (gen.exitCode !== null && !out.trimEnd().endsWith('}')) throw new Error(`load generator exited: ${out}`)
      await sleep(10)
    }
    const report = JSON.parse(out.slice(out.indexOf('{'))) as { statuses: Record<string, number>; counted: number; ms: number }

    const row = (name: string, xs: number[]) =>
      `  ${name.padEnd(34)} p50 ${ms(percentile(xs, 50)).padStart(9)}   p99 ${ms(percentile(xs, 99)).padStart(9)}   max ${ms(Math.max(...xs)).padStart(9)}`
    console.log(`\n${label}: POST /admin/revocations, ${REVOCATIONS} one at a time (${SPACING_MS} ms apart)`)
    console.log(row('idle broker (reference)', reference))
    console.log(row(`token endpoint saturated`, loaded))
    console.log(
      `  p99 under load / p99 idle: ${(percentile(loaded, 99) / percentile(reference, 99)).toFixed(1)}x; ` +
        `exchanges meanwhile: ${Math.round(report.counted / (report.ms / 1000))}/s over ${CONNECTIONS} connections ` +
        `(statuses ${JSON.stringify(report.statuses)}); target p99 < 250 ms: ${percentile(loaded, 99) < 250 ? 'met' : 'MISSED'}`,
    )
  } finally {
    if (load !== undefined) await stop(load)
    await stop(broker.child)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

async function sharedServers(): Promise<{ env: Record<string, string>; cleanup: () => Promise<void> } | undefined> {
  const admin = postgres(DATABASE_URL, { max: 1, connect_timeout: 3, onnotice: () => {} })
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 3000, retryStrategy: () => null })
  try {
    await admin`select 1`
    await redis.connect()
    await redis.ping()
  } catch {
    await admin.end({ timeout: 1 }).catch(() => {})
    redis.disconnect()
    return undefined
  }
  const name = `mandate_bench_${randomBytes(6).toString('hex')}`
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(DATABASE_URL)
  url.pathname = `/${name}`
  const prefix = `mandate-bench-${randomBytes(6).toString('hex')}:`
  return {
    env: { DATABASE_URL: url.toString(), REDIS_URL, MANDATE_REDIS_PREFIX: prefix },
    async cleanup() {
      await admin.unsafe(`drop database if exists "${name}" with (force)`).catch(() => {})
      await admin.end({ timeout: 1 }).catch(() => {})
      await deleteKeys(redis, prefix)
      redis.disconnect()
    },
  }
}

console.log(`\nThe kill switch under overload (${cpus().length} cores, Node ${process.version}${quick ? ', --quick' : ''})`)
await measure('Embedded default (PGlite, in-memory revocation list)', {})
const shared = await sharedServers()
if (shared === undefined) {
  console.log(`\nPostgreSQL + Redis: skipped (not reachable at ${DATABASE_URL} / ${REDIS_URL})`)
} else {
  try {
    await measure('PostgreSQL + Redis', shared.env)
  } finally {
    await shared.cleanup()
  }
}
