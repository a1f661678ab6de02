/**
 * The durable delegation log on PostgreSQL or PGlite, with group commit.
 *
 * Each process writes its own hash chain (a fresh `chain_id` per start), so
 * instances never coordinate and never read a head on the hot path: the
 * chain's head lives in this writer. Records are grouped: while one group's
 * INSERT is in flight the next one gathers, and it leaves as one multi-row
 * INSERT (one statement, so all of it commits or none) as soon as the first
 * is answered. A group holds at most `groupMaxRecords`; a record waits at
 * most `groupMaxWaitMs` (0: until the end of the current event-loop turn)
 * plus the group in flight before its group is sent. `append` resolves
 * only once the record's group is committed.
 *
 * Failures: a statement the server refused committed nothing. Its records
 * are then sent one INSERT each, in order, each chained to the head as it
 * then stands, so that a record refused for its own values (a NUL the edge
 * should have stopped) fails alone: only its caller gets
 * `AuditUnavailable('not_written')`. When the server refuses every write
 * (disk full), the first single INSERT shows it and every caller gets that.
 * A lost answer (connection cut, timeout) may have committed: the callers
 * get `AuditUnavailable('unknown')` and, before writing anything else, the
 * writer reads its chain's head to find out. If the group did commit, its
 * `token.issued` records are followed by `token.withheld` records (those
 * tokens were never answered), so the log always tells which tokens left
 * the broker.
 *
 * This module spreads appends over the chains and answers for them all; one
 * chain's writer is chain-writer.ts, settling a lost answer unconfirmed.ts,
 * the INSERT group-insert.ts, the record's encoding record.ts, the reads
 * query.ts.
 */
import type { Logger } from '../telemetry/log.js'
import { withTimeout } from '../core/async.js'
import { databaseTimeout, type Database } from '../storage/database.js'
import type { CheckpointWriter } from './checkpoint.js'
import { createChainWriter, sizeSummary, type ChainWriter } from './chain-writer.js'
import type { AuditEvent, AuditEventType, AuditLog } from './port.js'

export interface SqlAuditLogOptions {
  readonly database: Database
  /**
   * Hash chains this process writes in parallel, each with one group in
   * flight (default 1). On PostgreSQL several let the server flush several
   * groups' commits at once; PGlite runs one query at a time, so 1.
   */
  readonly chains?: number
  /** Names this process in every record (`instance`). */
  readonly instance: string
  /** Epoch milliseconds. */
  readonly clock: () => number
  readonly groupMaxRecords: number
  readonly groupMaxWaitMs: number
  /** Longest a group's INSERT may take before its callers are answered 503. */
  readonly writeTimeoutMs: number
  readonly checkpoints?: {
    readonly writer: CheckpointWriter
    readonly everyRecords: number
    readonly intervalMs: number
  }
  readonly logger: Logger
  /**
   * Told of every group this writer sent: its records, the seconds from the
   * INSERT sent to its answer, and whether it committed (metrics hang here).
   * Must not throw.
   */
  readonly onGroup?: (records: number, seconds: number, committed: boolean) => void
  /** Told of the events of every group once committed; set by `observeCommits` (anomaly rules hang here). Must not throw. */
  readonly onCommitted?: (events: readonly AuditEvent[]) => void
}

export interface AuditStats {
  readonly chainId: string
  readonly records: number
  readonly groups: number
  readonly failedGroups: number
  /** Group sizes: mean, median, 99th percentile and largest, over the most recent 10,000 groups. */
  readonly groupSize: { readonly mean: number; readonly p50: number; readonly p99: number; readonly max: number }
  /** Milliseconds from a group's INSERT sent to its answer, same window: mean, median, 99th percentile, longest. */
  readonly commitMs: { readonly mean: number; readonly p50: number; readonly p99: number; readonly max: number }
  readonly lastCheckpointSeq: number
}

export interface SqlAuditLog extends AuditLog {
  /** The (first) chain this process writes. */
  readonly chainId: () => string
  /** Every chain this process writes. */
  readonly chainIds: () => string[]
  /** False from a failed write until the next successful one. */
  healthy(): boolean
  /** Records appended and not yet answered (queued, or in the group being written), over every chain. */
  pending(): number
  /**
   * For /readyz: true when healthy; after a failure, true again once the
   * database answers (the next write settles whatever was left unconfirmed),
   * so that an idle instance out of rotation can come back.
   */
  probe(): Promise<boolean>
  stats(): AuditStats
  /**
   * Calls `listener` with each record of one of `types` this process appends,
   * once its group is committed (webhook notifications wake on it), through
   * `observeCommits`: the same rules. Returns the unsubscribe.
   */
  onDurable(types: readonly AuditEventType[], listener: (event: AuditEvent) => void): () => void
  /**
   * Calls `listener` with the events of every group once it is committed,
   * synchronously in the writer's loop: it must be quick and must not
   * throw (a throw is swallowed). Returns the unsubscribe function.
   */
  observeCommits(listener: (events: readonly AuditEvent[]) => void): () => void
  /** Writes what is queued, a last checkpoint, and stops; later appends are refused. */
  close(): Promise<void>
}

