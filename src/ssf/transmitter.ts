/**
 * The SET transmitter: turns the revocation log into each receiver's queue
 * (any instance may, idempotently) and pushes each push receiver's queue in
 * order (only the instance holding its lease). Poll receivers read their
 * queue through `poll`. docs/events.md says what receivers can rely on.
 */
import { randomUUID } from 'node:crypto'
import { settleWithin } from '../core/async.js'
import { describeCause } from '../core/errors.js'
import type { Revocation } from '../revocation/port.js'
import type { Logger } from '../telemetry/log.js'
import { eventsOf, setClaims, setJti } from './events.js'
import type { OutboxEntry, SsfStore } from './outbox.js'
import type { PollAnswer, PollRequest, SetPoller } from './port.js'
import { pushSet } from './push.js'

export type ReceiverDelivery =
  | { readonly method: 'push'; readonly endpointUrl: string; readonly authorization: string | undefined }
  | { readonly method: 'poll'; readonly resourceServer: string }

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
  /** Stops the timers, waits briefly for a push in flight, releases the leases. Idempotent. */
  close(): Promise<void>
}

/** Revocations read from the log per query while scanning. */
const SCAN_PAGE = 200
/** RFC 8936 leaves the default to the transmitter; a cap keeps one answer bounded. */
export const POLL_DEFAULT_EVENTS = 100
export const POLL_MAX_EVENTS = 1000
/** How often a long poll rereads the queue: SETs made on another instance reach it through the database. */
const LONG_POLL_RECHECK_MS = 500
/** Settled entries are kept this long past the scan window, for inspection. */
const RETENTION_SECONDS = 86_400
const PRUNE_EVERY_MS = 60_000

/**
 * Runs `work` once at a time; a trigger while it runs asks for one more run
 * after it. The returned promise settles after a run that began at or after
 * the call. `work` must not reject.
 */
function serial(work: () => Promise<void>): () => Promise<void> {
  let current: Promise<void> | undefined
  let next: Promise<void> | undefined
  const trigger = (): Promise<void> => {
    if (current === undefined) {
      current = work().finally(() => {
        current = undefined
      })
      return current
    }
    next ??= current.then(() => {
      next = undefined
      return trigger()
    })
    return next
  }
  return trigger
}

