/**
 * FOR BENCHMARKS ONLY. The forward-auth part of `npm run bench:revocation`,
 * against real brokers (`mandate serve --dev`, processes of their own; run
 * `npm run build` first):
 *
 *   1. Kill to first refusal: a token minted by broker B is revoked (by
 *      `jti`) through broker A's admin API, and B's GET /forward-auth is
 *      polled until it answers 401; timed from A's 201 (and from the kill's
 *      request). With PostgreSQL and Redis, A and B share them, so the kill
 *      crosses Redis as between two instances; without them A and B are one
 *      embedded broker and the figure is the in-process floor.
 *   2. Throughput and latency: GET /forward-auth with a live token, from the
 *      open-loop load generator (test/support/load/overload.ts, its own
 *      process) at a fixed arrival rate (1,000/s; the target is p99 ≤ 2 ms),
 *      then a closed loop on 16 connections for the broker's capacity.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LOAD_SCRIPTS, startLoadGenerator } from '../../test/support/load/run.js'
import { freePort } from '../../test/support/net.js'
import { ownBacking } from './backing.js'

const root = new URL('../../', import.meta.url).pathname
export const ADMIN = { authorization: 'Bearer demo-admin-key', 'content-type': 'application/json' }
const AGENT = `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}`
export const AUDIENCE = 'https://demo.example'
const FORWARD_AUTH = `/forward-auth?audience=${encodeURIComponent(AUDIENCE)}&scope=demo%3Aread`
/** The target for a proxy's check: it sits in front of every request to the resource server. */
const TARGET_P99_MS = 2

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
function percentile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

export interface Broker {
  readonly base: string
  readonly child: ChildProcess
  readonly dataDir: string
}

