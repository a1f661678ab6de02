import { Worker } from 'node:worker_threads'
import { instanceIdOf } from '../compose.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../telemetry/log.js'

/**
 * The admin API on a thread of its own (`listen.admin_port` with PostgreSQL
 * and Redis). A token flood keeps the process's event loop busy reading,
 * parsing and answering requests, shed ones included, and a kill needs several
 * turns of a loop (its body, the insert, the publish, the audit record): on
 * the same loop, it waits behind the flood. The thread has its own loop and
 * composes its own broker (its own database pool, Redis connections and audit
 * chain, `<instance>/admin`); a kill it records reaches this process's
 * revocation mirror through Redis, as it reaches every other instance's.
 */
export interface AdminThread {
  /** Stops it gracefully (its listener closes, its audit records are written); bounded. */
  stop(): Promise<void>
}

/** What the thread is started with (a structured clone). */
export interface AdminThreadData {
  readonly config: Config
  readonly dev: boolean
}

/** Messages from the thread. */
export type AdminThreadMessage = { readonly type: 'listening' } | { readonly type: 'fatal'; readonly message: string }

/** How long the thread has to close before it is terminated (it forces its own exit at 10 s). */
const STOP_MS = 12_000

/** The thread's entry, beside this file: compiled JavaScript, or the TypeScript sources through tsx. */
function spawnThread(data: AdminThreadData): Worker {
  const fromSources = import.meta.url.endsWith('.ts')
  const entry = new URL(fromSources ? './admin-thread-main.ts' : './admin-thread-main.js', import.meta.url)
  if (!fromSources) return new Worker(entry, { workerData: data, name: 'mandate-admin' })
  // A thread does not inherit tsx's loader hooks: it registers them before it imports the entry.
  const tsx = import.meta.resolve('tsx/esm/api')
  const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}) })`
  return new Worker(code, { eval: true, workerData: data, name: 'mandate-admin' })
}

/**
 * Starts the thread and resolves once it listens on `listen.admin_port`;
 * rejects with its reason when it cannot start (port taken, database
 * unreachable). Once started, a thread that dies takes the process down with
 * it (exit 1): an instance without its kill switch must be restarted, not
 * kept serving tokens.
 */
export function startAdminThread(config: Config, options: { dev: boolean; logger: Logger }): Promise<AdminThread> {
  const log = options.logger.child({ module: 'admin-thread' })
  const thread = spawnThread({ config: { ...config, instance_id: `${instanceIdOf(config)}/admin` }, dev: options.dev })
  let stopping = false
  let fatal: string | undefined
  const exited = new Promise<number>((resolve) => thread.once('exit', resolve))
  return new Promise((resolve, reject) => {
    let started = false
    thread.on('message', (m: AdminThreadMessage) => {
      if (m.type === 'fatal') fatal = m.message
      if (m.type !== 'listening' || started) return
      started = true
      log.info({ port: config.listen.admin_port }, 'admin API listening on a thread of its own')
      resolve({
        async stop() {
          stopping = true
          thread.postMessage({ type: 'stop' })
          const timer = setTimeout(() => void thread.terminate(), STOP_MS)
          await exited.finally(() => clearTimeout(timer))
        },
      })
    })
    thread.on('error', (err: Error) => {
      fatal ??= err.message
    })
    void exited.then((code) => {
      if (!started) {
        reject(new Error(fatal ?? `admin thread exited (${code}) before it listened`))
        return
      }
      if (stopping) return
      log.error({ code, cause: fatal }, 'admin thread died; exiting (this instance has no kill switch without it)')
      process.exit(1)
    })
  })
}
