/**
 * FOR BENCHMARKS ONLY. The load generator of `npm run bench`
 * (bench/exchange.ts), run as its own process so that it is measured apart
 * from the servers and signs nothing while it measures.
 *
 *   tsx bench/support/load.ts <generator.json>     (from bench/support/inputs.ts)
 *
 * stdin: one JSON command per line; stdout: one JSON answer per line.
 *
 *   {"id":…, "url":"http://127.0.0.1:…/oauth2/token", "series":"peer",
 *    "connections":64, "count":30000, "warmupMs":1000, "durationMs":5000, "dpop":false}
 *
 * For each command it first signs, before any request goes out, `count`
 * exchanges (bench/support/inputs.ts): a fresh ES256 client assertion each
 * (and with `dpop`, a DPoP proof of the agent's key each), and a subject token each, taken from an RS256 pool that is shared by the
 * series but never repeated within one (a server sees every subject token
 * once, so a cache of verified subject tokens has nothing to hit; tokens a
 * run did not send are used by the next). Then it keeps `connections`
 * keep-alive connections (undici Pool, no pipelining) busy, each posting the
 * next exchange as soon as the last one answered (a closed loop): `warmupMs`
 * uncounted, then `durationMs` counted. The window ends early, at the last
 * request sent, if the `count` exchanges run out (`exhausted`).
 *
 * The answer: 200s answered in the window per second, latency percentiles of
 * those (ms, HDR histogram, time from sending to the whole body read), and
 * every status and connection error of the whole run, warm-up included, with
 * the first few refusals' bodies. A 200 whose body has no `access_token` is
 * counted as `bad_200`.
 */
import { createHistogram } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { Pool } from 'undici'
import { z } from 'zod'
import { assertRequests, settingsFromArgv, signSubjectTokens, type GeneratorSettings, type SubjectToken } from './inputs.js'

const Command = z.strictObject({
  id: z.string(),
  url: z.url(),
  series: z.string().min(1),
  connections: z.number().int().min(1).max(1024),
  count: z.number().int().min(1).max(1_000_000),
  warmupMs: z.number().int().min(0),
  durationMs: z.number().int().min(100),
  /** Each exchange carries a DPoP proof (RFC 9449) of its agent's key. */
  dpop: z.boolean().default(false),
})
type Command = z.infer<typeof Command>

export interface LoadResult {
  readonly id: string
  readonly series: string
  readonly connections: number
  /** Exchanges sent (warm-up included) and the time it took to sign them. */
  readonly sent: number
  readonly signMs: number
  /** The counted window: its length, the 200s answered in it, and their rate. */
  readonly windowMs: number
  readonly ok: number
  readonly perSecond: number
  /** Latency of the window's 200s, ms. */
  readonly p50: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  /** Every response of the run by status (warm-up included), plus `bad_200`. */
  readonly statuses: Record<string, number>
  /** Requests that got no response (connection errors, timeouts). */
  readonly errors: number
  /** The first few refusals and errors, for the report. */
  readonly samples: readonly string[]
  /** The exchanges ran out before the window's end. */
  readonly exhausted: boolean
}

const settings = settingsFromArgv<GeneratorSettings>('bench/support/load.ts', 'generator.json')

/** Subject tokens signed so far, shared by the series; each series reads it from its own cursor. */
const subjects: SubjectToken[] = []
const cursors = new Map<string, number>()

async function subjectsFor(series: string, count: number): Promise<{ tokens: SubjectToken[]; offset: number }> {
  const offset = cursors.get(series) ?? 0
  const missing = offset + count - subjects.length
  if (missing > 0) for (const t of await signSubjectTokens(settings, missing, { offset: subjects.length })) subjects.push(t)
  return { tokens: subjects.slice(offset, offset + count), offset }
}

