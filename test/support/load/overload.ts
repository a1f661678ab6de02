/**
 * Load generator (see run.ts), keep-alive connections: with `connections`,
 * a closed loop (each connection posts the next exchange when the last one
 * is answered); with `rate` and `maxInFlight`, an open loop (`rate`
 * exchanges a second, answered or not, at most `maxInFlight` at once; the
 * rest counted as not sent). Counts from `go` to `stop`: answers by status
 * (`error`: no HTTP answer) and their latencies (ms).
 */
import http from 'node:http'
import { printReport, readCommands } from './run.js'

interface Request {
  readonly url: string
  readonly authorization: string
  readonly body: string
  /** Default POST (a form body); GET sends no body (the URL's query is kept either way). */
  readonly method?: 'GET' | 'POST'
}
export type Settings = (Request & { readonly connections: number }) | (Request & { readonly rate: number; readonly maxInFlight: number })

export interface Report {
  readonly statuses: Record<string, number>
  readonly latency: Record<string, { p50: number; p99: number }>
  readonly notSent: number
  readonly ms: number
}

const commands = await readCommands()
const settings = commands.settings as Settings
const { url, authorization, body } = settings
const method = settings.method ?? 'POST'
let stop = false
void commands.next().then(() => (stop = true))
const agent = new http.Agent({ keepAlive: true, maxSockets: 'connections' in settings ? settings.connections : settings.maxInFlight })
const target = new URL(url)
const statuses: Record<string, number> = {}
const latencies: Record<string, number[]> = {}
let counting = false
let startedAt = 0
let inFlight = 0
let notSent = 0

const once = () =>
  new Promise<void>((resolve) => {
    const t0 = performance.now()
    inFlight++
    const done = (status: number | string) => {
      inFlight--
      if (counting) {
        statuses[status] = (statuses[status] ?? 0) + 1
        ;(latencies[status] ??= []).push(performance.now() - t0)
      }
      resolve()
    }
    const req = http.request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: `${target.pathname}${target.search}`,
        method,
        headers:
          method === 'GET'
            ? { authorization }
            : { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), authorization },
      },
      (res) => {
        res.resume()
        res.on('end', () => done(res.statusCode ?? 0))
      },
    )
    req.on('error', () => done('error'))
    req.end(method === 'GET' ? undefined : body)
  })

const go = () => {
  counting = true
  startedAt = performance.now()
  process.stdout.write('go\n')
}

if ('connections' in settings) {
  let warm = 0
  const loop = async () => {
    await once()
    if (++warm === settings.connections) go()
    while (!stop) await once()
  }
  await Promise.all(Array.from({ length: settings.connections }, loop))
} else {
  // Arrivals on a fixed schedule, caught up every millisecond: a late tick sends what it owes.
  go()
  let sent = 0
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      if (stop) {
        clearInterval(tick)
        resolve()
        return
      }
      const owed = Math.floor(((performance.now() - startedAt) / 1000) * settings.rate) - sent
      for (let i = 0; i < owed; i++) {
        sent++
        if (inFlight >= settings.maxInFlight) notSent++
        else void once()
      }
    }, 1)
  })
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 10))
}
const elapsed = performance.now() - startedAt
const pct = (xs: number[], p: number) => {
  xs.sort((a, b) => a - b)
  return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(p * xs.length) - 1))]!
}
const latency = Object.fromEntries(Object.entries(latencies).map(([k, xs]) => [k, { p50: pct(xs, 0.5), p99: pct(xs, 0.99) }]))
printReport({ statuses, latency, notSent, ms: elapsed } satisfies Report)
