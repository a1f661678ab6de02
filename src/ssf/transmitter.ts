/**
 * The SET transmitter: turns the revocation log into each receiver's queue
 * (any instance may, idempotently) and pushes each push receiver's queue in
 * order (only the instance holding its lease: push-worker.ts). Poll receivers
 * read their queue through `poll`. Every function here takes one
 * `TransmitterState`. docs/events.md says what receivers can rely on.
 */
import { randomUUID } from 'node:crypto'
import { settleWithin } from '../core/async.js'
import { describeCause } from '../core/errors.js'
import type { Revocation } from '../revocation/port.js'
import type { Logger } from '../telemetry/log.js'
import { eventsOf, setClaims, setJti } from './events.js'
import type { SsfOutboxRow } from '../storage/schema.js'
import type { LogMoment, MomentTypes, OutboxEntry, SsfStore } from './outbox.js'
import type { LogRecord, RecordSelector } from './record-outbox.js'
import { enqueueWebhookEntries } from './webhook-scan.js'
import type { PushOutcome } from './push.js'
import type { PollAnswer, PollRequest, SetPoller } from './port.js'
import { createPushWorker, releaseLease, type PushReceiver, type PushWorker } from './push-worker.js'
import { serial } from './serial.js'
import { deliveryOf, type SetDelivery } from './delivery-of.js'

export type ReceiverDelivery =
  | { readonly method: 'push'; readonly endpointUrl: string; readonly authorization: string | undefined }
  | { readonly method: 'poll'; readonly resourceServer: string }
  | WebhookDelivery

/**
 * Pushed like `push`, one entry at a time in order under the lease, but of
 * entries of its own making (src/notify/): the moments of `types` (lifts
 * too), each made into an entry by `entryOf`, and the governance records of
 * the delegation log `records` picks, each made into an entry by its
 * `entryOf`; all sent by `send` (webhook-scan.ts).
 */
export interface WebhookDelivery {
  readonly method: 'webhook'
  readonly types: MomentTypes
  /** The queue entry for one moment, enqueued at `atMs` (epoch ms). */
  readonly entryOf: (moment: LogMoment, atMs: number) => OutboxEntry
  /** Governance records of the delegation log this webhook is told of; none when absent. */
  readonly records?: {
    readonly selectors: readonly RecordSelector[]
    /** The queue entry for one record, enqueued at `atMs`; undefined for a record it cannot read (logged, skipped). */
    readonly entryOf: (record: LogRecord, atMs: number) => OutboxEntry | undefined | Promise<OutboxEntry | undefined>
  }
  /** Sends one entry; never rejects. */
  readonly send: (entry: SsfOutboxRow, options: { readonly timeoutMs: number; readonly signal: AbortSignal }) => Promise<PushOutcome>
}

export interface Receiver {
  readonly name: string
  readonly audience: string
  readonly delivery: ReceiverDelivery
  readonly start: 'now' | 'beginning'
}

export interface RetryPolicy {
  readonly maxAttempts: number
  readonly maxAgeMs: number
  readonly initialDelayMs: number
  readonly maxDelayMs: number
}

/** Counters and gauges (`mandate.ssf.*`); every label is a configured receiver's name or a fixed word. */
export interface SetMetrics {
  delivered(receiver: string, method: 'push' | 'poll', count: number): void
  failed(receiver: string, reason: 'refused' | 'attempts' | 'expired' | 'receiver_error', count: number): void
  retried(receiver: string): void
}

export interface TransmitterOptions {
  readonly issuer: string
  readonly receivers: readonly Receiver[]
  readonly store: SsfStore
  /** Signs SET claims as a compact JWS, `typ: secevent+jwt`. */
  readonly sign: (claims: object) => Promise<string>
  /** Names this instance; the lease owner is it plus a random suffix (one process may run two brokers in tests). */
  readonly instance: string
  /** Epoch seconds on the broker's clock: where a new stream starts. */
  readonly now: () => number
  /** Epoch milliseconds of the wall clock: retry times and ages (default Date.now). */
  readonly wallMs?: () => number
  readonly retry: RetryPolicy
  readonly pushTimeoutMs: number
  readonly leaseSeconds: number
  readonly scanIntervalMs: number
  readonly graceSeconds: number
  readonly longPollMaxMs: number
  readonly logger: Logger
  readonly metrics?: SetMetrics
  /** [0, 1) for the retry jitter (default Math.random). */
  readonly random?: () => number
}

