/**
 * FOR BENCHMARKS ONLY. A broker entry point for bench/audit.ts, never part of
 * Mandate itself: nothing under src/ imports it, `mandate serve` cannot reach
 * it, and it is not built into dist/. Never run it in production.
 *
 *   tsx bench/support/broker.ts --audit=sql|memory
 *
 * It starts the broker the way `mandate serve --dev` does (the same config
 * loading with the embedded dev defaults, the same composition, the same
 * @hono/node-server listener and graceful SIGTERM/SIGINT shutdown), with one
 * difference a benchmark needs and the CLI must never offer:
 *
 *   --audit=sql     the durable delegation log (PostgreSQL with DATABASE_URL,
 *                   PGlite under MANDATE_DATA_DIR otherwise), as in production;
 *   --audit=memory  the in-memory audit log instead: the reference against
 *                   which the durable log's cost is measured. The revocation
 *                   list still lives in PostgreSQL/PGlite, so the two differ
 *                   in the audit log only.
 *
 * LOG_LEVEL applies as usual, except that the audit module logs at `info` at
 * least: on shutdown, mandate.close() flushes the durable log and its
 * `audit log closed` line (records, groups, group_size) is what the benchmark
 * reads. Listens on PORT (loopback, as --dev requires).
 */
import { createMemoryAuditLog } from '../../src/audit/memory.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { loadConfig, processEnv } from '../../src/config/load.js'
import { createLogger, type Logger } from '../../src/telemetry/log.js'
import { listenAndServe } from '../../src/cli/serve.js'

const arg = process.argv.slice(2).find((a) => a.startsWith('--audit='))
const audit = arg?.slice('--audit='.length)
if (audit !== 'sql' && audit !== 'memory') {
  process.stderr.write('usage: tsx bench/support/broker.ts --audit=sql|memory   (benchmarks only)\n')
  process.exit(2)
}

const loaded = await loadConfig(undefined, processEnv(), { dev: true })
if (!loaded.ok) {
  process.stderr.write(`bench broker: invalid config: ${loaded.issues.join('; ')}\n`)
  process.exit(1)
}
const { config } = loaded

/** The root logger, whose `module: 'audit'` child logs at `info` at least (its closing stats are read by the bench). */
function benchLogger(level: string): Logger {
  const root = createLogger(level)
  const auditLevel = root.levels.values[level]! < root.levels.values['info']! ? level : 'info'
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called below with `this` (child.call)
  const child = root.child
  // Children are created from their parent's prototype chain: `this` keeps every level's bindings.
  root.child = function (this: Logger, bindings, options) {
    return child.bind(this)(bindings, bindings['module'] === 'audit' ? { ...options, level: auditLevel } : options)
  }
  return root
}
const logger = benchLogger(config.log.level)

let mandate: Mandate
try {
  mandate = await composeMandate(config, { dev: true, logger, ...(audit === 'memory' ? { audit: createMemoryAuditLog() } : {}) })
} catch (err) {
  process.stderr.write(`bench broker: cannot start: ${(err as Error).message}\n`)
  process.exit(1)
}

listenAndServe(mandate, {
  host: config.listen.host,
  port: config.listen.port,
  limits: config.http,
  logger,
  name: 'bench broker',
  onListening: () =>
    logger.info(
      { audit, host: config.listen.host, port: config.listen.port, agents: mandate.agents, storage: mandate.storage },
      'bench broker listening (benchmarks only)',
    ),
})