async function run(cmd: Command): Promise<LoadResult> {
  const signStart = performance.now()
  const { tokens, offset } = await subjectsFor(cmd.series, cmd.count)
  const requests = await assertRequests(settings, tokens, { offset, dpop: cmd.dpop })
  const signMs = performance.now() - signStart

  const url = new URL(cmd.url)
  const pool = new Pool(url.origin, { connections: cmd.connections, pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 })
  const histogram = createHistogram({ lowest: 1, highest: 60_000_000_000, figures: 3 })
  const statuses: Record<string, number> = {}
  const samples: string[] = []
  let errors = 0
  let next = 0
  let ok = 0
  let lastSentAt = 0

  const start = performance.now()
  const windowStart = start + cmd.warmupMs
  const windowEnd = windowStart + cmd.durationMs
  const counted: number[] = [] // completion times of the window's 200s, to trim if the exchanges run out

  async function connection(): Promise<void> {
    for (;;) {
      const sentAt = performance.now()
      if (sentAt >= windowEnd || next >= requests.length) return
      const { body, dpop } = requests[next++]!
      lastSentAt = sentAt
      try {
        const res = await pool.request({
          path: url.pathname,
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...(dpop === undefined ? {} : { dpop }) },
          body,
        })
        const text = await res.body.text()
        const doneAt = performance.now()
        let status = String(res.statusCode)
        if (res.statusCode === 200 && !text.includes('"access_token":"')) status = 'bad_200'
        statuses[status] = (statuses[status] ?? 0) + 1
        if (status !== '200') {
          if (samples.length < 5) samples.push(`${status} ${text.slice(0, 200)}`)
        } else if (doneAt >= windowStart && doneAt < windowEnd) {
          ok++
          counted.push(doneAt)
          histogram.record(Math.max(1, Math.round((doneAt - sentAt) * 1e6)))
        }
      } catch (err) {
        errors++
        if (samples.length < 5) samples.push(`error ${(err as Error).message}`)
      }
    }
  }
  // For an outside profiler (perf, bpftrace…) to time itself by: BENCH_LOAD_TRACE=1 prints the window's start on stderr.
  if (process.env['BENCH_LOAD_TRACE'] === '1')
    setTimeout(() => process.stderr.write(`load: window start ${cmd.series} ${cmd.connections}\n`), cmd.warmupMs).unref()
  await Promise.all(Array.from({ length: cmd.connections }, connection))
  await pool.close()

  // Out of exchanges before the end: the window ends at the last request sent, while every connection was still busy.
  const exhausted = next >= requests.length && lastSentAt < windowEnd
  const end = exhausted ? lastSentAt : windowEnd
  const inWindow = exhausted ? counted.filter((t) => t < end).length : ok
  const windowMs = Math.max(1, end - windowStart)
  cursors.set(cmd.series, offset + next)
  const ms = (p: number) => histogram.percentile(p) / 1e6
  return {
    id: cmd.id,
    series: cmd.series,
    connections: cmd.connections,
    sent: next,
    signMs: Math.round(signMs),
    windowMs: Math.round(windowMs),
    ok: inWindow,
    perSecond: (inWindow / windowMs) * 1000,
    p50: ms(50),
    p99: ms(99),
    p999: ms(99.9),
    max: histogram.max / 1e6,
    statuses,
    errors,
    samples,
    exhausted,
  }
}

// Commands run one at a time, in the order they came.
const lines = createInterface({ input: process.stdin })
let queue = Promise.resolve()
lines.on('line', (line) => {
  queue = queue.then(async () => {
    let cmd: Command
    try {
      cmd = Command.parse(JSON.parse(line))
    } catch (err) {
      process.stdout.write(`${JSON.stringify({ error: `bad command: ${(err as Error).message.slice(0, 300)}` })}\n`)
      return
    }
    try {
      process.stdout.write(`${JSON.stringify(await run(cmd))}\n`)
    } catch (err) {
      process.stdout.write(`${JSON.stringify({ id: cmd.id, error: (err as Error).message })}\n`)
    }
  })
})
lines.on('close', () => void queue.then(() => process.exit(0)))
process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
