/**
 * npm run bench (first): the token exchange against a reference
 * OAuth server and the crypto floor, side by side in one run.
 *
 *   tsx bench/exchange.ts [--quick] [--rounds=N] [--only=NAME,…] [--variant=NAME=YAML …] [--profile[=NAME] | --no-profile] [--write | --no-write]
 *
 * Every server gets the same inputs (bench/support/inputs.ts: an RS256 IdP,
 * 8 agents with ES256 keys and policy files, 100 users) and the same load
 * generator (bench/support/load.ts, its own process: a fresh client
 * assertion and a distinct subject token per exchange, signed before each
 * measurement):
 *
 *   peer              oidc-provider with a token-exchange grant (bench/support/peer.ts)
 *   floor             bare Hono + node:crypto one-shot calls (bench/support/floor.ts)
 *   mandate-embedded  `mandate serve`, no DATABASE_URL/REDIS_URL: PGlite log, in-process revocation list
 *   mandate-prod-1w   `mandate serve` with PostgreSQL (group-committed log) and Redis (revocation mirror, replay cache)
 *   mandate-prod-2w   the same, `--workers 2`
 *   mandate-prod-1w-dpop  the mandate-prod-1w server, every exchange with a DPoP proof (RFC 9449) of its
 *                     agent's key, so tokens come bound: the DPoP path against the bearer path, same process
 *
 * Mandate runs with a production config (no --dev): its issuer is the one the
 * inputs name, it trusts the IdP through a JWKS served over HTTP by this
 * script (fetched once, then cached as in production), and it reads the
 * generated policy files. PostgreSQL gets a database of its own (dropped
 * afterwards), Redis a key prefix of its own (deleted afterwards); when
 * either does not answer, the production rows are skipped and say so.
 *
 * All servers run at once, idle but for the one measured. Each round
 * measures every server at 64 then 1 connection(s), in an order rotated from
 * round to round; ratios are taken within a round and the median of the
 * rounds' ratios is reported. After the rounds, a profiled
 * mandate-prod-1w (node --cpu-prof) takes one more 64-connection measurement
 * and its profile is summarised (not counted in the ratios).
 *
 * The run writes bench/RESULTS.md and bench/results.json (machine, commit,
 * settings, every measurement); `--quick` (short windows, no profile) writes
 * nothing unless `--write` is given. Any non-200 or connection error in any
 * measurement makes the run exit 1.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { freePort } from '../test/support/net.js'
import { ownBacking, type OwnBacking as Backing } from './support/backing.js'
import { generateInputs, mandateConfig, signingKeySet, writeInputs } from './support/inputs.js'
import type { LoadResult } from './support/load.js'
import { summariseProfile, type ProfileSummary } from './support/profile.js'
import { ownedSections } from './support/results-md.js'

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const roundsArg = args.find((a) => a.startsWith('--rounds='))?.slice('--rounds='.length)
const ROUNDS = roundsArg !== undefined ? Number(roundsArg) : 3
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) {
  process.stderr.write('--rounds=N: N must be a positive integer\n')
  process.exit(2)
}
const PROFILE = args.includes('--profile') || args.some((a) => a.startsWith('--profile=')) || (!quick && !args.includes('--no-profile'))
const PROFILED = (args.find((a) => a.startsWith('--profile='))?.slice('--profile='.length) ?? 'mandate-prod-1w') as TargetName
/** `--only=peer,mandate-prod-1w`: measure these servers only (ratios need their references among them). */
const ONLY = args
  .find((a) => a.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',')
const WRITE = args.includes('--write') || (!quick && !args.includes('--no-write'))
/** Window lengths, ms: uncounted warm-up, then counted. */
const WINDOWS: Record<number, { warmupMs: number; durationMs: number }> = quick
  ? { 64: { warmupMs: 500, durationMs: 2_000 }, 1: { warmupMs: 300, durationMs: 1_000 } }
  : { 64: { warmupMs: 1_500, durationMs: 6_000 }, 1: { warmupMs: 500, durationMs: 3_000 } }
