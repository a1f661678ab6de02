/**
 * One hash chain's writer: the group commit (sql.ts describes it) over one
 * `ChainState`, which every function here takes. Settling a group whose
 * answer was lost is in unconfirmed.ts; the statement in group-insert.ts.
 */
import { randomUUID } from 'node:crypto'
import { withTimeout } from '../core/async.js'
import { codeOf, databaseTimeout, serverError } from '../storage/database.js'
import { AuditUnavailable, type AuditEvent, type AuditReceipt } from './port.js'
import { encodeRecord, GENESIS_HASH, type EncodedRecord } from './record.js'
import { groupParams, INSERT_GROUP } from './group-insert.js'
import { RecentUsers } from './usage.js'
import type { AuditStats, SqlAuditLog, SqlAuditLogOptions } from './sql.js'
import { settleUnconfirmed } from './unconfirmed.js'
import { refusedForItsData, serverRefused, UnencodableRecord } from './write-failures.js'

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

/** One chain's writer, and what the dispatcher needs to know of it. */
export interface ChainWriter extends Omit<SqlAuditLog, 'onDurable' | 'observeCommits'> {
  /** Records queued and not yet sent. */
  queued(): number
  /** A group is being written. */
  writing(): boolean
  /** Sizes of the most recent groups. */
  groupSizes(): readonly number[]
  /** Commit times of the most recent groups, in ms. */
  commitTimes(): readonly number[]
}

/** The last group whose commit was not confirmed, with its events. */
export interface Unconfirmed {
  readonly rows: EncodedRecord[]
  readonly events: AuditEvent[]
  readonly done: Promise<void>
  readonly waitUntil: number
}

/** Everything one chain's functions share: its head, its queue, the group in flight, its counters. */
export interface ChainState {
  readonly options: SqlAuditLogOptions
  readonly groupMax: number
  /** `start` bound to this state once, for the timers that send a group. */
  readonly start: () => void
  chainId: string
  head: { seq: number; hash: string }
  queue: Pending[]
  /** Records of the group being written. */
  sending: number
  running: Promise<void> | undefined
  cancelScheduled: (() => void) | undefined
  closing: boolean
  healthy: boolean
  unconfirmed: Unconfirmed | undefined
  /**
   * Records the writer owes the log (token.withheld for an issuance answered
   * 503 that committed after all): they lead every group until one commits.
   */
  owed: AuditEvent[]
  records: number
  groups: number
  failedGroups: number
  readonly sizes: number[]
  readonly commits: number[]
  checkpointed: { seq: number; at: number }
  checkpointing: Promise<void> | undefined
  /** User summary rows this chain committed lately (usage.ts: distinct users to the minute). */
  readonly recentUsers: RecentUsers
  /** No checkpoint yet: one follows the first commit, not the cadence, so a process killed in its first seconds leaves its chain covered. */
  firstCheckpointDue: boolean
  interval: NodeJS.Timeout | undefined
}

const SIZES_KEPT = 10_000
const noop = () => {}

export function createChainWriter(options: SqlAuditLogOptions): ChainWriter {
  const w: ChainState = {
    options,
    groupMax: Math.max(1, options.groupMaxRecords),
    start: () => start(w),
    chainId: randomUUID(),
    head: { seq: 0, hash: GENESIS_HASH },
    queue: [],
    sending: 0,
    running: undefined,
    cancelScheduled: undefined,
    closing: false,
    healthy: true,
    unconfirmed: undefined,
    owed: [],
    records: 0,
    groups: 0,
    failedGroups: 0,
    sizes: [],
    commits: [],
    checkpointed: { seq: 0, at: options.clock() },
    checkpointing: undefined,
    recentUsers: new RecentUsers(),
    firstCheckpointDue: true,
    interval: undefined,
  }
  if (options.checkpoints !== undefined) {
    w.interval = setInterval(() => void checkpoint(w), Math.max(100, Math.min(options.checkpoints.intervalMs, 60_000)))
    w.interval.unref()
  }
  return {
    chainId: () => w.chainId,
    chainIds: () => [w.chainId],
    queued: () => w.queue.length,
    writing: () => w.running !== undefined,
    groupSizes: () => w.sizes,
    commitTimes: () => w.commits,
    append(event) {
      if (w.closing) return Promise.reject(new AuditUnavailable('audit log is closing', 'not_written'))
      return new Promise<AuditReceipt>((resolve, reject) => {
        w.queue.push({ event, resolve, reject })
        schedule(w)
      })
    },
    healthy: () => w.healthy,
    pending: () => w.queue.length + w.sending,
    probe: () => probe(w),
    stats: () => chainStats(w),
    close: () => close(w),
  }
}

