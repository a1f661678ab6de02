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
 * Over 400 lines because the group commit, its recovery after a lost answer
 * and the checkpoints share one chain writer's state; the record's encoding
 * lives in record.ts, the queries in query.ts.
 */
import { randomUUID } from 'node:crypto'
import { desc, eq } from 'drizzle-orm'
import type { Logger } from '../telemetry/log.js'
import { withTimeout } from '../core/async.js'
import { codeOf, databaseTimeout, serverError, type Database, type Db } from '../storage/database.js'
import { auditLog } from '../storage/schema.js'
import type { CheckpointWriter } from './checkpoint.js'
import { AuditUnavailable, type AuditEvent, type AuditLog, type AuditReceipt } from './port.js'
import { encodeRecord, GENESIS_HASH, type EncodedRecord } from './record.js'

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
  /** Writes what is queued, a last checkpoint, and stops; later appends are refused. */
  close(): Promise<void>
}

interface Pending {
  readonly event: AuditEvent
  readonly resolve: (receipt: AuditReceipt) => void
  readonly reject: (err: unknown) => void
}

/** A record of a group: a caller's, or one the writer owes the log (no caller). */
interface Item {
  readonly event: AuditEvent
  readonly pending?: Pending
}

const SIZES_KEPT = 10_000
const noop = () => {}
/** Readiness pings the database at most this often (an idle log writes nothing that would notice it gone). */
const PING_EVERY_MS = 5_000
/** And this often while the last ping failed, so that readiness returns soon after the database does. */
const PING_RETRY_MS = 200
const PING_TIMEOUT_MS = 2_000

/** One chain's writer, and what the dispatcher needs to know of it. */
interface ChainWriter extends SqlAuditLog {
  /** Records queued and not yet sent. */
  queued(): number
  /** A group is being written. */
  writing(): boolean
  /** Sizes of the most recent groups. */
  groupSizes(): readonly number[]
  /** Commit times of the most recent groups, in ms. */
  commitTimes(): readonly number[]
}

/**
 * The durable log. With `chains` > 1, appends go to the chain that is
 * gathering a group, else to an idle one, else to the shortest queue.
 */
