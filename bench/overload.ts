/**
 * npm run bench:overload (also in bench:all): the kill switch under overload. The
 * revocation API's p99 must stay within 100 ms while the token endpoint is
 * driven past saturation (load shedding answers the excess 503 before it
 * costs crypto; the admin API is never shed).
 *
 * A real broker (`mandate serve --dev`, its own process) is measured three
 * times in the same run:
 *   1. reference: revocations made one at a time against an idle broker;
 *   2. saturated: the same, while a load generator (another process, 64
 *      keep-alive connections, each posting the next exchange as soon as the
 *      last one answers) keeps the token endpoint saturated; its rate is the
 *      broker's capacity in this run;
 *   3. past saturation: the same, while the generator posts exchanges at a
 *      fixed rate of OVERLOAD_FACTOR times that capacity, whether or not the
 *      earlier ones were answered (open loop, up to MAX_IN_FLIGHT at once on
 *      as many connections; an arrival beyond that is counted as not sent).
 * Each case prints p50/p99/max of the admin API's `POST /admin/revocations`
 * (time to its 201, which is after the record is durable and published); the
 * loaded cases also the exchanges answered per second by status, the
 * latency of the 200s and 503s, and the p99 against the target. The load
 * generator runs on the same cores as the broker; the figures are for a
 * broker sharing its machine, i.e. on the pessimistic side.
 *
 * With PostgreSQL + Redis a fourth case starts the broker again with an
 * admin port (`MANDATE_ADMIN_PORT`: the admin API on a thread of its own) and
 * sends the revocations there while its token endpoint is past saturation.
 *
 * Configurations: the embedded default (PGlite, in-memory revocation list),
 * then PostgreSQL + Redis (a database of its own created through
 * DATABASE_URL's server and dropped afterwards, a Redis key prefix of its own
 * deleted afterwards) when both answer. `--quick` makes fewer revocations.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Report as LoadReport } from '../test/support/load/overload.js'
import { LOAD_SCRIPTS, startLoadGenerator } from '../test/support/load/run.js'
import { freePort } from '../test/support/net.js'
import { ownBacking } from './support/backing.js'

const quick = process.argv.includes('--quick')
const REVOCATIONS = quick ? 60 : 200
/** Least time between two revocation calls: a responder's pace, not a flood. */
const SPACING_MS = 40
const CONNECTIONS = 64
/** Past saturation: arrivals at this multiple of the rate the saturated case served. */
const OVERLOAD_FACTOR = 2
const MAX_IN_FLIGHT = 512
/** The revocation API's p99 target, with the token endpoint past saturation. */
const TARGET_P99_MS = 100
const ADMIN_KEY = 'demo-admin-key'
const root = join(dirname(fileURLToPath(import.meta.url)), '..')

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
function percentile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}
const ms = (x: number) => `${x.toFixed(1)} ms`

/** Starts the load generator (test/support/load/overload.ts, its own process) in `mode`; resolves once it is under way, with a function that stops it and returns its counts. */
async function startLoad(request: { url: string; authorization: string; body: string }, mode: { connections: number } | { rate: number; maxInFlight: number }) {
  const gen = startLoadGenerator(LOAD_SCRIPTS.overload, { ...request, ...mode })
  try {
    await gen.started(20_000)
  } catch (err) {
    gen.child.kill('SIGKILL')
    throw err
  }
  return { child: gen.child, stop: () => gen.stop(60_000) }
}

interface Running {
  readonly base: string
  /** The admin port's base URL, or `base` when the broker has none. */
  readonly admin: string
  readonly child: ChildProcess
  output(): string
  /** How many `requests refused` lines the broker has logged so far. */
  refusalLines(): number
  /** The refusals by cause in the lines logged since `from` (a `refusalLines()` value). */
  refusedSince(from: number): Record<string, number>
}

/** The broker logs its refusals (shed requests among them) once per this interval, and once more after. */
const REFUSAL_LOG_INTERVAL_MS = 5_000

async function startBroker(env: Record<string, string>, dataDir: string, options: { adminPort?: boolean } = {}): Promise<Running> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const adminPort = options.adminPort === true ? await freePort() : undefined
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
    cwd: root,
    env: {
      ...process.env,
      ...env,
      PORT: String(port),
      ...(adminPort === undefined ? {} : { MANDATE_ADMIN_PORT: String(adminPort) }),
      MANDATE_DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let tail = ''
  const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-4096))
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const refusals: Record<string, number>[] = []
  let partial = ''
  child.stdout.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n')
    partial = lines.pop()!
    for (const line of lines) {
      if (!line.includes('"requests refused"')) continue
      try {
        refusals.push((JSON.parse(line) as { causes: Record<string, number> }).causes)
      } catch {
        // not a log line
      }
    }
  })
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broker exited (${child.exitCode}): ${tail}`)
    const ok = await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    )
    if (ok) break
    if (Date.now() > deadline) throw new Error(`broker not ready in 30 s: ${tail}`)
    await sleep(100)
  }
  return {
    base,
    admin: adminPort === undefined ? base : `http://127.0.0.1:${adminPort}`,
    child,
    output: () => tail,
    refusalLines: () => refusals.length,
    refusedSince(from) {
      const sum: Record<string, number> = {}
      for (const causes of refusals.slice(from)) for (const [cause, n] of Object.entries(causes)) sum[cause] = (sum[cause] ?? 0) + n
      return sum
    },
  }
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

/** The exchange the load generator repeats: a dev user token of `broker`'s, tried once. */
async function exchangeRequest(broker: Running): Promise<{ url: string; authorization: string; body: string }> {
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
  return { url: `${broker.base}/oauth2/token`, authorization, body }
}