function schedule(w: ChainState): void {
  if (w.running !== undefined) return // the running loop takes what is queued
  if (w.queue.length >= w.groupMax) {
    w.cancelScheduled?.()
    start(w)
    return
  }
  if (w.cancelScheduled !== undefined) return
  if (w.options.groupMaxWaitMs > 0) {
    const t = setTimeout(w.start, w.options.groupMaxWaitMs)
    w.cancelScheduled = () => clearTimeout(t)
  } else {
    // The end of this loop turn: requests read in the same turn share a group.
    const i = setImmediate(w.start)
    w.cancelScheduled = () => clearImmediate(i)
  }
}

function start(w: ChainState): void {
  w.cancelScheduled = undefined
  if (w.running === undefined) w.running = run(w)
}

async function run(w: ChainState): Promise<void> {
  await Promise.resolve() // `running` is set before this loop can end
  try {
    while (w.queue.length > 0) {
      const group = w.queue.length <= w.groupMax ? w.queue : w.queue.slice(0, w.groupMax)
      w.queue = w.queue.length <= w.groupMax ? [] : w.queue.slice(w.groupMax)
      w.sending = group.length
      await writeGroup(w, group)
      w.sending = 0
    }
  } finally {
    w.sending = 0
    w.running = undefined
  }
}

/** The observer's failure is its own: a committed group is never reported as failed because of it. */
function observeGroup(w: ChainState, records: number, seconds: number, committed: boolean): void {
  if (w.options.onGroup === undefined) return
  try {
    w.options.onGroup(records, seconds, committed)
  } catch {
    // metrics only
  }
}

async function writeGroup(w: ChainState, group: Pending[]): Promise<void> {
  try {
    if (w.unconfirmed !== undefined) await settleUnconfirmed(w, w.unconfirmed)
    const items: Item[] = [...w.owed.map((event) => ({ event })), ...group.map((p) => ({ event: p.event, pending: p }))]
    if (items.length === 0) return
    let rows: EncodedRecord[]
    try {
      rows = await insertRecords(
        w,
        items.map((it) => it.event),
      )
    } catch (err) {
      // Refused: nothing of the group committed, and the refusal may be one record's alone.
      if (items.length > 1 && (serverRefused(err) || err instanceof UnencodableRecord)) return await writeEach(w, items)
      if (refusedForItsData(err)) return refuseRecord(w, items[0]!, err)
      throw err
    }
    w.owed = []
    items.forEach((it, i) => it.pending?.resolve({ seq: rows[i]!.seq }))
    checkpointIfDue(w)
  } catch (err) {
    // A failed INSERT was counted where it failed; this is a group that could not even be sent.
    if (!(err instanceof AuditUnavailable)) w.failedGroups++
    refuseGroup(w, group, err)
  }
}

/**
 * Encodes `events` at the chain's head and sends them as one INSERT. On
 * commit the head moves past them and their rows are returned. Otherwise
 * throws `AuditUnavailable`; when the answer was lost, the rows are left
 * unconfirmed for the next write to settle.
 */
