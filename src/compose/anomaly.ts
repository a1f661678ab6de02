/**
 * Anomaly rules (`governance.anomalies` in the config, `anomalies` and
 * `hours` in policies): the monitor, told of every group the SQL delegation
 * log commits. Runs whenever that log does, so that the audiences each
 * agent had tokens for are recorded even before a rule needs them; with no
 * rule in force for an agent it only does that.
 */
import type { SqlAuditLog } from '../audit/sql.js'
import type { Closers } from '../core/async.js'
import type { Config } from '../config/schema.js'
import { createSqlAnomalyStore } from '../governance/anomaly-store.js'
import { createAnomalyMonitor, type AnomalyMonitor } from '../governance/anomaly-monitor.js'
import type { PolicyStore } from '../policy/port.js'
import type { RevocationService } from '../revocation/service.js'
import type { Database } from '../storage/database.js'
import type { Logger } from '../telemetry/log.js'

export interface AnomalyWiring {
  /** The SQL delegation log and its database; without them (tests bringing a log of their own) nothing runs. */
  readonly sqlAudit: SqlAuditLog | undefined
  readonly database: Database | undefined
  readonly policies: PolicyStore
  readonly revocations: RevocationService
  /** Epoch seconds. */
  readonly now: () => number
  readonly logger: Logger
}

/** Starts the monitor on the log's commits; stopped (after what it was told is acted on) before the log closes. */
export function openAnomalyMonitor(config: Config, w: AnomalyWiring, closers: Closers): AnomalyMonitor | undefined {
  if (w.sqlAudit === undefined || w.database === undefined) return undefined
  const { rules, cooldown_seconds: cooldownSeconds } = config.governance.anomalies
  const monitor = createAnomalyMonitor({
    rules,
    cooldownSeconds,
    policies: w.policies,
    store: createSqlAnomalyStore(w.database.db),
    revocations: w.revocations,
    audit: w.sqlAudit,
    now: w.now,
    logger: w.logger.child({ module: 'anomaly' }),
  })
  const stop = w.sqlAudit.observeCommits((events) => monitor.observe(events))
  closers.add(async () => {
    stop()
    await monitor.close()
  })
  return monitor
}