export interface Transmitter extends SetPoller {
  /** Creates missing streams and starts the timers. Rejects when the database fails. */
  start(): Promise<void>
  /** A revocation was made or arrived on this instance: scan and push now rather than at the next tick. */
  wake(): void
  /** Per receiver: SETs not yet delivered and the age of the oldest, in seconds (as of the last tick). */
  backlog(): ReadonlyMap<string, { readonly pending: number; readonly lagSeconds: number }>
  /** Where `r`'s SETs stand for each receiver. */
  deliveryOf(r: Revocation): Promise<readonly SetDelivery[]>
  /** Stops the timers, waits briefly for a push in flight, releases the leases. Idempotent. */
  close(): Promise<void>
}

/** Revocations (or records) read from the log per query while scanning. */
const SCAN_PAGE = 200
/** RFC 8936 leaves the default to the transmitter; a cap keeps one answer bounded. */
export const POLL_DEFAULT_EVENTS = 100
export const POLL_MAX_EVENTS = 1000
/** How often a long poll rereads the queue: SETs made on another instance reach it through the database. */
const LONG_POLL_RECHECK_MS = 500
/** Settled entries are kept this long past the scan window, for inspection. */
const RETENTION_SECONDS = 86_400
const PRUNE_EVERY_MS = 60_000

/** Everything the transmitter's functions share: its options and clocks, its workers, its timers. */
export interface TransmitterState {
  readonly options: TransmitterOptions
  /** Epoch milliseconds of the wall clock. */
  readonly wallMs: () => number
  /** [0, 1), for the retry jitter. */
  readonly random: () => number
  /** This instance's name in the leases it takes: its `instance` and a random suffix. */
  readonly owner: string
  /** Aborted by `close`: ends the pushes in flight and the long polls. */
  readonly closing: AbortController
  closed: boolean
  /** Logs the first failure of a kind of work (`scan siem`, `push siem`, `housekeeping`) and its recovery, not every tick of an outage. */
  readonly note: (what: string, err: unknown) => void
  /** Push receivers' workers, by receiver name. */
  readonly workers: Map<string, PushWorker>
  /** Poll receivers, by the resource server that polls for them. */
  readonly pollers: ReadonlyMap<string, Receiver>
  /** Long polls waiting for a scan to find something. */
  readonly waiters: Set<() => void>
  /** `scanQueues` and `housekeeping` over this state, each serialised. */
  readonly scan: () => Promise<void>
  readonly housekeeping: () => Promise<void>
  /** The next tick. */
  timer: NodeJS.Timeout | undefined
  /** Wall-clock epoch ms of the last prune of settled entries. */
  lastPrune: number
  /** As of the last tick. */
  backlog: Map<string, { pending: number; lagSeconds: number }>
}

export function createTransmitter(options: TransmitterOptions): Transmitter {
  const t: TransmitterState = {
    options,
    wallMs: options.wallMs ?? Date.now,
    random: options.random ?? Math.random,
    owner: `${options.instance}/${randomUUID().slice(0, 8)}`,
    closing: new AbortController(),
    closed: false,
    note: failureNotes(options.logger),
    workers: new Map(),
    pollers: new Map(options.receivers.flatMap((r) => (r.delivery.method === 'poll' ? [[r.delivery.resourceServer, r] as const] : []))),
    waiters: new Set(),
    scan: serial(() => scanQueues(t)),
    housekeeping: serial(() => housekeeping(t)),
    timer: undefined,
    lastPrune: 0,
    backlog: new Map(),
  }
  for (const r of options.receivers) {
    if (r.delivery.method !== 'poll') t.workers.set(r.name, createPushWorker(t, r as PushReceiver))
  }
  return {
    start: () => start(t),
    wake() {
      if (!t.closed) void t.scan()
    },
    backlog: () => t.backlog,
    poll: (resourceServer, request, signal) => poll(t, resourceServer, request, signal),
    deliveryOf: (r) => deliveryOf(options.store, options.receivers, r),
    close: () => close(t),
  }
}

/** The `note` of `TransmitterState`, logging to `log`. */
function failureNotes(log: Logger): (what: string, err: unknown) => void {
  const failing = new Map<string, boolean>()
  return (what, err) => {
    if (err === undefined) {
      if (failing.get(what) === true) log.info({ work: what }, 'SET delivery work recovered')
      failing.set(what, false)
      return
    }
    if (failing.get(what) !== true) log.warn({ work: what, cause: describeCause(err) }, 'SET delivery work failed; retried at the next tick')
    failing.set(what, true)
  }
}

