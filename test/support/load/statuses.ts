/**
 * Load generator (see run.ts): `loops` concurrent closed loops of exchanges,
 * until `stop` or `maxMs`. Reports the answers by status (0: no HTTP
 * answer), and how many came between `go` and the end, over how long.
 */
import { printReport, readCommands } from './run.js'

export interface Settings {
  readonly url: string
  readonly authorization: string
  readonly body: string
  readonly loops: number
  readonly maxMs: number
}

export interface Report {
  readonly statuses: Record<string, number>
  readonly afterGo: number
  readonly ms: number
}

const commands = await readCommands()
const { url, authorization, body, loops, maxMs } = commands.settings as Settings
let stop = false
void commands.next().then(() => (stop = true))
setTimeout(() => (stop = true), maxMs).unref()
const statuses: Record<string, number> = {}
let warm = 0
let goAt = 0
let afterGo = 0

async function once(): Promise<void> {
  let status = 0
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization }, body })
    await res.arrayBuffer()
    status = res.status
  } catch {
    // no answer: status 0
  }
  statuses[status] = (statuses[status] ?? 0) + 1
  if (goAt > 0) afterGo++
}

async function loop(): Promise<void> {
  await once()
  if (++warm === loops) {
    goAt = performance.now()
    process.stdout.write('go\n')
  }
  while (!stop) await once()
}

await Promise.all(Array.from({ length: loops }, loop))
printReport({ statuses, afterGo, ms: performance.now() - goAt } satisfies Report)