/** Readiness pings the database at most this often (an idle log writes nothing that would notice it gone). */
const PING_EVERY_MS = 5_000
/** And this often while the last ping failed, so that readiness returns soon after the database does. */
const PING_RETRY_MS = 200
const PING_TIMEOUT_MS = 2_000

/**
 * The durable log. With `chains` > 1, appends go to the chain that is
 * gathering a group, else to an idle one, else to the shortest queue.
 */
export function createSqlAuditLog(options: SqlAuditLogOptions): SqlAuditLog {
  const n = Math.max(1, Math.min(16, options.chains ?? 1))
  const listeners = new Set<(events: readonly AuditEvent[]) => void>()
  const onCommitted = (events: readonly AuditEvent[]) => {
    options.onCommitted?.(events)
    for (const l of listeners) l(events)
  }
  const writers = Array.from({ length: n }, () => createChainWriter({ ...options, onCommitted }))
  const pick = (): ChainWriter => {
    let best = writers[0]!
    for (const w of writers) {
      if (!w.writing() && w.queued() > 0) return w // gathering: join its group
    }
    for (const w of writers) {
      if (!w.writing() && w.queued() === 0) return w
      if (w.queued() < best.queued()) best = w
    }
    return best
  }
  // The database answered at start (it was just migrated).
  const ping = { ok: true, at: performance.now(), running: false }
  const refreshPing = () => {
    if (ping.running) return
    ping.running = true
    withTimeout(options.database.ping(), PING_TIMEOUT_MS, databaseTimeout(PING_TIMEOUT_MS))
      .then(
        () => void (ping.ok = true),
        () => void (ping.ok = false),
      )
      .finally(() => {
        ping.at = performance.now()
        ping.running = false
      })
  }
  // Listeners by event type: empty unless webhooks want governance records, so an append pays one lookup.
  const log: SqlAuditLog = {
    chainId: () => writers[0]!.chainId(),
    chainIds: () => writers.map((w) => w.chainId()),
    append: (event) => pick().append(event),
    // Governance records reach their listeners through the commit observers: one hook on the writer, none on append.
    onDurable: (types, listener) =>
      log.observeCommits((events) => {
        for (const e of events) if (types.includes(e.type)) listener(e)
      }),
    observeCommits: (listener) => {
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    healthy: () => writers.every((w) => w.healthy()),
    pending: () => {
      let n = 0
      for (const w of writers) n += w.pending()
      return n
    },
    probe: async () => {
      const chainsOk = (await Promise.all(writers.map((w) => w.probe()))).every(Boolean)
      // An idle writer would learn that the database is gone only at its next write: readiness
      // also pings it, in the background, at most every PING_EVERY_MS (PING_RETRY_MS while it is
      // gone), and answers from the last ping.
      if (performance.now() - ping.at > (ping.ok ? PING_EVERY_MS : PING_RETRY_MS)) refreshPing()
      return chainsOk && ping.ok
    },
    stats: () => {
      const each = writers.map((w) => w.stats())
      const sorted = writers.flatMap((w) => w.groupSizes()).sort((a, b) => a - b)
      return {
        chainId: each[0]!.chainId,
        records: each.reduce((a, s) => a + s.records, 0),
        groups: each.reduce((a, s) => a + s.groups, 0),
        failedGroups: each.reduce((a, s) => a + s.failedGroups, 0),
        groupSize: sizeSummary(sorted),
        commitMs: sizeSummary(writers.flatMap((w) => w.commitTimes()).sort((a, b) => a - b)),
        lastCheckpointSeq: Math.min(...each.map((s) => s.lastCheckpointSeq)),
      }
    },
    close: async () => {
      await Promise.all(writers.map((w) => w.close()))
      const s = log.stats()
      options.logger.info(
        {
          chains: log.chainIds(),
          records: s.records,
          groups: s.groups,
          failed_groups: s.failedGroups,
          group_size: s.groupSize,
          commit_ms: s.commitMs,
          checkpoint_seq: s.lastCheckpointSeq,
        },
        'audit log closed',
      )
    },
  }
  return log
}