const CONNECTIONS = [64, 1] as const
/** Load on every server before the first round, uncounted. */
const PRIME_MS = quick ? 1_500 : 3_000
/** First guesses of each server's rate, to size the exchanges signed for a measurement; later rounds use what was seen. */
const FIRST_GUESS: Record<number, number> = { 64: 12_000, 1: 6_000 }

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The servers; `mandate-prod-1w+NAME` is a `--variant`. */
type TargetName = 'peer' | 'floor' | 'mandate-embedded' | 'mandate-prod-1w' | 'mandate-prod-2w' | 'mandate-prod-1w-dpop' | `mandate-prod-1w+${string}`
const MANDATE_PROD: readonly TargetName[] = ['mandate-prod-1w', 'mandate-prod-2w']
/**
 * `--variant=NAME=YAML` (repeatable): one more server, mandate-prod-1w+NAME,
 * whose config file ends with YAML (e.g. `--variant=nocache='limits: { subject_cache_entries: 0 }'`),
 * measured in the same rounds: an A/B of a setting on the same machine and inputs.
 */
const VARIANTS = new Map(
  args
    .filter((a) => a.startsWith('--variant='))
    .map((a) => {
      const spec = a.slice('--variant='.length)
      const eq = spec.indexOf('=')
      if (eq < 1) {
        process.stderr.write(`--variant=NAME=YAML: got ${JSON.stringify(spec)}\n`)
        process.exit(2)
      }
      return [`mandate-prod-1w+${spec.slice(0, eq)}` as TargetName, spec.slice(eq + 1)] as const
    }),
)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const rate = (x: number) => `${Math.round(x).toLocaleString('en-US')}/s`
const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1))
const say = (line: string) => process.stdout.write(`${line}\n`)

// ---------------------------------------------------------------------------
// Inputs, the IdP's JWKS, PostgreSQL and Redis

const dir = mkdtempSync(join(tmpdir(), 'mandate-bench-exchange-'))
const inputs = generateInputs()
const files = await writeInputs(dir, inputs)
writeFileSync(join(dir, 'signing-keys.json'), JSON.stringify(signingKeySet(inputs.server)), { mode: 0o600 })

const idp = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/jwks') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' })
    res.end(JSON.stringify(inputs.server.idp.jwks))
  } else {
    res.writeHead(404).end()
  }
})
await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve))
const jwksUri = `http://127.0.0.1:${(idp.address() as { port: number }).port}/jwks`

// ---------------------------------------------------------------------------
// Servers under test

interface Target {
  readonly name: TargetName
  readonly url: string
  /** The load sends a DPoP proof with every exchange. */
  readonly dpop?: boolean
  readonly child: ChildProcess
  readonly stderr: () => string
}

function mandateConfigFile(name: string, port: number): string {
  const file = join(dir, `${name}.yaml`)
  const options = {
    port,
    policiesDir: files.policiesDir,
    dataDir: join(dir, `data-${name}`),
    signingKeysFile: join(dir, 'signing-keys.json'),
    idpJwksUri: jwksUri,
    extra: VARIANTS.get(name as TargetName),
  }
  writeFileSync(file, mandateConfig(inputs.server, options))
  return file
}

