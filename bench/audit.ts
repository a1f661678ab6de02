/**
 * npm run bench:audit (also in bench:all): what the durable delegation log costs. Target:
 * durable logging costs under 25% of the token endpoint's throughput, i.e.
 * exchanges/s with the log in PostgreSQL/PGlite ≥ 0.75 × with it in memory.
 *
 * A real broker (bench/support/broker.ts: `serve --dev` with the audit log
 * chosen on the command line; its own process) is driven by a load generator
 * (another process, 64 keep-alive connections, each posting the next
 * exchange as soon as the last one answers) in alternating rounds:
 * in-memory log (the reference), durable log, in-memory, durable, … Each
 * round is a fresh broker with a data directory of its own; after a warm-up,
 * the exchanges answered within a fixed window are counted. The bench prints
 * each round, the medians, and the median of the rounds' ratios durable/memory (the headline), the group
 * sizes the durable log committed (read from the broker's `audit log closed`
 * line at shutdown). Every response must be 200: anything else fails the
 * bench. The load generator shares the broker's cores (and, for PostgreSQL,
 * so does the server): the figures are for a crowded machine.
 *
 * Configurations: PostgreSQL (a database of its own created through
 * DATABASE_URL's server and dropped afterwards; skipped when unreachable),
 * then the embedded default, PGlite. In both, the reference broker keeps its
 * revocation list in the same database: the two differ in the audit log only.
 * `--quick` runs fewer, shorter rounds.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LOAD_SCRIPTS, startLoadGenerator } from '../test/support/load/run.js'
import { freePort } from '../test/support/net.js'
import { DATABASE_URL, ownBacking } from './support/backing.js'

const quick = process.argv.includes('--quick')
const ROUNDS = quick ? 2 : 5
const WARMUP_MS = quick ? 500 : 1_000
const WINDOW_MS = quick ? 2_000 : 3_000
const CONNECTIONS = 64
const TARGET_RATIO = 0.75
const root = join(dirname(fileURLToPath(import.meta.url)), '..')

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const rate = (x: number) => `${Math.round(x).toLocaleString('en-US')}/s`

type AuditMode = 'memory' | 'sql'

interface GroupSize {
  readonly mean: number
  readonly p50: number
  readonly p99: number
  readonly max: number
}

/** The broker's `audit log closed` line. */
interface Closed {
  readonly records: number
  readonly groups: number
  readonly failed_groups: number
  readonly group_size: GroupSize
  /** Milliseconds from a group's INSERT sent to its answer. */
  readonly commit_ms: GroupSize
}

interface Run {
  readonly mode: AuditMode
  readonly perSecond: number
  readonly p50: number
  readonly p99: number
  /** Every response of the run (warm-up and probe included), by status. */
  readonly statuses: Record<string, number>
  /** Exchanges answered 200 over the whole run, probe included. */
  readonly issued: number
  readonly closed: Closed | undefined
  /** Lines the broker logged at warn or above, and anything it wrote to stderr. */
  readonly complaints: readonly string[]
  readonly exitCode: number | null
  readonly killed: boolean
}

interface Broker {
  readonly base: string
  readonly child: ChildProcess
  readonly closed: () => Closed | undefined
  readonly complaints: string[]
  tail(): string
}

const LEVEL_WARN = new Set(['warn', 'error', 'fatal'])

