/**
 * The agents' lifecycle (attestation, expiry warnings, dormancy, orphans) as
 * the config's `governance` section sets it: on the database's
 * `agent_lifecycle` table, or in memory for a broker brought its own logs
 * (tests). Swept at start, before the broker serves.
 */
import { createMemoryLifecycleStore, createSqlLifecycleStore } from '../audit/lifecycle-sql.js'
import { openLifecycle, type LifecycleService } from '../audit/lifecycle-service.js'
import type { AuditLog } from '../audit/port.js'
import type { Config } from '../config/schema.js'
import type { Closers } from '../core/async.js'
import type { UsageReads } from '../core/inventory.js'
import type { PolicyStore } from '../policy/port.js'
import { parseDuration } from '../policy/schema.js'
import type { Database } from '../storage/database.js'
import type { Logger } from '../telemetry/log.js'

export async function openAgentLifecycle(
  config: Config,
  d: {
    readonly database: Database | undefined
    readonly audit: AuditLog
    readonly policies: PolicyStore
    readonly usage: UsageReads | undefined
    /** Epoch seconds. */
    readonly now: () => number
    readonly pollMs: number
    readonly logger: Logger
  },
  closers: Closers,
): Promise<LifecycleService> {
  const g = config.governance
  const lifecycle = await openLifecycle({
    store: d.database === undefined ? createMemoryLifecycleStore() : createSqlLifecycleStore(d.database.db),
    audit: d.audit,
    policies: d.policies,
    usage: d.usage,
    settings: {
      // The schema admits only durations parseDuration reads.
      attestationGrace: parseDuration(g.attestation_grace)!,
      dormantAfter: parseDuration(g.dormant_after)!,
      onDormant: g.on_dormant,
      onOrphan: g.on_orphan,
    },
    ownersFile: g.owners_file,
    now: d.now,
    sweepMs: g.lifecycle_sweep_seconds * 1000,
    pollMs: d.pollMs,
    logger: d.logger.child({ module: 'lifecycle' }),
  })
  // Before the database closes: a running sweep finishes first.
  closers.add(() => lifecycle.close())
  return lifecycle
}