async function insertRecords(w: ChainState, events: readonly AuditEvent[]): Promise<EncodedRecord[]> {
  const { options } = w
  let { seq, hash } = w.head
  let rows: EncodedRecord[]
  try {
    rows = events.map((event) => {
      const r = encodeRecord(event, { chainId: w.chainId, seq: ++seq, instance: options.instance, prevHash: hash })
      hash = r.hash
      return r
    })
  } catch (err) {
    throw new UnencodableRecord(`audit record cannot be encoded (${(err as Error).message})`, 'not_written', { cause: err })
  }
  const sent = performance.now()
  const { params, users } = groupParams(rows, events, w.recentUsers)
  const insert = options.database.statement(INSERT_GROUP, params)
  try {
    await withTimeout(insert, options.writeTimeoutMs, databaseTimeout(options.writeTimeoutMs))
  } catch (err) {
    w.failedGroups++
    observeGroup(w, rows.length, (performance.now() - sent) / 1000, false)
    const refused = serverRefused(err)
    if (!refused) w.unconfirmed = { rows, events: [...events], done: insert.then(noop, noop), waitUntil: performance.now() + options.writeTimeoutMs }
    throw new AuditUnavailable(
      refused ? `audit log refused the write (${codeOf(err)})` : `audit log write unconfirmed (${codeOf(err)})`,
      refused ? 'not_written' : 'unknown',
      { cause: err },
    )
  }
  w.head = { seq, hash }
  w.healthy = true
  w.recentUsers.remember(users)
  w.records += rows.length
  w.groups++
  if (w.sizes.length >= SIZES_KEPT) w.sizes.splice(0, SIZES_KEPT / 2)
  w.sizes.push(rows.length)
  if (w.commits.length >= SIZES_KEPT) w.commits.splice(0, SIZES_KEPT / 2)
  const ms = performance.now() - sent
  w.commits.push(Math.round(ms * 100) / 100)
  observeGroup(w, rows.length, ms / 1000, true)
  try {
    w.options.onCommitted?.(events)
  } catch {
    // A watcher's failure is its own: the records are committed whatever it does.
  }
  return rows
}

/**
 * After the server refused a whole group: its records one INSERT each, in
 * order, each encoded at the head as it then stands (the records after a
 * refused one take its seq), so that a record refused for its own values
 * fails alone, and only its caller is told. At the first failure of any
 * other kind the rest would only fail alike: they are refused with it.
 */
async function writeEach(w: ChainState, items: readonly Item[]): Promise<void> {
  for (const [i, item] of items.entries()) {
    try {
      const [row] = await insertRecords(w, [item.event])
      if (item.pending === undefined) w.owed = w.owed.filter((e) => e !== item.event)
      else item.pending.resolve({ seq: row!.seq })
    } catch (err) {
      if (!refusedForItsData(err)) {
        const rest = items.slice(i + 1).flatMap((it) => it.pending ?? [])
        refuseGroup(w, item.pending === undefined ? [] : [item.pending], err, rest)
        return
      }
      refuseRecord(w, item, err)
    }
  }
  checkpointIfDue(w)
}

/** A record the server refused for its values: its caller alone is told; the log stays healthy. */
function refuseRecord(w: ChainState, item: Item, err: unknown): void {
  // An owed record stays owed: the next group carries it again.
  w.options.logger.warn({ chain: w.chainId, event: item.event.type, code: codeOf(err) }, 'audit record refused by the database')
  item.pending?.reject(err)
}

/**
 * Refuses `group` with `err`, and `notSent` (never sent) as not written.
 * When the database is unreachable or its answer was lost, what is queued
 * behind would only wait for the same failure, one group at a time: it is
 * refused now too, and the next append tries again.
 */