/** `mandate serve --dev` (with `--config configFile` when given) on a free port; resolves once /readyz says 200. */
export async function startBroker(env: Record<string, string>, configFile?: string): Promise<Broker> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const dataDir = mkdtempSync(join(tmpdir(), 'mandate-bench-fwd-'))
  const config = configFile === undefined ? [] : ['--config', configFile]
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev', ...config], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port), MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let tail = ''
  const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-4096))
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  for (const deadline = Date.now() + 60_000; ;) {
    if (child.exitCode !== null) throw new Error(`broker exited (${child.exitCode}): ${tail}`)
    if (
      await fetch(`${base}/readyz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return { base, child, dataDir }
    if (Date.now() > deadline) throw new Error(`broker not ready in 60 s: ${tail}`)
    await sleep(100)
  }
}

export async function stopBroker(b: Broker): Promise<void> {
  if (b.child.exitCode === null) {
    const exited = new Promise((r) => b.child.once('exit', r))
    b.child.kill('SIGTERM')
    await Promise.race([exited, sleep(10_000).then(() => b.child.kill('SIGKILL'))])
  }
  rmSync(b.dataDir, { recursive: true, force: true })
}

/** A token of `b`'s for demo-agent (dev user issuer → exchange). */
export async function mint(b: Broker): Promise<string> {
  const user = (await (await fetch(`${b.base}/dev/users/bench-user/token`, { method: 'POST', body: '{"scope":"demo:read"}' })).json()) as {
    access_token: string
  }
  const res = await fetch(`${b.base}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: AGENT, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: AUDIENCE,
      scope: 'demo:read',
    }),
  })
  if (res.status !== 200) throw new Error(`exchange: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { access_token: string }).access_token
}

const check = async (b: Broker, token: string) => {
  const res = await fetch(`${b.base}${FORWARD_AUTH}`, { headers: { authorization: `Bearer ${token}` } })
  await res.arrayBuffer()
  return res.status
}

/** Kill (jti revocation at `admin`) to the first 401 at `gate`, `kills` times; ms from the 201 and from the request. */
async function killToRefusal(admin: Broker, gate: Broker, kills: number): Promise<{ from201: number[]; fromRequest: number[] }> {
  const from201: number[] = []
  const fromRequest: number[] = []
  for (let i = 0; i < kills; i++) {
    const token = await mint(gate)
    if ((await check(gate, token)) !== 200) throw new Error('a fresh token is not allowed')
    const jti = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti
    const sent = performance.now()
    const kill = await fetch(`${admin.base}/admin/revocations`, { method: 'POST', headers: ADMIN, body: JSON.stringify({ jti, reason: `bench ${i}` }) })
    const acked = performance.now()
    await kill.arrayBuffer()
    if (kill.status !== 201) throw new Error(`kill: ${kill.status}`)
    for (;;) {
      const status = await check(gate, token)
      const now = performance.now()
      if (status === 401) {
        from201.push(now - acked)
        fromRequest.push(now - sent)
        break
      }
      if (status !== 200) throw new Error(`forward-auth answered ${status}`)
      if (now - acked > 5_000) throw new Error('no refusal within 5 s of the kill')
    }
  }
  return { from201, fromRequest }
}

async function load(gate: Broker, token: string, mode: { rate: number; maxInFlight: number } | { connections: number }, ms: number) {
  const gen = startLoadGenerator(LOAD_SCRIPTS.overload, {
    url: `${gate.base}${FORWARD_AUTH}`,
    authorization: `Bearer ${token}`,
    body: '',
    method: 'GET',
    ...mode,
  })
  try {
    await gen.started(20_000)
  } catch (err) {
    gen.child.kill('SIGKILL')
    throw err
  }
  await sleep(ms)
  return gen.stop(60_000)
}

export const row = (name: string, xs: readonly number[]) =>
  console.log(
    `  ${name.padEnd(46)} p50 ${percentile(xs, 50).toFixed(2).padStart(7)} ms   p99 ${percentile(xs, 99).toFixed(2).padStart(7)} ms   max ${Math.max(...xs)
      .toFixed(2)
      .padStart(7)} ms`,
  )

export async function forwardAuthBench(quick: boolean): Promise<void> {
  const kills = quick ? 30 : 200
  const windowMs = quick ? 3_000 : 10_000
  const backing = await ownBacking({ redis: true })
  const shared = typeof backing === 'string' ? undefined : backing
  const env = { ...shared?.env }
  const brokers: Broker[] = []
  try {
    const gate = await startBroker(env)
    brokers.push(gate)
    // Two instances sharing PostgreSQL and Redis: the kill is made on one and must reach the other's mirror.
    const admin = shared === undefined ? gate : await startBroker(env)
    if (admin !== gate) brokers.push(admin)
    const where = shared === undefined ? 'one embedded broker (no PostgreSQL + Redis: the in-process floor)' : 'two brokers sharing PostgreSQL + Redis'
    for (let i = 0; i < 3; i++) await mint(gate) // warm-up

    const { from201, fromRequest } = await killToRefusal(admin, gate, kills)
    console.log(`\nForward auth: a kill to the first refusal at GET /forward-auth (${kills} kills, ${where})`)
    row('from the kill’s 201', from201)
    row('from the kill’s request', fromRequest)

    const token = await mint(gate)
    await load(gate, token, { connections: 4 }, 1_000) // warm-up
    const open = await load(gate, token, { rate: 1000, maxInFlight: 512 }, windowMs)
    const closed = await load(gate, token, { connections: 16 }, windowMs)
    const perSecond = (n: number, ms: number) => ((n / ms) * 1000).toFixed(0)
    const ok = (r: typeof open) => r.statuses['200'] ?? 0
    const others = (r: typeof open) =>
      Object.entries(r.statuses)
        .filter(([s]) => s !== '200')
        .map(([s, n]) => `${s}: ${n}`)
        .join(', ') || 'none'
    console.log(`\nForward auth: GET /forward-auth with a live token (load generator in its own process, keep-alive, same machine)`)
    const p99 = open.latency['200']?.p99 ?? Number.NaN
    const fixed = (x: number | undefined) => (x === undefined ? 'n/a' : x.toFixed(2))
    console.log(
      `  open loop, 1,000/s for ${windowMs / 1000} s: ${perSecond(ok(open), open.ms)}/s answered 200, p50 ${fixed(open.latency['200']?.p50)} ms, ` +
        `p99 ${p99.toFixed(2)} ms (target ≤ ${TARGET_P99_MS} ms: ${p99 <= TARGET_P99_MS ? 'met' : 'MISSED'}); other answers: ${others(open)}; not sent: ${open.notSent}`,
    )
    console.log(
      `  closed loop, 16 connections: ${perSecond(ok(closed), closed.ms)}/s answered 200, p50 ${fixed(closed.latency['200']?.p50)} ms, ` +
        `p99 ${fixed(closed.latency['200']?.p99)} ms; other answers: ${others(closed)}`,
    )
  } finally {
    for (const b of brokers) await stopBroker(b)
    await shared?.cleanup()
  }
}