export function createTransmitter(options: TransmitterOptions): Transmitter {
  const { store, receivers, retry } = options
  const wallMs = options.wallMs ?? Date.now
  const random = options.random ?? Math.random
  const log = options.logger
  const owner = `${options.instance}/${randomUUID().slice(0, 8)}`
  const closing = new AbortController()
  /** A function, not a flag: TypeScript would keep a flag's narrowing across the awaits of a loop. */
  const stopping = () => closing.signal.aborted
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let lastPrune = 0
  let backlog = new Map<string, { pending: number; lagSeconds: number }>()
  /** Long polls waiting for a scan to find something. */
  const waiters = new Set<() => void>()
  const failing = new Map<string, boolean>()

  /** Logs the first failure of a kind of work and its recovery, not every tick of an outage. */
  const note = (what: string, err: unknown) => {
    if (err === undefined) {
      if (failing.get(what) === true) log.info({ work: what }, 'SET delivery work recovered')
      failing.set(what, false)
      return
    }
    if (failing.get(what) !== true) log.warn({ work: what, cause: describeCause(err) }, 'SET delivery work failed; retried at the next tick')
    failing.set(what, true)
  }

  async function entriesOf(receiver: Receiver, r: Revocation, at: number): Promise<OutboxEntry[]> {
    return Promise.all(
      eventsOf(r).map(async (event, ordinal) => ({
        receiver: receiver.name,
        jti: setJti(r.id, receiver.name, event.type),
        revocationId: r.id,
        revokedAt: r.createdAt,
        ordinal,
        eventType: event.type,
        set: await options.sign(setClaims(options.issuer, receiver, r, event)),
        enqueuedAtMs: at,
      })),
    )
  }

  /** Every receiver's unsent revocations into its queue. */
  const scan = serial(async () => {
    let found = false
    for (const receiver of receivers) {
      if (closed) return
      try {
        for (;;) {
          const unsent = await store.unsent(receiver.name, options.graceSeconds, SCAN_PAGE)
          if (unsent.length === 0) break
          const at = wallMs()
          const entries = (await Promise.all(unsent.map((r) => entriesOf(receiver, r, at)))).flat()
          await store.enqueue(receiver.name, entries, Math.max(...unsent.map((r) => r.createdAt)))
          found = true
          if (unsent.length < SCAN_PAGE) break
        }
        note(`scan ${receiver.name}`, undefined)
      } catch (err) {
        note(`scan ${receiver.name}`, err)
      }
    }
    if (found) {
      for (const w of [...waiters]) w()
      for (const d of drains.values()) void d.trigger()
    }
  })

  /** A push receiver's worker: holds the lease, pushes its queue in order. */
  function pushWorker(receiver: Receiver & { delivery: { method: 'push' } }) {
    let leaseUntil = 0
    let retryTimer: NodeJS.Timeout | undefined
    const leaseMs = options.leaseSeconds * 1000

    const holdLease = async (): Promise<boolean> => {
      // Renewed at half its life; trusted locally until a margin before it ends on the database's clock.
      if (leaseUntil - wallMs() > leaseMs / 2) return true
      const asked = wallMs()
      const held = await store.lease(receiver.name, owner, options.leaseSeconds)
      leaseUntil = held ? asked + leaseMs - Math.min(1000, leaseMs / 4) : 0
      return held
    }

    const later = (atMs: number) => {
      clearTimeout(retryTimer)
      retryTimer = setTimeout(() => void trigger(), Math.max(0, atMs - wallMs()))
      retryTimer.unref()
    }

    const drain = async (): Promise<void> => {
      try {
        if (closed || !(await holdLease())) return
        for (;;) {
          if (stopping()) return
          const [head] = await store.pending(receiver.name, 1)
          if (head === undefined) break
          const now = wallMs()
          if (now - head.enqueuedAtMs > retry.maxAgeMs) {
            await store.failed(receiver.name, new Map([[head.jti, 'expired']]))
            options.metrics?.failed(receiver.name, 'expired', 1)
            log.error({ receiver: receiver.name, set_jti: head.jti, attempts: head.attempts }, 'SET given up: older than ssf.retry.max_age_seconds')
            continue
          }
          if (head.nextAttemptAtMs > now) {
            later(head.nextAttemptAtMs)
            break
          }
          if (!(await holdLease())) return
          const outcome = await pushSet(receiver.delivery.endpointUrl, head.set, {
            authorization: receiver.delivery.authorization,
            timeoutMs: options.pushTimeoutMs,
            signal: closing.signal,
          })
          // Stopping: the push was aborted or its answer may be lost; the next instance sends the same SET again.
          if (stopping()) return
          if (outcome.kind === 'delivered') {
            await store.delivered(receiver.name, [head.jti])
            options.metrics?.delivered(receiver.name, 'push', 1)
            log.debug({ receiver: receiver.name, set_jti: head.jti, attempts: head.attempts + 1 }, 'SET delivered')
            continue
          }
          if (outcome.kind === 'refused') {
            // RFC 8935 §2.3: the receiver will never take this SET; sending it again would not help.
            await store.failed(receiver.name, new Map([[head.jti, `${outcome.err}: ${outcome.description}`]]))
            options.metrics?.failed(receiver.name, 'refused', 1)
            log.error({ receiver: receiver.name, set_jti: head.jti, err: outcome.err, description: outcome.description }, 'SET refused by its receiver (400)')
            continue
          }
          const attempts = head.attempts + 1
          if (attempts >= retry.maxAttempts) {
            await store.failed(receiver.name, new Map([[head.jti, outcome.reason]]))
            options.metrics?.failed(receiver.name, 'attempts', 1)
            log.error({ receiver: receiver.name, set_jti: head.jti, attempts, reason: outcome.reason }, 'SET given up after ssf.retry.max_attempts pushes')
            continue
          }
          // Exponential back-off, each wait drawn from [ceiling/2, ceiling): a receiver coming back is not hit by every SET at once.
          const ceiling = Math.min(retry.maxDelayMs, retry.initialDelayMs * 2 ** (attempts - 1))
          const next = wallMs() + Math.max(1, Math.round(ceiling / 2 + (random() * ceiling) / 2))
          await store.retryLater(receiver.name, head.jti, attempts, next, outcome.reason)
          options.metrics?.retried(receiver.name)
          log.info({ receiver: receiver.name, set_jti: head.jti, attempts, reason: outcome.reason, retry_in_ms: next - wallMs() }, 'SET push failed; retrying')
          later(next)
          break
        }
        note(`push ${receiver.name}`, undefined)
      } catch (err) {
        note(`push ${receiver.name}`, err)
      }
    }
    const trigger = serial(drain)
    return {
      trigger,
      async release() {
        clearTimeout(retryTimer)
        if (leaseUntil === 0) return
        leaseUntil = 0
        await store.release(receiver.name, owner)
      },
    }
  }

  const drains = new Map<string, ReturnType<typeof pushWorker>>()
  for (const r of receivers) {
    if (r.delivery.method === 'push') drains.set(r.name, pushWorker(r as Receiver & { delivery: { method: 'push' } }))
  }
  const pollers = new Map(receivers.flatMap((r) => (r.delivery.method === 'poll' ? [[r.delivery.resourceServer, r] as const] : [])))

  const housekeeping = serial(async () => {
    try {
      const now = wallMs()
      for (const r of receivers) {
        const expired = await store.expire(r.name, now - retry.maxAgeMs)
        if (expired.length > 0) {
          options.metrics?.failed(r.name, 'expired', expired.length)
          log.error({ receiver: r.name, set_jtis: expired.slice(0, 20), count: expired.length }, 'SETs given up: older than ssf.retry.max_age_seconds')
        }
      }
      const counts = await store.backlog()
      backlog = new Map(
        receivers.map((r) => {
          const b = counts.get(r.name)
          return [r.name, { pending: b?.pending ?? 0, lagSeconds: b?.oldestMs === undefined ? 0 : Math.max(0, (now - b.oldestMs) / 1000) }]
        }),
      )
      if (now - lastPrune >= PRUNE_EVERY_MS) {
        lastPrune = now
        for (const r of receivers) {
          const s = await store.stream(r.name)
          if (s !== undefined) await store.prune(r.name, s.cursorAt - options.graceSeconds - RETENTION_SECONDS)
        }
      }
      note('housekeeping', undefined)
    } catch (err) {
      note('housekeeping', err)
    }
  })

  const tick = async () => {
    await scan()
    await Promise.all([...drains.values()].map((d) => d.trigger()))
    await housekeeping()
  }

  const schedule = () => {
    if (closed) return
    timer = setTimeout(() => {
      void tick().finally(schedule)
    }, options.scanIntervalMs)
    timer.unref()
  }

  return {
    async start() {
      const startAt = options.now()
      for (const r of receivers) await store.ensureStream(r.name, r.start === 'now' ? startAt : 0)
      void tick()
      schedule()
    },

    wake() {
      if (!closed) void scan()
    },

    backlog: () => backlog,

    async poll(resourceServer, request: PollRequest, signal): Promise<PollAnswer | undefined> {
      const receiver = pollers.get(resourceServer)
      if (receiver === undefined) return undefined
      const acked = await store.delivered(receiver.name, request.ack)
      if (acked > 0) options.metrics?.delivered(receiver.name, 'poll', acked)
      if (request.setErrs.size > 0) {
        const errors = new Map([...request.setErrs].map(([jti, e]) => [jti, `${e.err}: ${e.description}`]))
        const n = await store.failed(receiver.name, errors)
        if (n > 0) {
          options.metrics?.failed(receiver.name, 'receiver_error', n)
          log.error(
            { receiver: receiver.name, set_jtis: [...request.setErrs.keys()].slice(0, 20), count: n },
            'SETs reported in error by their receiver (setErrs)',
          )
        }
      }
      const page = async () => {
        const rows = await store.pending(receiver.name, request.maxEvents + 1)
        const sets = Object.fromEntries(rows.slice(0, request.maxEvents).map((row) => [row.jti, row.set]))
        return { sets, moreAvailable: rows.length > request.maxEvents }
      }
      if (request.maxEvents === 0) return page()
      // Fresh: what the log holds now, not as of the last tick.
      await scan()
      let answer = await page()
      const deadline = wallMs() + options.longPollMaxMs
      while (!request.returnImmediately && Object.keys(answer.sets).length === 0 && !closed && !signal.aborted && wallMs() < deadline) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(t)
            waiters.delete(done)
            signal.removeEventListener('abort', done)
            closing.signal.removeEventListener('abort', done)
            resolve()
          }
          const t = setTimeout(done, Math.min(LONG_POLL_RECHECK_MS, Math.max(0, deadline - wallMs())))
          waiters.add(done)
          signal.addEventListener('abort', done)
          closing.signal.addEventListener('abort', done)
        })
        answer = await page()
      }
      return answer
    },

    async close() {
      if (closed) return
      closed = true
      clearTimeout(timer)
      closing.abort()
      for (const w of [...waiters]) w()
      // A push in flight was aborted above; its run ends at its next await.
      await settleWithin(Promise.all([...drains.values()].map((d) => d.trigger())), 2_000)
      await settleWithin(Promise.all([...drains.values()].map((d) => d.release().catch(() => {}))), 2_000)
    },
  }
}
