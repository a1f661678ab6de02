/**
 * Where durable state lives: PostgreSQL when `storage.database_url` is set,
 * PGlite under `data_dir` otherwise; the revocation log and the delegation
 * log on it, unless the caller brought its own (tests).
 */
import { join } from 'node:path'
import { CHECKPOINT_TYP, checkpointStore, createCheckpointWriter } from '../audit/checkpoint.js'
import type { AuditLog } from '../audit/port.js'
import { createUsageReads } from '../audit/inventory.js'
import { recordsOfRequest } from '../audit/request-records.js'
import { auditRecord, delegationTree, lastKeyRotation, queryAudit } from '../audit/query.js'
import { createAuditVerifier } from '../audit/verification.js'
import type { UsageReads } from '../core/inventory.js'
import { createSqlAuditLog, type SqlAuditLog } from '../audit/sql.js'
import type { Closers } from '../core/async.js'
import type { Config } from '../config/schema.js'
import type { AuditQueries } from '../http/routes/admin-audit.js'
import { createSqlRevocationLog } from '../revocation/log-sql.js'
import type { RevocationLog } from '../revocation/port.js'
import { openDatabase, type Database } from '../storage/database.js'
import type { Logger } from '../telemetry/log.js'
import type { MandateMetrics } from '../telemetry/metrics.js'
import type { SigningKeys } from '../tokens/keys.js'
import { createJwtSigner } from '../tokens/mint.js'

export interface DurableStores {
  /** What holds them, for the startup log line (`memory`: both brought by the caller). */
  readonly engine: 'postgres' | 'pglite' | 'memory'
  readonly revocationLog: RevocationLog
  readonly audit: AuditLog
  /** The SQL delegation log, when it is the one in use: its backlog (shedding) and its probe (readiness). */
  readonly sqlAudit: SqlAuditLog | undefined
  /** Reads of the delegation log on the database, for /admin/audit; undefined without a database. */
  readonly auditQueries: AuditQueries | undefined
  /** Reads of the usage summaries the delegation log keeps, for /admin/agents; undefined without a database. */
  readonly usageReads: UsageReads | undefined
  /** The SQL database, when one was opened (SET delivery keeps its queues there). */
  readonly database: Database | undefined
  /** The `kid` of the last `key.rotated` record of the SQL delegation log; undefined when the log is not the SQL one. */
  readonly lastRecordedKid: (() => Promise<string | undefined>) | undefined
}

export interface StoreOptions {
  readonly instance: string
  /** Epoch milliseconds. */
  readonly clock: () => number
  /** Sign the delegation log's checkpoints. */
  readonly keys: SigningKeys
  readonly logger: Logger
  readonly metrics: MandateMetrics | undefined
  /** Brought by the caller instead of the database's (tests). */
  readonly revocationLog: RevocationLog | undefined
  readonly audit: AuditLog | undefined
}

/** Opens (and migrates) the database unless both logs were brought; registers every close with `closers`. */
export async function openDurableStores(config: Config, options: StoreOptions, closers: Closers): Promise<DurableStores> {
  if (options.revocationLog !== undefined && options.audit !== undefined) {
    return {
      engine: 'memory',
      revocationLog: options.revocationLog,
      audit: options.audit,
      sqlAudit: undefined,
      auditQueries: undefined,
      usageReads: undefined,
      database: undefined,
      lastRecordedKid: undefined,
    }
  }
  const database = await openDatabase(config.storage.database_url, { dataDir: config.data_dir })
  closers.add(() => database.close())
  await database.migrate()
  const verifier = createAuditVerifier(database.db, { now: () => Math.floor(options.clock() / 1000) })
  const onDatabase = {
    engine: database.engine,
    database,
    revocationLog: options.revocationLog ?? createSqlRevocationLog(database.db),
    auditQueries: {
      page: (r) => queryAudit(database.db, r),
      tree: (jti) => delegationTree(database.db, jti),
      request: (id) => recordsOfRequest(database.db, id),
      record: (id) => auditRecord(database.db, id),
      verification: () => verifier.verify(),
    } satisfies AuditQueries,
    usageReads: createUsageReads(database.db),
  }
  if (options.audit !== undefined) return { ...onDatabase, audit: options.audit, sqlAudit: undefined, lastRecordedKid: undefined }
  const sqlAudit = openSqlAuditLog(config, database, options, await checkpointStore(database))
  // Runs before the database closes: queued groups are written, then a last checkpoint.
  closers.add(() => sqlAudit.close())
  return { ...onDatabase, audit: sqlAudit, sqlAudit, lastRecordedKid: () => lastKeyRotation(database.db) }
}

function openSqlAuditLog(config: Config, database: Database, options: StoreOptions, store: string): SqlAuditLog {
  return createSqlAuditLog({
    database,
    chains: database.engine === 'postgres' ? config.audit.chains : 1,
    instance: options.instance,
    clock: options.clock,
    groupMaxRecords: config.audit.group_max_records,
    groupMaxWaitMs: config.audit.group_max_wait_ms,
    writeTimeoutMs: config.audit.write_timeout_ms,
    checkpoints: {
      writer: createCheckpointWriter({
        dir: config.audit.checkpoint_dir ?? join(config.data_dir, 'checkpoints'),
        issuer: config.issuer,
        sign: createJwtSigner(() => options.keys.current, CHECKPOINT_TYP),
        // A subdirectory per database: one checkpoint directory may serve PGlite, then PostgreSQL.
        store,
      }),
      everyRecords: config.audit.checkpoint_every_records,
      intervalMs: config.audit.checkpoint_interval_ms,
    },
    logger: options.logger.child({ module: 'audit' }),
    ...(options.metrics === undefined ? {} : { onGroup: options.metrics.auditGroup.bind(options.metrics) }),
  })
}