function refuseGroup(w: ChainState, group: readonly Pending[], err: unknown, notSent: readonly Pending[] = []): void {
  w.healthy = false
  const failure = err instanceof AuditUnavailable ? err : new AuditUnavailable(`audit log unavailable (${codeOf(err)})`, 'not_written', { cause: err })
  const doomed = [...notSent, ...(failure.outcome === 'unknown' || serverError(err) === undefined ? w.queue.splice(0) : [])]
  w.options.logger.warn({ chain: w.chainId, records: group.length + doomed.length, outcome: failure.outcome, code: codeOf(err) }, 'audit group not written')
  for (const p of group) p.reject(failure)
  const unsent = new AuditUnavailable(`audit log unavailable (${codeOf(err)})`, 'not_written', { cause: err })
  for (const p of doomed) p.reject(unsent)
}

function checkpointIfDue(w: ChainState): void {
  const cp = w.options.checkpoints
  if (cp === undefined) return
  if (w.firstCheckpointDue || w.head.seq - w.checkpointed.seq >= cp.everyRecords) void checkpoint(w)
}

async function checkpoint(w: ChainState): Promise<void> {
  const { options } = w
  const cp = options.checkpoints
  if (cp === undefined) return
  if (w.checkpointing !== undefined) return w.checkpointing
  const at = { ...w.head, chain: w.chainId }
  if (at.seq === 0 || at.seq === w.checkpointed.seq) return
  w.firstCheckpointDue = false
  w.checkpointing = (async () => {
    try {
      const jws = await cp.writer.write({ chain: at.chain, instance: options.instance, seq: at.seq, head: at.hash, at: Math.floor(options.clock() / 1000) })
      if (at.chain === w.chainId) w.checkpointed = { seq: at.seq, at: options.clock() }
      options.logger.info({ chain: at.chain, seq: at.seq, head: at.hash, checkpoint: jws }, 'audit checkpoint')
    } catch (err) {
      options.logger.error({ chain: at.chain, seq: at.seq, code: codeOf(err) }, 'audit checkpoint not written')
    } finally {
      w.checkpointing = undefined
      // This one was for a chain left since: the new chain's first is due now.
      if (w.firstCheckpointDue) void checkpoint(w)
    }
  })()
  return w.checkpointing
}

async function probe(w: ChainState): Promise<boolean> {
  if (w.healthy) return true
  const { database, writeTimeoutMs } = w.options
  try {
    await withTimeout(database.ping(), writeTimeoutMs, databaseTimeout(writeTimeoutMs))
    w.healthy = true
  } catch {
    // still down
  }
  return w.healthy
}

function chainStats(w: ChainState): AuditStats {
  return {
    chainId: w.chainId,
    records: w.records,
    groups: w.groups,
    failedGroups: w.failedGroups,
    groupSize: sizeSummary([...w.sizes].sort((a, b) => a - b)),
    commitMs: sizeSummary([...w.commits].sort((a, b) => a - b)),
    lastCheckpointSeq: w.checkpointed.seq,
  }
}

async function close(w: ChainState): Promise<void> {
  if (w.closing) return
  w.closing = true
  if (w.interval !== undefined) clearInterval(w.interval)
  w.cancelScheduled?.()
  w.cancelScheduled = undefined
  if (w.running === undefined && w.queue.length > 0) w.running = run(w)
  await w.running?.catch(noop)
  // What the log still owes (withheld tokens, an unconfirmed group to settle): one last try.
  if (w.owed.length > 0 || w.unconfirmed !== undefined) await writeGroup(w, [])
  await w.checkpointing
  await checkpoint(w)
  const s = chainStats(w)
  w.options.logger.debug(
    { chain: w.chainId, records: s.records, groups: s.groups, failed_groups: s.failedGroups, group_size: s.groupSize, checkpoint_seq: s.lastCheckpointSeq },
    'audit chain closed',
  )
}

/** Mean, median, 99th percentile and largest of ascending `sorted` (zeros when empty). */
export function sizeSummary(sorted: readonly number[]): AuditStats['groupSize'] {
  const pick = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0
  return {
    mean: sorted.length === 0 ? 0 : sorted.reduce((a, b) => a + b, 0) / sorted.length,
    p50: pick(0.5),
    p99: pick(0.99),
    max: sorted.at(-1) ?? 0,
  }
}