/**
 * `adminPort` (needs PostgreSQL and Redis, which the admin thread shares): a
 * fourth case, past saturation again, on a broker started with an admin port:
 * the flood at its token endpoint, the revocations at its admin port.
 */
async function measure(label: string, env: Record<string, string>, options: { adminPort?: boolean } = {}): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mandate-bench-'))
  let broker = await startBroker(env, dataDir)
  const adminDataDir = options.adminPort === true ? mkdtempSync(join(tmpdir(), 'mandate-bench-')) : undefined
  let load: Awaited<ReturnType<typeof startLoad>> | undefined
  try {
    const request = await exchangeRequest(broker)

    await revokeTimes(broker.base, 10) // warm-up
    const reference = await revokeTimes(broker.base, REVOCATIONS)

    // Each loaded case ends with the broker's refusal log flushed: its refusals by cause are the case's.
    let mark = broker.refusalLines()
    load = await startLoad(request, { connections: CONNECTIONS })
    await sleep(500) // at full strength
    const saturated = await revokeTimes(broker.base, REVOCATIONS)
    const closed = await load.stop()
    load = undefined
    await sleep(REFUSAL_LOG_INTERVAL_MS + 500)
    const closedRefusals = broker.refusedSince(mark)
    const capacity = ((closed.statuses['200'] ?? 0) / closed.ms) * 1000

    const rate = Math.round(OVERLOAD_FACTOR * capacity)
    mark = broker.refusalLines()
    load = await startLoad(request, { rate, maxInFlight: MAX_IN_FLIGHT })
    await sleep(500)
    const past = await revokeTimes(broker.base, REVOCATIONS)
    const open = await load.stop()
    load = undefined
    await sleep(REFUSAL_LOG_INTERVAL_MS + 500)
    const openRefusals = broker.refusedSince(mark)

    let onAdminPort: { times: number[]; report: LoadReport } | undefined
    if (adminDataDir !== undefined) {
      await stop(broker.child)
      broker = await startBroker(env, adminDataDir, { adminPort: true })
      // Its dev issuer is its own: a user token from it.
      const onNew = await exchangeRequest(broker)
      await revokeTimes(broker.admin, 10) // warm-up
      // Warmed as the first broker was by its saturated case, so that its token figures compare.
      load = await startLoad(onNew, { connections: CONNECTIONS })
      await sleep(3_000)
      await load.stop()
      load = await startLoad(onNew, { rate, maxInFlight: MAX_IN_FLIGHT })
      await sleep(500)
      const times = await revokeTimes(broker.admin, REVOCATIONS)
      const report = await load.stop()
      load = undefined
      onAdminPort = { times, report }
    }

    const row = (name: string, xs: number[]) =>
      `  ${name.padEnd(34)} p50 ${ms(percentile(xs, 50)).padStart(9)}   p99 ${ms(percentile(xs, 99)).padStart(9)}   max ${ms(Math.max(...xs)).padStart(9)}`
    const served = (r: LoadReport) => {
      const perSecond = (n: number | undefined) => Math.round(((n ?? 0) / r.ms) * 1000)
      const lat = (status: string) => (r.latency[status] === undefined ? '' : ` (p50 ${ms(r.latency[status].p50)}, p99 ${ms(r.latency[status].p99)})`)
      const others = Object.entries(r.statuses).filter(([k]) => k !== '200' && k !== '503')
      return (
        `200: ${perSecond(r.statuses['200'])}/s${lat('200')}; 503: ${perSecond(r.statuses['503'])}/s${lat('503')}` +
        (others.length > 0 ? `; other: ${JSON.stringify(Object.fromEntries(others))}` : '') +
        (r.notSent > 0 ? `; not sent (${MAX_IN_FLIGHT} in flight): ${perSecond(r.notSent)}/s` : '')
      )
    }
    const verdict = (xs: number[]) => `target p99 <= ${TARGET_P99_MS} ms: ${percentile(xs, 99) <= TARGET_P99_MS ? 'met' : 'MISSED'}`
    console.log(`\n${label}: POST /admin/revocations, ${REVOCATIONS} one at a time (${SPACING_MS} ms apart)`)
    console.log(row('idle broker (reference)', reference))
    console.log(row(`saturated (${CONNECTIONS} connections)`, saturated))
    console.log(`    exchanges meanwhile: ${served(closed)}; ${verdict(saturated)}`)
    console.log(`    refused by the broker, by cause: ${JSON.stringify(closedRefusals)}`)
    console.log(row(`past saturation (${OVERLOAD_FACTOR}x: ${rate}/s offered)`, past))
    console.log(`    exchanges meanwhile: ${served(open)}; ${verdict(past)}`)
    console.log(`    refused by the broker, by cause: ${JSON.stringify(openRefusals)}`)
    if (onAdminPort !== undefined) {
      console.log(row(`past saturation, admin port (${rate}/s)`, onAdminPort.times))
      console.log(`    exchanges meanwhile (its token endpoint): ${served(onAdminPort.report)}; ${verdict(onAdminPort.times)}`)
    }
  } finally {
    if (load !== undefined) await stop(load.child)
    await stop(broker.child)
    rmSync(dataDir, { recursive: true, force: true })
    if (adminDataDir !== undefined) rmSync(adminDataDir, { recursive: true, force: true })
  }
}

console.log(`\nThe kill switch under overload (${cpus().length} cores, Node ${process.version}${quick ? ', --quick' : ''})`)
await measure('Embedded default (PGlite, in-memory revocation list)', {})
const shared = await ownBacking({ redis: true })
if (typeof shared === 'string') {
  console.log(`\nPostgreSQL + Redis: skipped (${shared})`)
} else {
  try {
    await measure('PostgreSQL + Redis', { ...shared.env }, { adminPort: true })
  } finally {
    await shared.cleanup()
  }
}