export function createSqlAuditLog(options: SqlAuditLogOptions): SqlAuditLog {
  const n = Math.max(1, Math.min(16, options.chains ?? 1))
  const writers = Array.from({ length: n }, () => createChainWriter(options))
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
  const log: SqlAuditLog = {
    chainId: () => writers[0]!.chainId(),
    chainIds: () => writers.map((w) => w.chainId()),
    append: (event) => pick().append(event),
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

/**
 * The server refused the statement: nothing of it committed. A unique
 * violation is not counted as one: a late commit of an unconfirmed group can
 * hold those seqs, so whether it committed is unknown.
 */
function serverRefused(err: unknown): boolean {
  return serverError(err) !== undefined && codeOf(err) !== '23505'
}

/**
 * Refused for a value the statement carried (SQLSTATE class 22, data
 * exception, such as 22021 for a NUL in text; or class 23, integrity
 * constraint), rather than because the server takes no write at all (disk
 * full, read-only, no privilege, a statement timeout).
 */
function refusedForItsData(err: unknown): boolean {
  if (err instanceof UnencodableRecord) return true
  const code = codeOf(err)
  return serverRefused(err) && (code.startsWith('22') || code.startsWith('23'))
}

/**
 * A record the writer cannot encode (a value no record holds, such as a
 * time that is not whole seconds): refused before anything is sent, and
 * its caller's failure alone, as a value the server refuses is.
 */
class UnencodableRecord extends AuditUnavailable {}

function sizeSummary(sorted: readonly number[]): AuditStats['groupSize'] {
  const pick = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0
  return {
    mean: sorted.length === 0 ? 0 : sorted.reduce((a, b) => a + b, 0) / sorted.length,
    p50: pick(0.5),
    p99: pick(0.99),
    max: sorted.at(-1) ?? 0,
  }
}

function createChainWriter(options: SqlAuditLogOptions): ChainWriter {
  // Long, not split: one chain's head, queue and group in flight are shared by every inner function, each of them short.
  const { database, instance, logger } = options
  const db = database.db
  const groupMax = Math.max(1, options.groupMaxRecords)

  let chainId = randomUUID()
  let head = { seq: 0, hash: GENESIS_HASH }
  let queue: Pending[] = []
  /** Records of the group being written. */
  let sending = 0
  let running: Promise<void> | undefined
  let cancelScheduled: (() => void) | undefined
  let closing = false
  let healthy = true
  /** The last group whose commit was not confirmed, with its events. */
  let unconfirmed: { rows: EncodedRecord[]; events: AuditEvent[]; done: Promise<void>; waitUntil: number } | undefined
  /**
   * Records the writer owes the log (token.withheld for an issuance answered
   * 503 that committed after all): they lead every group until one commits.
   */
  let owed: AuditEvent[] = []

  let records = 0
  let groups = 0
  let failedGroups = 0
  const sizes: number[] = []
  const commits: number[] = []

  let checkpointed = { seq: 0, at: options.clock() }
  let checkpointing: Promise<void> | undefined
  /**
   * The chain has no checkpoint yet: one is written as soon as its first
   * records commit, not at the cadence, so that a process killed in its
   * first seconds still leaves its chain covered (deleting it shows).
   */
  let firstCheckpointDue = true
  const interval =
    options.checkpoints === undefined ? undefined : setInterval(() => void checkpoint(), Math.max(100, Math.min(options.checkpoints.intervalMs, 60_000)))
  interval?.unref()

  function schedule(): void {
    if (running !== undefined) return // the running loop takes what is queued
    if (queue.length >= groupMax) {
      cancelScheduled?.()
      start()
      return
    }
    if (cancelScheduled !== undefined) return
    if (options.groupMaxWaitMs > 0) {
      const t = setTimeout(start, options.groupMaxWaitMs)
      cancelScheduled = () => clearTimeout(t)
    } else {
      // The end of this loop turn: requests read in the same turn share a group.
      const i = setImmediate(start)
      cancelScheduled = () => clearImmediate(i)
    }
  }

  function start(): void {
    cancelScheduled = undefined
    if (running === undefined) running = run()
  }

  async function run(): Promise<void> {
    await Promise.resolve() // `running` is set before this loop can end
    try {
      while (queue.length > 0) {
        const group = queue.length <= groupMax ? queue : queue.slice(0, groupMax)
        queue = queue.length <= groupMax ? [] : queue.slice(groupMax)
        sending = group.length
        await writeGroup(group)
        sending = 0
      }
    } finally {
      sending = 0
      running = undefined
    }
  }

  /** The observer's failure is its own: a committed group is never reported as failed because of it. */
  function observeGroup(records: number, seconds: number, committed: boolean): void {
    if (options.onGroup === undefined) return
    try {
      options.onGroup(records, seconds, committed)
    } catch {
      // metrics only
    }
  }

  async function writeGroup(group: Pending[]): Promise<void> {
    try {
      if (unconfirmed !== undefined) await settleUnconfirmed()
      const items: Item[] = [...owed.map((event) => ({ event })), ...group.map((p) => ({ event: p.event, pending: p }))]
      if (items.length === 0) return
      let rows: EncodedRecord[]
      try {
        rows = await insertRecords(items.map((it) => it.event))
      } catch (err) {
        // Refused: nothing of the group committed, and the refusal may be one record's alone.
        if (items.length > 1 && (serverRefused(err) || err instanceof UnencodableRecord)) return await writeEach(items)
        if (refusedForItsData(err)) return refuseRecord(items[0]!, err)
        throw err
      }
      owed = []
      items.forEach((it, i) => it.pending?.resolve({ seq: rows[i]!.seq }))
      checkpointIfDue()
    } catch (err) {
      // A failed INSERT was counted where it failed; this is a group that could not even be sent.
      if (!(err instanceof AuditUnavailable)) failedGroups++
      refuseGroup(group, err)
    }
  }

  /**
   * Encodes `events` at the chain's head and sends them as one INSERT. On
   * commit the head moves past them and their rows are returned. Otherwise
   * throws `AuditUnavailable`; when the answer was lost, the rows are left
   * unconfirmed for the next write to settle.
   */
  async function insertRecords(events: readonly AuditEvent[]): Promise<EncodedRecord[]> {
    let { seq, hash } = head
    let rows: EncodedRecord[]
    try {
      rows = events.map((event) => {
        const r = encodeRecord(event, { chainId, seq: ++seq, instance, prevHash: hash })
        hash = r.hash
        return r
      })
    } catch (err) {
      throw new UnencodableRecord(`audit record cannot be encoded (${(err as Error).message})`, 'not_written', { cause: err })
    }
    const sent = performance.now()
    const insert = database.statement(INSERT_GROUP, groupParams(rows))
    try {
      await withTimeout(insert, options.writeTimeoutMs, databaseTimeout(options.writeTimeoutMs))
    } catch (err) {
      failedGroups++
      observeGroup(rows.length, (performance.now() - sent) / 1000, false)
      const refused = serverRefused(err)
      if (!refused) unconfirmed = { rows, events: [...events], done: insert.then(noop, noop), waitUntil: performance.now() + options.writeTimeoutMs }
      throw new AuditUnavailable(
        refused ? `audit log refused the write (${codeOf(err)})` : `audit log write unconfirmed (${codeOf(err)})`,
        refused ? 'not_written' : 'unknown',
        { cause: err },
      )
    }
    head = { seq, hash }
    healthy = true
    records += rows.length
    groups++
    if (sizes.length >= SIZES_KEPT) sizes.splice(0, SIZES_KEPT / 2)
    sizes.push(rows.length)
    if (commits.length >= SIZES_KEPT) commits.splice(0, SIZES_KEPT / 2)
    const ms = performance.now() - sent
    commits.push(Math.round(ms * 100) / 100)
    observeGroup(rows.length, ms / 1000, true)
    return rows
  }

  /**
   * After the server refused a whole group: its records one INSERT each, in
   * order, each encoded at the head as it then stands (the records after a
   * refused one take its seq), so that a record refused for its own values
   * fails alone, and only its caller is told. At the first failure of any
   * other kind the rest would only fail alike: they are refused with it.
   */
  async function writeEach(items: readonly Item[]): Promise<void> {
    for (const [i, item] of items.entries()) {
      try {
        const [row] = await insertRecords([item.event])
        if (item.pending === undefined) owed = owed.filter((e) => e !== item.event)
        else item.pending.resolve({ seq: row!.seq })
      } catch (err) {
        if (!refusedForItsData(err)) {
          const rest = items.slice(i + 1).flatMap((it) => it.pending ?? [])
          refuseGroup(item.pending === undefined ? [] : [item.pending], err, rest)
          return
        }
        refuseRecord(item, err)
      }
    }
    checkpointIfDue()
  }

  /** A record the server refused for its values: its caller alone is told; the log stays healthy. */
  function refuseRecord(item: Item, err: unknown): void {
    // An owed record stays owed: the next group carries it again.
    logger.warn({ chain: chainId, event: item.event.type, code: codeOf(err) }, 'audit record refused by the database')
    item.pending?.reject(err)
  }

  /**
   * Refuses `group` with `err`, and `notSent` (never sent) as not written.
   * When the database is unreachable or its answer was lost, what is queued
   * behind would only wait for the same failure, one group at a time: it is
   * refused now too, and the next append tries again.
   */
  function refuseGroup(group: readonly Pending[], err: unknown, notSent: readonly Pending[] = []): void {
    healthy = false
    const failure = err instanceof AuditUnavailable ? err : new AuditUnavailable(`audit log unavailable (${codeOf(err)})`, 'not_written', { cause: err })
    const doomed = [...notSent, ...(failure.outcome === 'unknown' || serverError(err) === undefined ? queue.splice(0) : [])]
    logger.warn({ chain: chainId, records: group.length + doomed.length, outcome: failure.outcome, code: codeOf(err) }, 'audit group not written')
    for (const p of group) p.reject(failure)
    const unsent = new AuditUnavailable(`audit log unavailable (${codeOf(err)})`, 'not_written', { cause: err })
    for (const p of doomed) p.reject(unsent)
  }

  function checkpointIfDue(): void {
    if (options.checkpoints === undefined) return
    if (firstCheckpointDue || head.seq - checkpointed.seq >= options.checkpoints.everyRecords) void checkpoint()
  }

  /**
   * Finds out whether the unconfirmed group committed (its last record is the
   * chain's head) and moves the head accordingly. If it did, what it owed is
   * written, and a `token.withheld` is owed for each token whose issuance
   * committed but was answered 503. Throws (the new group is not written)
   * while the database cannot answer; the group stays unconfirmed.
   */
  async function settleUnconfirmed(): Promise<void> {
    const pending = unconfirmed!
    // A timed-out INSERT may still be running, and commit after the head is read: wait a while for its
    // end first (at most one more write timeout; meanwhile groups fail 503). The wait is for the
    // accounting only: were it to commit later, UNIQUE (chain_id, seq) refuses it once a later group
    // holds its seqs, or the head read below moves onto it, so the chain never forks. It is short
    // because a query can hang past any answer: postgres.js has left one pending for good when the
    // connection was reset as it was sent, which held the whole log at 503 while it was awaited.
    const left = pending.waitUntil - performance.now()
    if (left > 0) {
      const ms = Math.min(left, options.writeTimeoutMs)
      await withTimeout(pending.done, ms, databaseTimeout(ms))
    }
    const [last] = await withTimeout(
      db.select({ seq: auditLog.seq, hash: auditLog.hash }).from(auditLog).where(eq(auditLog.chainId, chainId)).orderBy(desc(auditLog.seq)).limit(1),
      options.writeTimeoutMs,
      databaseTimeout(options.writeTimeoutMs),
    )
    unconfirmed = undefined
    const lastRow = pending.rows.at(-1)!
    if (last !== undefined && last.seq === lastRow.seq && last.hash === lastRow.hash) {
      head = { seq: last.seq, hash: last.hash }
      records += pending.rows.length
      const at = Math.floor(options.clock() / 1000)
      // What it carried of the records owed is written now; each token it issued is owed a token.withheld.
      owed = [
        ...owed.filter((e) => !pending.events.includes(e)),
        ...pending.events.flatMap((e): AuditEvent[] =>
          e.type === 'token.issued'
            ? [
                {
                  type: 'token.withheld',
                  at,
                  agent: e.agent,
                  sub: e.sub,
                  subIssuer: e.subIssuer,
                  jti: e.jti,
                  reason: 'issuance committed but the response was 503: the token never left the broker',
                },
              ]
            : [],
        ),
      ]
      logger.warn(
        { chain: chainId, records: pending.rows.length, withheld: owed.length },
        'an unconfirmed audit group had committed; recording its tokens as withheld',
      )
      return
    }
    const unchanged = last === undefined ? head.seq === 0 : last.seq === head.seq && last.hash === head.hash
    if (!unchanged) {
      // Someone else wrote to this chain, or a late commit raced the check: never fork it.
      const previous = chainId
      chainId = randomUUID()
      head = { seq: 0, hash: GENESIS_HASH }
      checkpointed = { seq: 0, at: options.clock() }
      firstCheckpointDue = true
      logger.error(
        { previous_chain: previous, chain: chainId, owed: owed.length },
        'audit chain head is not where this writer left it; continuing on a new chain',
      )
    }
  }

  async function checkpoint(): Promise<void> {
    const cp = options.checkpoints
    if (cp === undefined) return
    if (checkpointing !== undefined) return checkpointing
    const at = { ...head, chain: chainId }
    if (at.seq === 0 || at.seq === checkpointed.seq) return
    firstCheckpointDue = false
    checkpointing = (async () => {
      try {
        const jws = await cp.writer.write({ chain: at.chain, instance, seq: at.seq, head: at.hash, at: Math.floor(options.clock() / 1000) })
        if (at.chain === chainId) checkpointed = { seq: at.seq, at: options.clock() }
        logger.info({ chain: at.chain, seq: at.seq, head: at.hash, checkpoint: jws }, 'audit checkpoint')
      } catch (err) {
        logger.error({ chain: at.chain, seq: at.seq, code: codeOf(err) }, 'audit checkpoint not written')
      } finally {
        checkpointing = undefined
        // This one was for a chain left since: the new chain's first is due now.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by another callback while this awaits; TypeScript keeps the narrowing from before the await
        if (firstCheckpointDue) void checkpoint()
      }
    })()
    return checkpointing
  }

  return {
    chainId: () => chainId,
    chainIds: () => [chainId],
    queued: () => queue.length,
    writing: () => running !== undefined,
    groupSizes: () => sizes,
    commitTimes: () => commits,
    append(event) {
      if (closing) return Promise.reject(new AuditUnavailable('audit log is closing', 'not_written'))
      return new Promise<AuditReceipt>((resolve, reject) => {
        queue.push({ event, resolve, reject })
        schedule()
      })
    },
    healthy: () => healthy,
    pending: () => queue.length + sending,
    async probe() {
      if (healthy) return true
      try {
        await withTimeout(database.ping(), options.writeTimeoutMs, databaseTimeout(options.writeTimeoutMs))
        healthy = true
      } catch {
        // still down
      }
      return healthy
    },
    stats() {
      return {
        chainId,
        records,
        groups,
        failedGroups,
        groupSize: sizeSummary([...sizes].sort((a, b) => a - b)),
        commitMs: sizeSummary([...commits].sort((a, b) => a - b)),
        lastCheckpointSeq: checkpointed.seq,
      }
    },
    async close() {
      if (closing) return
      closing = true
      if (interval !== undefined) clearInterval(interval)
      cancelScheduled?.()
      cancelScheduled = undefined
      if (running === undefined && queue.length > 0) running = run()
      await running?.catch(noop)
      // What the log still owes (withheld tokens, an unconfirmed group to settle): one last try.
      if (owed.length > 0 || unconfirmed !== undefined) await writeGroup([])
      await checkpointing
      await checkpoint()
      const s = this.stats()
      logger.debug(
        { chain: chainId, records: s.records, groups: s.groups, failed_groups: s.failedGroups, group_size: s.groupSize, checkpoint_seq: s.lastCheckpointSeq },
        'audit chain closed',
      )
    },
  }
}

/**
 * One INSERT for the whole group, run as a prepared statement
 * (`Database.statement`): the group's values travel as one array per column
 * and the server unnests them. What every row of a group shares (chain,
 * instance) is sent once; `seq` counts on from the first; each row's
 * `prev_hash` is the previous row's `hash` (the first row's is `$4`), so the
 * chain is linked by the same statement that stores it. Measured against one
 * JSON document per group unpacked by json_to_recordset: about a fifth less
 * server CPU per record (PostgreSQL parses the array literals faster than the
 * JSON that quotes each record a second time), and preparing the statement
 * saves a round trip per group (bench/audit.ts).
 */
const INSERT_GROUP = `insert into audit_log (chain_id, seq, at, event, instance, agent, actors, sub, sub_iss, jti, parent_jti, root_jti, record, prev_hash, hash)
  select $1::uuid, $2::bigint + r.n, to_timestamp(r.at), r.event, $3::text, r.agent, r.actors::text[], r.sub, r.sub_iss, r.jti, r.parent_jti, r.root_jti,
    r.record, coalesce(lag(r.hash) over (order by r.n), $4::text), r.hash
  from unnest($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
    with ordinality as r(at, event, agent, actors, sub, sub_iss, jti, parent_jti, root_jti, record, hash, n)`

/** The statement's parameters for consecutive rows of one chain. */
function groupParams(rows: readonly EncodedRecord[]): (string | number | null | readonly (string | number | null)[])[] {
  const first = rows[0]!
  return [
    first.chainId,
    first.seq - 1,
    first.instance,
    first.prevHash,
    rows.map((r) => r.at),
    rows.map((r) => r.event),
    rows.map((r) => r.agent),
    rows.map((r) => textArrayLiteral(r.actors)),
    rows.map((r) => r.sub),
    rows.map((r) => r.subIss),
    rows.map((r) => r.jti),
    rows.map((r) => r.parentJti),
    rows.map((r) => r.rootJti),
    rows.map((r) => r.record),
    rows.map((r) => r.hash),
  ]
}

/** A PostgreSQL array literal of text: every element double-quoted, `"` and `\` escaped with `\`. */
export function textArrayLiteral(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replace(/["\\]/g, '\\$&')}"`).join(',')}}`
}

/** The `kid` the newest `key.rotated` record names (any chain), or undefined when there is none. */
export async function lastKeyRotation(db: Db): Promise<string | undefined> {
  const [row] = await db.select({ record: auditLog.record }).from(auditLog).where(eq(auditLog.event, 'key.rotated')).orderBy(desc(auditLog.id)).limit(1)
  if (row === undefined) return undefined
  const kid = (JSON.parse(row.record) as { kid?: unknown }).kid
  return typeof kid === 'string' ? kid : undefined
}