async function startBroker(mode: AuditMode, env: Record<string, string>, dataDir: string): Promise<Broker> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/support/broker.ts'), `--audit=${mode}`], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port), MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let tail = ''
  let pending = ''
  let closed: Closed | undefined
  const complaints: string[] = []
  child.stdout.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-4096)
    pending += d.toString()
    let nl: number
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl)
      pending = pending.slice(nl + 1)
      let entry: { level?: string; msg?: string } & Partial<Closed>
      try {
        entry = JSON.parse(line) as typeof entry
      } catch {
        if (line.trim() !== '') complaints.push(`stdout: ${line.slice(0, 300)}`)
        continue
      }
      if (entry.msg === 'audit log closed') closed = entry as Closed
      else if (entry.level !== undefined && LEVEL_WARN.has(entry.level) && complaints.length < 50) complaints.push(line.slice(0, 500))
    }
  })
  child.stderr.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-4096)
    if (complaints.length < 50) complaints.push(`stderr: ${d.toString().trim().slice(0, 500)}`)
  })
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broker (${mode}) exited (${child.exitCode}): ${tail}`)
    const ok = await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    )
    if (ok) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`broker (${mode}) not ready in 60 s: ${tail}`)
    }
    await sleep(100)
  }
  return { base, child, closed: () => closed, complaints, tail: () => tail }
}

/** SIGTERM, then SIGKILL after `graceMs`; true when it had to be killed. */
async function stop(child: ChildProcess, graceMs = 5_000): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return false
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  let killed = false
  await Promise.race([
    exited,
    sleep(graceMs).then(() => {
      killed = true
      child.kill('SIGKILL')
      return exited
    }),
  ])
  return killed
}

async function runOnce(mode: AuditMode, env: Record<string, string>): Promise<Run> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mandate-bench-audit-'))
  let broker: Broker | undefined
  let load: ChildProcess | undefined
  try {
    broker = await startBroker(mode, env, dataDir)
    const userRes = await fetch(`${broker.base}/dev/users/bench-user/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"scope":"demo:read"}',
    })
    if (userRes.status !== 200) throw new Error(`dev user token: ${userRes.status} ${await userRes.text()}`)
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
    if (probe.status !== 200) throw new Error(`exchange probe (${mode}): ${probe.status} ${await probe.text()}`)
    await probe.arrayBuffer()

    // Its own process (test/support/load/window.ts), counting between `start` and `stop`.
    const gen = startLoadGenerator(LOAD_SCRIPTS.window, { url: `${broker.base}/oauth2/token`, authorization, body, connections: CONNECTIONS })
    load = gen.child
    await gen.started(20_000)
    await sleep(WARMUP_MS) // at full strength, JIT warm
    gen.start()
    await sleep(WINDOW_MS)
    const report = await gen.stop(20_000)
    await stop(gen.child)
    load = undefined

    // Graceful shutdown: the durable log writes what is queued and logs its stats.
    const killed = await stop(broker.child, 15_000)
    const b = broker
    broker = undefined
    return {
      mode,
      perSecond: report.counted / (report.ms / 1000),
      p50: report.p50,
      p99: report.p99,
      statuses: report.statuses,
      issued: (report.statuses['200'] ?? 0) + 1,
      closed: b.closed(),
      complaints: b.complaints,
      exitCode: b.child.exitCode,
      killed,
    }
  } finally {
    if (load !== undefined) await stop(load)
    if (broker !== undefined) await stop(broker.child, 15_000)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

const failures: string[] = []
const oddities: string[] = []

/** Checks one run; failures make the bench exit non-zero, oddities are reported. */
function check(label: string, round: number, run: Run): void {
  const where = `${label}, round ${round}, ${run.mode}`
  const bad = Object.entries(run.statuses).filter(([status]) => status !== '200')
  if (bad.length > 0) failures.push(`${where}: non-200 responses ${JSON.stringify(Object.fromEntries(bad))} of ${JSON.stringify(run.statuses)}`)
  if (run.killed) failures.push(`${where}: the broker did not exit within 15 s of SIGTERM (killed)`)
  else if (run.exitCode !== 0) failures.push(`${where}: the broker exited with ${String(run.exitCode)}`)
  if (run.mode === 'sql') {
    if (run.closed === undefined) failures.push(`${where}: no 'audit log closed' line at shutdown`)
    else {
      if (run.closed.failed_groups > 0) failures.push(`${where}: ${run.closed.failed_groups} audit groups failed`)
      // Every 200 is a token.issued record; the rest are policy.loaded / key.rotated at start.
      if (run.closed.records < run.issued) failures.push(`${where}: ${run.closed.records} records for ${run.issued} tokens issued`)
      else if (run.closed.records > run.issued + 20) oddities.push(`${where}: ${run.closed.records} records for ${run.issued} tokens issued`)
    }
  }
  for (const c of run.complaints) oddities.push(`${where}: ${c}`)
}

interface Summary {
  readonly label: string
  readonly memory: number
  readonly sql: number
  readonly ratio: number
  /** Tokens the durable brokers answered 200, over all rounds. */
  readonly issuedDurable: number
}

async function measure(label: string, env: Record<string, string>): Promise<Summary> {
  console.log(`\n${label}`)
  const runs: { memory: Run; sql: Run }[] = []
  for (let round = 1; round <= ROUNDS; round++) {
    const memory = await runOnce('memory', env)
    check(label, round, memory)
    const sql = await runOnce('sql', env)
    check(label, round, sql)
    runs.push({ memory, sql })
    const g = sql.closed
    console.log(
      `  round ${round}   memory ${rate(memory.perSecond).padStart(8)} (p99 ${memory.p99.toFixed(1)} ms)` +
        `   durable ${rate(sql.perSecond).padStart(8)} (p99 ${sql.p99.toFixed(1)} ms)   ratio ${(sql.perSecond / memory.perSecond).toFixed(2)}` +
        (g === undefined
          ? '   groups: no stats'
          : `   groups: ${g.groups.toLocaleString('en-US')} of mean ${g.group_size.mean.toFixed(1)}, p50 ${g.group_size.p50}, p99 ${g.group_size.p99}, max ${g.group_size.max}` +
            `; commit p50 ${g.commit_ms.p50.toFixed(1)} ms`),
    )
    const bad = [memory, sql].filter((r) => Object.keys(r.statuses).some((s) => s !== '200'))
    for (const r of bad) console.log(`    ${r.mode}: NON-200 RESPONSES ${JSON.stringify(r.statuses)}`)
  }
  const memory = median(runs.map((r) => r.memory.perSecond))
  const sql = median(runs.map((r) => r.sql.perSecond))
  // The headline is the median of the rounds' ratios: each pairs two runs a few seconds apart, so a
  // burst of other work on these shared cores moves one round's ratio, not the result.
  const ratios = runs.map((r) => r.sql.perSecond / r.memory.perSecond)
  const ratio = median(ratios)
  const closed = runs.map((r) => r.sql.closed).filter((c): c is Closed => c !== undefined)
  const groups = closed.reduce((a, c) => a + c.groups, 0)
  const records = closed.reduce((a, c) => a + c.records, 0)
  const responses = runs.flatMap((r) => [r.memory, r.sql]).reduce((a, r) => a + Object.values(r.statuses).reduce((x, y) => x + y, 0), 0)
  const non200 = runs.flatMap((r) => [r.memory, r.sql]).reduce((a, r) => a + Object.entries(r.statuses).reduce((x, [s, n]) => x + (s === '200' ? 0 : n), 0), 0)
  console.log(
    `  median   memory ${rate(memory).padStart(8)}${' '.repeat(15)}durable ${rate(sql).padStart(8)}${' '.repeat(15)}` +
      `ratio ${ratio.toFixed(2)}: the median of the per-round ratios ${ratios.map((r) => r.toFixed(2)).join(', ')} (ratio of the medians: ${(sql / memory).toFixed(2)})`,
  )
  if (closed.length > 0) {
    console.log(
      `  durable log: ${records.toLocaleString('en-US')} records in ${groups.toLocaleString('en-US')} group commits ` +
        `(mean ${(records / groups).toFixed(1)} per group over all rounds; per round p50 ${closed.map((c) => c.group_size.p50).join('/')}, ` +
        `p99 ${closed.map((c) => c.group_size.p99).join('/')}, max ${closed.map((c) => c.group_size.max).join('/')})`,
    )
  }
  console.log(
    `  responses: ${responses.toLocaleString('en-US')}, non-200: ${non200}; ` +
      `target durable/memory ≥ ${TARGET_RATIO} (durable logging costs < ${Math.round((1 - TARGET_RATIO) * 100)}% of throughput): ` +
      `${ratio >= TARGET_RATIO ? 'met' : 'MISSED'} (costs ${Math.round((1 - ratio) * 100)}%)`,
  )
  return { label, memory, sql, ratio, issuedDurable: runs.reduce((a, r) => a + r.sql.issued, 0) }
}

console.log(
  `\nThe durable delegation log's cost: exchanges/s at ${CONNECTIONS} keep-alive connections, in-memory audit log vs durable ` +
    `(${cpus().length} cores, Node ${process.version}; ${ROUNDS} alternating rounds each, ${WARMUP_MS / 1000} s warm-up + ${WINDOW_MS / 1000} s counted${quick ? ', --quick' : ''})` +
    `\nload average before the start: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} (other work on these cores skews both sides)`,
)
const summaries: Summary[] = []
let databaseChecked = false
const backing = await ownBacking({ redis: false })
if (typeof backing === 'string') {
  console.log(`\nPostgreSQL: skipped (${backing})`)
} else {
  try {
    const summary = await measure(`PostgreSQL (database ${backing.databaseName} on ${new URL(DATABASE_URL).host}, dropped afterwards)`, { ...backing.env })
    summaries.push(summary)
    // Every token answered 200 by a durable broker must be in the table, committed.
    const rows = await backing.issuedRows()
    console.log(
      `  token.issued rows in the database after all rounds: ${rows.toLocaleString('en-US')} ` +
        `(tokens answered 200 by the durable brokers: ${summary.issuedDurable.toLocaleString('en-US')})`,
    )
    if (rows !== summary.issuedDurable) failures.push(`PostgreSQL: ${rows} token.issued rows for ${summary.issuedDurable} tokens answered 200`)
    databaseChecked = true
  } finally {
    await backing.cleanup()
  }
}
summaries.push(await measure('Embedded default (PGlite, temp data dir)', {}))

console.log(`\nSummary (target: durable/memory ≥ ${TARGET_RATIO}):`)
for (const s of summaries) {
  console.log(
    `  ${s.label.split(' (')[0]!.padEnd(18)} memory ${rate(s.memory).padStart(8)}   durable ${rate(s.sql).padStart(8)}   ratio ${s.ratio.toFixed(2)}   ${s.ratio >= TARGET_RATIO ? 'met' : 'MISSED'}`,
  )
}
if (!databaseChecked && typeof backing !== 'string') oddities.push('PostgreSQL: the audit_log row count could not be read')
if (oddities.length > 0) {
  console.log(`\nBroker warnings and oddities (${oddities.length}):`)
  for (const o of oddities.slice(0, 30)) console.log(`  ${o}`)
  if (oddities.length > 30) console.log(`  … and ${oddities.length - 30} more`)
}
if (failures.length > 0) {
  console.error(`\nFAILED (${failures.length}):`)
  for (const f of failures) console.error(`  ${f}`)
  process.exit(1)
}