/** Starts a server and resolves once it answers; a peer/floor says so on stdout, Mandate through /readyz. */
async function start(name: TargetName, backing: Backing | undefined, nodeArgs: readonly string[] = []): Promise<Target> {
  const port = await freePort()
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), LOG_LEVEL: process.env['LOG_LEVEL'] ?? 'warn' }
  for (const k of Object.keys(env)) if (k.startsWith('OTEL_') || k.startsWith('MANDATE_')) delete env[k]
  delete env['DATABASE_URL']
  delete env['REDIS_URL']
  let argv: string[]
  let path = '/oauth2/token'
  if (name === 'peer' || name === 'floor') {
    argv = [...nodeArgs, '--import', 'tsx', join(root, `bench/support/${name}.ts`), files.server]
    if (name === 'peer') path = '/token'
  } else {
    env['MANDATE_CONFIG'] = mandateConfigFile(name, port)
    env['MANDATE_CHECKPOINT_DIR'] = join(dir, `checkpoints-${name}`)
    if (backing !== undefined) {
      Object.assign(env, backing.env)
    }
    argv = [...nodeArgs, join(root, 'bin/mandate.js'), 'serve', ...(name === 'mandate-prod-2w' ? ['--workers', '2'] : [])]
  }
  const child = spawn(process.execPath, argv, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d: Buffer) => (err = (err + String(d)).slice(-4000)))
  child.stdout.resume()
  const url = `http://127.0.0.1:${port}${path}`
  const readyUrl = name === 'peer' || name === 'floor' ? undefined : `http://127.0.0.1:${port}/readyz`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${String(child.exitCode)} while starting: ${err.trim().slice(-1500)}`)
    if (Date.now() > deadline) throw new Error(`${name} did not start in 60 s: ${err.trim().slice(-1500)}`)
    const up =
      readyUrl === undefined
        ? await fetch(`http://127.0.0.1:${port}/`, { method: 'HEAD' }).then(
            () => true,
            () => false,
          )
        : await fetch(readyUrl).then(
            (r) => r.ok,
            () => false,
          )
    if (up) break
    await sleep(200)
  }
  return { name, url, child, stderr: () => err }
}

async function stop(target: Target, graceMs = 20_000): Promise<number | null> {
  if (target.child.exitCode !== null) return target.child.exitCode
  const exited = new Promise<number | null>((r) => target.child.once('exit', (code) => r(code)))
  target.child.kill('SIGTERM')
  const timer = setTimeout(() => target.child.kill('SIGKILL'), graceMs)
  const code = await exited
  clearTimeout(timer)
  return code
}

/** CPU time (ms) from /proc (Linux) of process `pid`: all its threads, its main thread, and its whole process tree. */
function cpuMs(pid: number): { all: number; main: number; tree: number; threads: Record<string, number> } | undefined {
  const parse = (stat: string) => {
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { ppid: Number(fields[1]), ms: (Number(fields[11]) + Number(fields[12])) * 10 } // utime + stime, USER_HZ = 100
  }
  try {
    const all = parse(readFileSync(`/proc/${pid}/stat`, 'utf8')).ms
    const main = parse(readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')).ms
    // The main thread, and the others by name (on Node 20 all are "node": libuv's pool, V8's GC and compiler helpers).
    const threads: Record<string, number> = {}
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
        const name = tid === String(pid) ? 'main thread' : `other threads (${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))})`
        threads[name] = (threads[name] ?? 0) + parse(stat).ms
      } catch {
        // Gone meanwhile.
      }
    }
    const procs = new Map<number, { ppid: number; ms: number }>()
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      try {
        procs.set(Number(entry), parse(readFileSync(`/proc/${entry}/stat`, 'utf8')))
      } catch {
        // Gone meanwhile.
      }
    }
    const inTree = (p: number): boolean => p === pid || (p > 1 && procs.has(p) && inTree(procs.get(p)!.ppid))
    let tree = 0
    for (const [p, { ms }] of procs) if (inTree(p)) tree += ms
    return { all, main, tree, threads }
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------
// The load generator

const loadChild = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/support/load.ts'), files.generator], {
  cwd: root,
  stdio: ['pipe', 'pipe', 'inherit'],
})
const loadLines = createInterface({ input: loadChild.stdout })[Symbol.asyncIterator]()
async function loadAnswer(): Promise<Record<string, unknown>> {
  const next = await loadLines.next()
  if (next.done === true) throw new Error('the load generator exited')
  return JSON.parse(next.value) as Record<string, unknown>
}
if ((await loadAnswer())['ready'] !== true) throw new Error('the load generator did not start')

