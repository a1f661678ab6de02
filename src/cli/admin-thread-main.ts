/**
 * The admin thread's entry (see admin-thread.ts): composes a broker from the
 * parent's config and serves only `listen.admin_port` until its parent says
 * stop. Its failures go to the parent as messages, which reports them.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { composeMandate } from '../compose.js'
import { createLogger } from '../telemetry/log.js'
import type { AdminThreadData, AdminThreadMessage } from './admin-thread.js'
import { listenAndServe } from './serve.js'

const port = parentPort
if (port === null) throw new TypeError('admin-thread-main runs in a worker thread')
const { config, dev } = workerData as AdminThreadData
const tell = (m: AdminThreadMessage) => port.postMessage(m)
const logger = createLogger(config.log.level).child({ thread: 'admin' })

let mandate
try {
  mandate = await composeMandate(config, { dev, logger })
} catch (err) {
  tell({ type: 'fatal', message: `admin thread cannot start: ${(err as Error).message}` })
  process.exit(1)
}

const serving = listenAndServe(mandate, {
  host: config.listen.host,
  port: config.listen.port,
  adminPort: config.listen.admin_port!,
  adminOnly: true,
  limits: config.http,
  logger,
  name: 'mandate admin thread',
  signals: false,
  fatal(message) {
    tell({ type: 'fatal', message })
    process.exit(1)
  },
  onListening: () => tell({ type: 'listening' }),
})
port.on('message', (m: { type?: string }) => {
  if (m.type === 'stop') serving.shutdown('stopped by its process')
})
