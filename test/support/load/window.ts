/**
 * Load generator (see run.ts): `connections` keep-alive closed loops of
 * exchanges. Prints `go` once every connection has been answered once;
 * counts between `start` and `stop`: the 200s and their latencies (ms).
 * `statuses` covers every answer, warm-up included (`error`: no HTTP answer).
 */
import http from 'node:http'
import { printReport, readCommands } from './run.js'

export interface Settings {
  readonly url: string
  readonly authorization: string
  readonly body: string
  readonly connections: number
}

export interface Report {
  readonly statuses: Record<string, number>
  readonly counted: number
  readonly ms: number
  readonly p50: number
  readonly p99: number
}

const commands = await readCommands()
const { url, authorization, body, connections } = commands.settings as Settings
let stop = false
let counting = false
let counted = 0
let startedAt = 0
let stoppedAt = 0
const latencies: number[] = []
void (async () => {
  await commands.next()
  counted = 0
  latencies.length = 0
  startedAt = performance.now()
  counting = true
  await commands.next()
  stoppedAt = performance.now()
  counting = false
  stop = true
})()
const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
const target = new URL(url)
const statuses: Record<string, number> = {}

const once = () =>
  new Promise<void>((resolve) => {
    const t0 = performance.now()
    const req = http.request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), authorization },
      },
      (res) => {
        res.resume()
        res.on('end', () => {
          const status = res.statusCode ?? 0
          statuses[status] = (statuses[status] ?? 0) + 1
          if (counting && status === 200) {
            counted++
            latencies.push(performance.now() - t0)
          }
          resolve()
        })
      },
    )
    req.on('error', () => {
      statuses['error'] = (statuses['error'] ?? 0) + 1
      resolve()
    })
    req.end(body)
  })

let warm = 0
const loop = async () => {
  await once()
  if (++warm === connections) process.stdout.write('go\n')
  while (!stop) await once()
}
await Promise.all(Array.from({ length: connections }, loop))
latencies.sort((a, b) => a - b)
const pick = (p: number) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil(p * latencies.length) - 1))] ?? 0
printReport({ statuses, counted, ms: stoppedAt - startedAt, p50: pick(0.5), p99: pick(0.99) } satisfies Report)