let commandId = 0
async function measure(
  target: Target,
  connections: number,
  expectedRate: number,
  window = WINDOWS[connections]!,
): Promise<LoadResult & Pick<Measurement, 'cpuPerResponse' | 'threadsPerResponse'>> {
  const { warmupMs, durationMs } = window
  // Exchanges to sign: enough for half again the rate seen so far (a server still warming up speeds up).
  const count = Math.ceil((expectedRate * (warmupMs + durationMs) * 1.5) / 1000) + connections
  const before = cpuMs(target.child.pid!)
  loadChild.stdin.write(
    `${JSON.stringify({ id: String(++commandId), url: target.url, series: target.name, connections, count, warmupMs, durationMs, dpop: target.dpop === true })}\n`,
  )
  const answer = await loadAnswer()
  const after = cpuMs(target.child.pid!)
  if (typeof answer['error'] === 'string') throw new Error(`load generator: ${answer['error']}`)
  const result = answer as unknown as LoadResult
  const responses = Object.values(result.statuses).reduce((a, b) => a + b, 0)
  // The server's CPU (its whole process tree, every thread) per response, warm-up included; idle while signing.
  if (before === undefined || after === undefined || responses === 0) return result
  const threadsPerResponse = Object.fromEntries(
    Object.entries(after.threads).map(([name, ms]) => [name, Number((((ms - (before.threads[name] ?? 0)) * 1000) / responses).toFixed(1))]),
  )
  return { ...result, cpuPerResponse: ((after.tree - before.tree) * 1000) / responses, threadsPerResponse }
}

// ---------------------------------------------------------------------------
// The run

interface Measurement extends LoadResult {
  readonly round: number
  /** The server's CPU time per response (µs, every process and thread of it), from /proc. */
  readonly cpuPerResponse?: number
  /** The same for its first process only, by thread name (µs). */
  readonly threadsPerResponse?: Record<string, number>
}
const counted_ = (ms: readonly Measurement[]) => ms.filter((m) => m.round > 0)

const failures: string[] = []
const measurements: Measurement[] = []
const skipped: Record<string, string> = {}
const started: Target[] = []
let backing: Backing | undefined
let profile: ProfileSummary | undefined
let auditCheck: { rows: number; answered200: number } | undefined
const startedAt = new Date()
const loadBefore = loadavg()

function bad(m: LoadResult): number {
  return Object.entries(m.statuses).reduce((a, [s, n]) => a + (s === '200' ? 0 : n), 0) + m.errors
}