async function start(t: TransmitterState): Promise<void> {
  const startAt = t.options.now()
  for (const r of t.options.receivers) await t.options.store.ensureStream(r.name, r.start === 'now' ? startAt : 0)
  void tick(t)
  schedule(t)
}

/** Every `scanIntervalMs` after the last tick ended: scan, push, housekeeping. */
function schedule(t: TransmitterState): void {
  if (t.closed) return
  t.timer = setTimeout(() => {
    void tick(t).finally(() => schedule(t))
  }, t.options.scanIntervalMs)
  t.timer.unref()
}

async function tick(t: TransmitterState): Promise<void> {
  await t.scan()
  await Promise.all([...t.workers.values()].map((w) => w.trigger()))
  await t.housekeeping()
}

/** Every receiver's unsent revocations into its queue; wakes the long polls and the push workers when it found any. */
async function scanQueues(t: TransmitterState): Promise<void> {
  let found = false
  for (const receiver of t.options.receivers) {
    if (t.closed) return
    if (await enqueueUnsent(t, receiver)) found = true
  }
  if (found) {
    for (const w of [...t.waiters]) w()
    for (const w of t.workers.values()) void w.trigger()
  }
}

/** One receiver's unsent revocations into its queue, a page at a time; true when it enqueued any. */
async function enqueueUnsent(t: TransmitterState, receiver: Receiver): Promise<boolean> {
  const { store, graceSeconds } = t.options
  let found = false
  try {
    if (receiver.delivery.method === 'webhook') {
      found = await enqueueWebhookEntries(t, receiver.name, receiver.delivery)
      t.note(`scan ${receiver.name}`, undefined)
      return found
    }
    for (;;) {
      const unsent = await store.unsent(receiver.name, graceSeconds, SCAN_PAGE)
      if (unsent.length === 0) break
      const at = t.wallMs()
      const entries = (await Promise.all(unsent.map((r) => entriesOf(t, receiver, r, at)))).flat()
      await store.enqueue(receiver.name, entries, Math.max(...unsent.map((r) => r.createdAt)))
      found = true
      if (unsent.length < SCAN_PAGE) break
    }
    t.note(`scan ${receiver.name}`, undefined)
  } catch (err) {
    t.note(`scan ${receiver.name}`, err)
  }
  return found
}

/** A revocation's SETs for `receiver`, signed, one per event, enqueued at `at` (epoch ms). */
async function entriesOf(t: TransmitterState, receiver: Receiver, r: Revocation, at: number): Promise<OutboxEntry[]> {
  const { issuer, sign } = t.options
  return Promise.all(
    eventsOf(r).map(async (event, ordinal) => ({
      receiver: receiver.name,
      jti: setJti(r.id, receiver.name, event.type),
      revocationId: r.id,
      revokedAt: r.createdAt,
      ordinal,
      eventType: event.type,
      set: await sign(setClaims(issuer, receiver, r, event)),
      enqueuedAtMs: at,
    })),
  )
}

/** Gives up what is too old, measures the backlog, and now and then prunes settled entries. Never rejects. */
async function housekeeping(t: TransmitterState): Promise<void> {
  try {
    const now = t.wallMs()
    await expireOld(t, now)
    await measureBacklog(t, now)
    if (now - t.lastPrune >= PRUNE_EVERY_MS) {
      t.lastPrune = now
      await pruneSettled(t)
    }
    t.note('housekeeping', undefined)
  } catch (err) {
    t.note('housekeeping', err)
  }
}

/** Every receiver's pending SETs older than `ssf.retry.max_age_seconds`, given up (a poll receiver's too). */
async function expireOld(t: TransmitterState, now: number): Promise<void> {
  const { store, receivers, retry, metrics, logger } = t.options
  for (const r of receivers) {
    const expired = await store.expire(r.name, now - retry.maxAgeMs)
    if (expired.length > 0) {
      metrics?.failed(r.name, 'expired', expired.length)
      logger.error({ receiver: r.name, set_jtis: expired.slice(0, 20), count: expired.length }, 'SETs given up: older than ssf.retry.max_age_seconds')
    }
  }
}

