/**
 * The load generators tests and benchmarks run as processes of their own,
 * so that neither their event loop nor their start-up sits between the
 * caller and the broker it loads. Each is a typed module beside this file,
 * run through tsx, and speaks one protocol:
 *
 *   stdin:  the settings (one JSON line), then `start` (only where the
 *           script counts a window), then `stop`;
 *   stdout: `go` once every connection has been answered once, then the
 *           report (one JSON line), and the process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type * as Answers from './answers.js'
import type * as Overload from './overload.js'
import type * as Statuses from './statuses.js'
import type * as Window from './window.js'

/** A load generator script, typed by the settings it reads and the report it prints. */
export interface LoadScript<Settings, Report> {
  readonly path: string
  /** Carries the types only; never set. */
  readonly types?: { readonly settings: Settings; readonly report: Report }
}

const script = <Settings, Report>(name: string): LoadScript<Settings, Report> => ({ path: fileURLToPath(new URL(`./${name}.ts`, import.meta.url)) })

export const LOAD_SCRIPTS = {
  /** Closed loops of exchanges; every answer with its time and the issued token's `jti`. */
  answers: script<Answers.Settings, Answers.Report>('answers'),
  /** Closed loops of exchanges; answers counted by status, and how many came after `go`. */
  statuses: script<Statuses.Settings, Statuses.Report>('statuses'),
  /** Keep-alive exchanges, closed loop or at a fixed arrival rate; statuses and latencies. */
  overload: script<Overload.Settings, Overload.Report>('overload'),
  /** Keep-alive closed loops; the 200s and their latencies between `start` and `stop`. */
  window: script<Window.Settings, Window.Report>('window'),
} as const

export interface LoadGenerator<Report> {
  readonly child: ChildProcess
  /** What the generator printed so far, for failure messages. */
  output(): string
  /** Resolves once it printed `go`; rejects if it exits first or after `timeoutMs`. */
  started(timeoutMs: number): Promise<void>
  /** Writes `start`: a script that counts a window begins it. */
  start(): void
  /** Writes `stop` and resolves with the report; rejects if it exits without one or after `timeoutMs`. */
  stop(timeoutMs: number): Promise<Report>
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export function startLoadGenerator<Settings, Report>(script: LoadScript<Settings, Report>, settings: Settings): LoadGenerator<Report> {
  const child = spawn(process.execPath, ['--import', 'tsx', script.path], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stdin.write(`${JSON.stringify(settings)}\n`)
  const reportLine = () => out.split('\n').find((line) => line.startsWith('{'))
  async function until(what: string, done: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!done()) {
      if (child.exitCode !== null || child.signalCode !== null) {
        // What it printed just before exiting may still be on its way.
        await sleep(50)
        if (done()) return
        throw new Error(`load generator exited (${String(child.exitCode ?? child.signalCode)}) before ${what}: ${out.slice(-2000)}`)
      }
      if (Date.now() > deadline) throw new Error(`load generator: no ${what} within ${timeoutMs} ms: ${out.slice(-2000)}`)
      await sleep(10)
    }
  }
  return {
    child,
    output: () => out,
    started: (timeoutMs) => until('go', () => out.includes('go\n'), timeoutMs),
    start: () => void child.stdin.write('start\n'),
    async stop(timeoutMs) {
      if (child.stdin.writable) child.stdin.end('stop\n')
      await until('report', () => reportLine()?.endsWith('}') === true && out.endsWith('\n'), timeoutMs)
      return JSON.parse(reportLine()!) as Report
    },
  }
}

/** For the scripts: the settings line, then each later line (undefined once stdin ends). */
export async function readCommands(): Promise<{ settings: unknown; next(): Promise<string | undefined> }> {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  const first = await lines.next()
  if (first.done === true) throw new Error('load generator: no settings on stdin')
  return {
    settings: JSON.parse(first.value) as unknown,
    next: async () => {
      const r = await lines.next()
      return r.done === true ? undefined : r.value
    },
  }
}

/** For the scripts: prints the report and exits once it is written (a pipe may still hold it). */
export function printReport(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`, () => process.exit(0))
}