try {
  const prod = await ownBacking({ redis: true })
  if (typeof prod === 'string') {
    for (const t of MANDATE_PROD) skipped[t] = prod
    say(`production rows skipped: ${prod}`)
  } else {
    backing = prod
  }

  const names = (['peer', 'floor', 'mandate-embedded', ...(backing !== undefined ? [...MANDATE_PROD, ...VARIANTS.keys()] : [])] as TargetName[]).filter(
    (n) => ONLY === undefined || ONLY.includes(n),
  )
  // The DPoP path is measured on the mandate-prod-1w process itself, so its ratio to the bearer path compares like with like.
  const withDpop = backing !== undefined && names.includes('mandate-prod-1w') && (ONLY === undefined || ONLY.includes('mandate-prod-1w-dpop'))
  say(
    `exchange bench${quick ? ' (quick)' : ''}: ${names.join(', ')}; ${ROUNDS} round(s) of 64 and 1 connection(s); ${cpus().length} cores, Node ${process.version}`,
  )
  say(
    `inputs: ${inputs.server.agents.length} agents, ${inputs.generator.users.length} users; a fresh ES256 client assertion and a distinct RS256 subject token per exchange`,
  )
  for (const name of names) {
    const t0 = performance.now()
    started.push(await start(name, name.startsWith('mandate-prod') ? backing : undefined))
    say(`  started ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  }
  const prodTarget = started.find((t) => t.name === 'mandate-prod-1w')
  const measured: Target[] = withDpop && prodTarget !== undefined ? [...started, { ...prodTarget, name: 'mandate-prod-1w-dpop', dpop: true }] : started

  // JIT, connection pools, the first JWKS fetch: every server runs a while before anything counts.
  const seen = new Map<string, number>()
  for (const target of measured) {
    const m = await measure(target, 64, FIRST_GUESS[64]!, { warmupMs: PRIME_MS, durationMs: 500 })
    seen.set(`${target.name}/64`, m.perSecond)
    measurements.push({ ...m, round: 0 })
    if (bad(m) > 0) failures.push(`${target.name}, priming: ${bad(m)} non-200/errors: ${m.samples.join(' | ')}`)
  }
  say(`  primed every server for ${PRIME_MS / 1000} s at 64 connections`)
  for (let round = 1; round <= ROUNDS; round++) {
    const order = measured.map((_, i) => measured[(i + round - 1) % measured.length]!)
    say(`round ${round}/${ROUNDS}: ${order.map((t) => t.name).join(' → ')}`)
    for (const connections of CONNECTIONS) {
      for (const target of order) {
        const key = `${target.name}/${connections}`
        const m = await measure(target, connections, seen.get(key) ?? FIRST_GUESS[connections]!)
        seen.set(key, Math.max(seen.get(key) ?? 0, m.perSecond))
        measurements.push({ ...m, round })
        const refused = bad(m)
        say(
          `  ${target.name.padEnd(20)} ${String(connections).padStart(2)} conn  ${rate(m.perSecond).padStart(9)}  ` +
            `p50 ${ms(m.p50)}  p99 ${ms(m.p99)}  p99.9 ${ms(m.p999)} ms  CPU ${m.cpuPerResponse?.toFixed(0) ?? '?'} µs/token  non-200/errors ${refused}` +
            `${m.exhausted ? '  (ran out of signed exchanges: window shortened)' : ''}  [signed in ${(m.signMs / 1000).toFixed(1)} s]`,
        )
        if (refused > 0) failures.push(`${target.name} at ${connections} conn, round ${round}: ${refused} non-200/errors: ${m.samples.join(' | ')}`)
      }
    }
  }

  if (PROFILE && started.some((t) => t.name === PROFILED)) {
    say(`profile: a fresh ${PROFILED} under node --cpu-prof, one 64-connection measurement`)
    const profDir = join(dir, 'cpu-prof')
    const profiled = await start(PROFILED, PROFILED.startsWith('mandate-prod') ? backing : undefined, ['--cpu-prof', '--cpu-prof-dir', profDir])
    const from = Number(process.hrtime.bigint() / 1000n)
    const m = await measure(profiled, 64, seen.get(`${PROFILED}/64`) ?? FIRST_GUESS[64]!)
    const to = Number(process.hrtime.bigint() / 1000n)
    if (bad(m) > 0) failures.push(`profiled ${PROFILED}: ${bad(m)} non-200/errors`)
    measurements.push({ ...m, series: `${PROFILED} (profiled)`, round: 0 })
    await stop(profiled)
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
    if (file === undefined) {
      failures.push('the profiled broker wrote no .cpuprofile')
    } else {
      const responses = Object.values(m.statuses).reduce((a, b) => a + b, 0)
      // The signing and signature checks run on libuv's pool, which the profile does not sample: /proc counts every thread.
      // The split is from an unprofiled measurement (the profiler's own thread would count).
      const plain = counted_(measurements)
        .filter((x) => x.series === PROFILED && x.connections === 64 && x.threadsPerResponse !== undefined)
        .at(-1)
      const threads =
        plain?.threadsPerResponse !== undefined
          ? `CPU per response of an unprofiled ${PROFILED} at 64 connections (round ${plain.round}; /proc, by thread): ` +
            Object.entries(plain.threadsPerResponse)
              .sort((a, b) => b[1] - a[1])
              .map(([name, us]) => `${name} ${us.toFixed(0)} µs`)
              .join(', ') +
            ` (total ${plain.cpuPerResponse?.toFixed(0) ?? '?'} µs; the other threads are libuv's pool, which signs and verifies, and V8's GC and compiler helpers)`
          : 'CPU per thread from /proc: not available'
      const summary = summariseProfile(join(profDir, file), responses, root, { from, to })
      profile = { ...summary, text: `${threads}\n${summary.text}`, markdown: `${threads}.\n\n${summary.markdown}` }
    }
  }
} catch (err) {
  failures.push(`run: ${(err as Error).message}`)
} finally {
  for (const t of started) {
    const code = await stop(t)
    if (code !== 0 && code !== null) failures.push(`${t.name} exited ${code} on SIGTERM: ${t.stderr().trim().slice(-800)}`)
  }
  loadChild.stdin.end()
  idp.close()
}

// Every 200 from a production broker is a token.issued row, warm-ups included.
if (backing !== undefined) {
  try {
    const rows = await backing.issuedRows()
    const answered200 = measurements.filter((m) => m.series.startsWith('mandate-prod')).reduce((a, m) => a + (m.statuses['200'] ?? 0), 0)
    auditCheck = { rows, answered200 }
    if (rows !== answered200) failures.push(`PostgreSQL holds ${rows} token.issued rows for ${answered200} tokens answered 200`)
  } catch (err) {
    failures.push(`counting token.issued rows: ${(err as Error).message}`)
  }
  await backing.cleanup()
}
rmSync(dir, { recursive: true, force: true })

// ---------------------------------------------------------------------------
// Summary

interface Row {
  readonly target: string
  readonly connections: number
  readonly perSecond: number
  readonly p50: number
  readonly p99: number
  readonly p999: number
  readonly nonOk: number
  /** The server's CPU per token (µs, all its processes and threads; PostgreSQL and Redis not included). */
  readonly cpu: number | undefined
  readonly vsPeer?: number | undefined
  readonly vsFloor?: number | undefined
  readonly vsEmbedded?: number | undefined
  readonly rounds: readonly number[]
}

const counted = measurements.filter((m) => m.round > 0)
function ratio(target: string, reference: string, connections: number): number | undefined {
  const per = []
  for (let r = 1; r <= ROUNDS; r++) {
    const a = counted.find((m) => m.series === target && m.connections === connections && m.round === r)
    const b = counted.find((m) => m.series === reference && m.connections === connections && m.round === r)
    if (a !== undefined && b !== undefined && b.perSecond > 0) per.push(a.perSecond / b.perSecond)
  }
  return per.length === 0 ? undefined : median(per)
}
const rows: Row[] = []
for (const connections of CONNECTIONS) {
  for (const target of [...new Set(counted.map((m) => m.series))]) {
    const ms_ = counted.filter((m) => m.series === target && m.connections === connections)
    if (ms_.length === 0) continue
    rows.push({
      target,
      connections,
      perSecond: median(ms_.map((m) => m.perSecond)),
      p50: median(ms_.map((m) => m.p50)),
      p99: median(ms_.map((m) => m.p99)),
      p999: median(ms_.map((m) => m.p999)),
      nonOk: ms_.reduce((a, m) => a + bad(m), 0),
      cpu: ms_.every((m) => m.cpuPerResponse !== undefined) ? median(ms_.map((m) => m.cpuPerResponse!)) : undefined,
      rounds: ms_.map((m) => Math.round(m.perSecond)),
      ...(target !== 'peer' ? { vsPeer: ratio(target, 'peer', connections) } : {}),
      ...(target !== 'floor' ? { vsFloor: ratio(target, 'floor', connections) } : {}),
      ...(target.startsWith('mandate-prod') ? { vsEmbedded: ratio(target, 'mandate-embedded', connections) } : {}),
    })
  }
}

const x = (r: number | undefined) => (r === undefined ? '–' : `${r.toFixed(2)}×`)
const get = (target: string, connections: number) => rows.find((r) => r.target === target && r.connections === connections)
interface Check {
  readonly target: string
  readonly figure: string
  readonly met: boolean | undefined
}
const prod64 = get('mandate-prod-1w', 64)
const prod1 = get('mandate-prod-1w', 1)
/** The DPoP path's server CPU per token over the bearer path's, within each round (median): what binding a token costs. */
function cpuRatio(target: string, reference: string, connections: number): number | undefined {
  const per = []
  for (let r = 1; r <= ROUNDS; r++) {
    const a = counted.find((m) => m.series === target && m.connections === connections && m.round === r)?.cpuPerResponse
    const b = counted.find((m) => m.series === reference && m.connections === connections && m.round === r)?.cpuPerResponse
    if (a !== undefined && b !== undefined && b > 0) per.push(a / b)
  }
  return per.length === 0 ? undefined : median(per)
}
const dpopCost = cpuRatio('mandate-prod-1w-dpop', 'mandate-prod-1w', 64)
const dpopSpeed = ratio('mandate-prod-1w', 'mandate-prod-1w-dpop', 64)
const checks: Check[] = [
  { target: 'mandate-prod-1w ≥ 2.5× peer (64 conn)', figure: x(prod64?.vsPeer), met: prod64?.vsPeer === undefined ? undefined : prod64.vsPeer >= 2.5 },
  { target: 'mandate-prod-1w ≥ 0.8× floor (64 conn)', figure: x(prod64?.vsFloor), met: prod64?.vsFloor === undefined ? undefined : prod64.vsFloor >= 0.8 },
  {
    target: 'mandate-prod-1w p99 < 25 ms (64 conn)',
    figure: prod64 === undefined ? '–' : `${ms(prod64.p99)} ms`,
    met: prod64 === undefined ? undefined : prod64.p99 < 25,
  },
  {
    target: 'mandate-prod-1w p50 < 1 ms (1 conn)',
    figure: prod1 === undefined ? '–' : `${ms(prod1.p50)} ms`,
    met: prod1 === undefined ? undefined : prod1.p50 < 1,
  },
  {
    target: 'durable audit + revocation cost < 25% (prod-1w ≥ 0.75× embedded, 64 conn)',
    figure: x(prod64?.vsEmbedded),
    met: prod64?.vsEmbedded === undefined ? undefined : prod64.vsEmbedded >= 0.75,
  },
  {
    target: 'DPoP path ≤ 1.3× the bearer path: server CPU per token (mandate-prod-1w, 64 conn)',
    figure: dpopCost === undefined ? '–' : `${x(dpopCost)} (bearer/DPoP tokens/s ${x(dpopSpeed)})`,
    met: dpopCost === undefined ? undefined : dpopCost <= 1.3,
  },
]
const verdict = (met: boolean | undefined) => (met === undefined ? 'not measured' : met ? 'met' : 'MISSED')

const table = [
  '| server | conn | tokens/s (median) | p50 ms | p99 ms | p99.9 ms | × peer | × floor | × embedded | server CPU µs/token | non-200 + errors | rounds (tokens/s) |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ...rows.map(
    (r) =>
      `| ${r.target} | ${r.connections} | ${Math.round(r.perSecond).toLocaleString('en-US')} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p999)} | ` +
      `${x(r.vsPeer)} | ${x(r.vsFloor)} | ${x(r.vsEmbedded)} | ${r.cpu === undefined ? '–' : Math.round(r.cpu)} | ${r.nonOk} | ${r.rounds.map((n) => n.toLocaleString('en-US')).join(', ')} |`,
  ),
]
const commit = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout.trim() || 'unknown'
const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' }).stdout.trim() !== ''
const machine = {
  cores: cpus().length,
  cpu: cpus()[0]?.model ?? 'unknown',
  memory_gib: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  kernel: release(),
  load_average_before: loadBefore.map((l) => Number(l.toFixed(2))),
}

say('')
say(table.join('\n'))
say('')
for (const c of checks) say(`  ${c.target}: ${c.figure} — ${verdict(c.met)}`)
if (auditCheck !== undefined)
  say(
    `  token.issued rows in PostgreSQL: ${auditCheck.rows.toLocaleString('en-US')} for ${auditCheck.answered200.toLocaleString('en-US')} tokens answered 200 by the production brokers`,
  )
for (const [t, why] of Object.entries(skipped)) say(`  ${t}: skipped, ${why}`)
if (profile !== undefined) {
  say('')
  say(profile.text)
}

if (WRITE) {
  const json = {
    bench: 'exchange',
    date: startedAt.toISOString(),
    commit,
    dirty,
    quick,
    machine,
    settings: { rounds: ROUNDS, windows_ms: WINDOWS, agents: inputs.server.agents.length, users: inputs.generator.users.length },
    rows,
    checks: checks.map((c) => ({ ...c, verdict: verdict(c.met) })),
    audit_check: auditCheck ?? null,
    skipped,
    profile: profile?.json ?? null,
    measurements,
    failures,
  }
  writeFileSync(join(root, 'bench/results.json'), `${JSON.stringify(json, null, 2)}\n`)
  const md = [
    '# Exchange benchmark: results',
    '',
    `Written by \`npm run bench\` (bench/exchange.ts)${quick ? ' with --quick' : ''}; the raw figures are in bench/results.json. Rerun it to replace both.`,
    '',
    `- **Run:** ${startedAt.toISOString()}, commit \`${commit.slice(0, 12)}\`${dirty ? ' (with uncommitted changes)' : ''}`,
    `- **Machine:** ${machine.cores} cores (${machine.cpu}), ${machine.memory_gib} GiB, Node ${machine.node}, Linux ${machine.kernel}; load average before the run ${machine.load_average_before.join(' ')}`,
    `- **Shared:** the load generator, every server, PostgreSQL and Redis run on these same cores.`,
    `- **Method:** ${ROUNDS} rounds; in each, every server is measured at 64 then 1 connection(s) in an order rotated per round ` +
      `(warm-up ${WINDOWS[64]!.warmupMs / 1000} s + ${WINDOWS[64]!.durationMs / 1000} s counted at 64, ${WINDOWS[1]!.warmupMs / 1000} s + ${WINDOWS[1]!.durationMs / 1000} s at 1). ` +
      'Figures are medians over the rounds; a ratio is the median of the ratios taken within each round.',
    `- **Inputs:** ${inputs.server.agents.length} agents (ES256 \`private_key_jwt\`, generated policy files), ${inputs.generator.users.length} users; ` +
      'every exchange carries a fresh client assertion and a distinct RS256 subject token, so no server can reuse an earlier verification.',
    '',
    ...table,
    '',
    '## Targets',
    '',
    '| target | figure | verdict |',
    '|---|---:|---|',
    ...checks.map((c) => `| ${c.target} | ${c.figure} | ${verdict(c.met)} |`),
    '',
    ...(auditCheck !== undefined
      ? [
          `token.issued rows in PostgreSQL after the run: ${auditCheck.rows.toLocaleString('en-US')}, for ${auditCheck.answered200.toLocaleString('en-US')} tokens the production brokers answered 200 (warm-ups included).`,
          '',
        ]
      : []),
    ...Object.entries(skipped).map(([t, why]) => `- ${t}: skipped, ${why}`),
    ...(profile !== undefined ? [`## Where the CPU goes (${PROFILED}, 64 connections)`, '', profile.markdown, ''] : []),
    ...(failures.length > 0 ? ['## Failures', '', ...failures.map((f) => `- ${f}`), ''] : []),
  ]
  // The sections other benchmarks own (bench:governance) stay until those benchmarks run again.
  const kept = ownedSections(join(root, 'bench/RESULTS.md'))
  writeFileSync(join(root, 'bench/RESULTS.md'), `${md.join('\n')}\n${kept.map((k) => `\n${k}`).join('')}`)
  say('\nwrote bench/RESULTS.md and bench/results.json')
}

if (failures.length > 0) {
  say('\nFAILED:')
  for (const f of failures) say(`  - ${f}`)
  process.exit(1)
}
process.exit(0)