async function measureBacklog(t: TransmitterState, now: number): Promise<void> {
  const counts = await t.options.store.backlog()
  t.backlog = new Map(
    t.options.receivers.map((r) => {
      const b = counts.get(r.name)
      return [r.name, { pending: b?.pending ?? 0, lagSeconds: b?.oldestMs === undefined ? 0 : Math.max(0, (now - b.oldestMs) / 1000) }]
    }),
  )
}

/** Settled entries a scan can no longer reach, kept RETENTION_SECONDS longer for inspection; each source by its own cursor. */
async function pruneSettled(t: TransmitterState): Promise<void> {
  const { store, receivers, graceSeconds } = t.options
  for (const r of receivers) {
    const s = await store.stream(r.name)
    if (s === undefined) continue
    await store.prune(r.name, s.cursorAt - graceSeconds - RETENTION_SECONDS)
    if (s.auditCursorAt !== undefined) await store.pruneRecords(r.name, s.auditCursorAt - graceSeconds - RETENTION_SECONDS)
  }
}

/** RFC 8936 poll: `SetPoller.poll`. */
async function poll(t: TransmitterState, resourceServer: string, request: PollRequest, signal: AbortSignal): Promise<PollAnswer | undefined> {
  const receiver = t.pollers.get(resourceServer)
  if (receiver === undefined) return undefined
  await settleReported(t, receiver, request)
  if (request.maxEvents === 0) return pollPage(t, receiver, request.maxEvents)
  // Fresh: what the log holds now, not as of the last tick.
  await t.scan()
  let answer = await pollPage(t, receiver, request.maxEvents)
  const deadline = t.wallMs() + t.options.longPollMaxMs
  while (!request.returnImmediately && Object.keys(answer.sets).length === 0 && !t.closed && !signal.aborted && t.wallMs() < deadline) {
    await nextRecheck(t, signal, deadline)
    answer = await pollPage(t, receiver, request.maxEvents)
  }
  return answer
}

/** What the receiver acknowledged and reported in error (RFC 8936 §2.4): delivered, and given up. */
async function settleReported(t: TransmitterState, receiver: Receiver, request: PollRequest): Promise<void> {
  const { store, metrics, logger } = t.options
  const acked = await store.delivered(receiver.name, request.ack)
  if (acked > 0) metrics?.delivered(receiver.name, 'poll', acked)
  if (request.setErrs.size === 0) return
  const errors = new Map([...request.setErrs].map(([jti, e]) => [jti, `${e.err}: ${e.description}`]))
  const n = await store.failed(receiver.name, errors)
  if (n > 0) {
    metrics?.failed(receiver.name, 'receiver_error', n)
    logger.error(
      { receiver: receiver.name, set_jtis: [...request.setErrs.keys()].slice(0, 20), count: n },
      'SETs reported in error by their receiver (setErrs)',
    )
  }
}

/** The receiver's first `maxEvents` pending SETs, and whether more are pending. */
async function pollPage(t: TransmitterState, receiver: Receiver, maxEvents: number): Promise<PollAnswer> {
  const rows = await t.options.store.pending(receiver.name, maxEvents + 1)
  const sets = Object.fromEntries(rows.slice(0, maxEvents).map((row) => [row.jti, row.set]))
  return { sets, moreAvailable: rows.length > maxEvents }
}

/** A long poll's wait: until a scan finds SETs, the poll or the transmitter ends, the deadline, or the next recheck. */
function nextRecheck(t: TransmitterState, signal: AbortSignal, deadline: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer)
      t.waiters.delete(done)
      signal.removeEventListener('abort', done)
      t.closing.signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, Math.min(LONG_POLL_RECHECK_MS, Math.max(0, deadline - t.wallMs())))
    t.waiters.add(done)
    signal.addEventListener('abort', done)
    t.closing.signal.addEventListener('abort', done)
  })
}

async function close(t: TransmitterState): Promise<void> {
  if (t.closed) return
  t.closed = true
  clearTimeout(t.timer)
  t.closing.abort()
  for (const w of [...t.waiters]) w()
  const workers = [...t.workers.values()]
  // A push in flight was aborted above; its run ends at its next await.
  await settleWithin(Promise.all(workers.map((w) => w.trigger())), 2_000)
  await settleWithin(Promise.all(workers.map((w) => releaseLease(t, w).catch(() => {}))), 2_000)
}
