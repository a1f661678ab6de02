/**
 * A push receiver's worker (RFC 8935): it holds the receiver's lease, so that
 * one instance at a time pushes its queue, and pushes the queue in order, one
 * SET at a time, waiting out a failed push with an exponential back-off. Each
 * function takes the transmitter's state and the worker's own.
 */
import type { SsfOutboxRow } from '../storage/schema.js'
import { pushSet, type PushOutcome } from './push.js'
import { serial } from './serial.js'
import type { Receiver, ReceiverDelivery, RetryPolicy, TransmitterState } from './transmitter.js'

/** A receiver this instance pushes to: an RFC 8935 push receiver, or a webhook. */
export type PushReceiver = Receiver & { readonly delivery: Extract<ReceiverDelivery, { readonly method: 'push' | 'webhook' }> }

/** One push receiver's worker: its lease and its retry timer. */
export interface PushWorker {
  readonly receiver: PushReceiver
  /** Wall-clock epoch ms until which the lease is trusted here; 0 when it is not held. */
  leaseUntil: number
  retryTimer: NodeJS.Timeout | undefined
  /** Runs `drain`, serialised: never two at once, and one more when asked during one. */
  readonly trigger: () => Promise<void>
}

/** What `drain` does after one step at the head of the queue: the next SET, wait for a retry time, or stop here. */
type Step = 'next' | 'wait' | 'stop'

export function createPushWorker(t: TransmitterState, receiver: PushReceiver): PushWorker {
  const w: PushWorker = { receiver, leaseUntil: 0, retryTimer: undefined, trigger: serial(() => drain(t, w)) }
  return w
}

/** A function, not a property read: TypeScript would keep a property's narrowing across the awaits of a loop. */
const stopping = (t: TransmitterState) => t.closing.signal.aborted

/** Takes or renews the receiver's lease; false when another instance holds it. */
async function holdLease(t: TransmitterState, w: PushWorker): Promise<boolean> {
  const leaseMs = t.options.leaseSeconds * 1000
  // Renewed at half its life; trusted locally until a margin before it ends on the database's clock.
  if (w.leaseUntil - t.wallMs() > leaseMs / 2) return true
  const asked = t.wallMs()
  const held = await t.options.store.lease(w.receiver.name, t.owner, t.options.leaseSeconds)
  w.leaseUntil = held ? asked + leaseMs - Math.min(1000, leaseMs / 4) : 0
  return held
}

/** Drains the queue again at `atMs` (wall-clock epoch ms): when its head may be tried again. */
function drainAt(t: TransmitterState, w: PushWorker, atMs: number): void {
  clearTimeout(w.retryTimer)
  w.retryTimer = setTimeout(() => void w.trigger(), Math.max(0, atMs - t.wallMs()))
  w.retryTimer.unref()
}

/** Pushes the queue from its head until it is empty or must wait, or the lease or the broker goes. Never rejects. */
async function drain(t: TransmitterState, w: PushWorker): Promise<void> {
  const { name } = w.receiver
  try {
    if (t.closed || !(await holdLease(t, w))) return
    for (;;) {
      if (stopping(t)) return
      const [head] = await t.options.store.pending(name, 1)
      if (head === undefined) break
      const step = await pushHead(t, w, head)
      if (step === 'stop') return
      if (step === 'wait') break
    }
    t.note(`push ${name}`, undefined)
  } catch (err) {
    t.note(`push ${name}`, err)
  }
}

/** One step at the head of the queue: give it up when too old, wait for its retry time, or push it once. */
async function pushHead(t: TransmitterState, w: PushWorker, head: SsfOutboxRow): Promise<Step> {
  const { options } = t
  const { name, delivery } = w.receiver
  const now = t.wallMs()
  if (now - head.enqueuedAtMs > options.retry.maxAgeMs) {
    await options.store.failed(name, new Map([[head.jti, 'expired']]))
    options.metrics?.failed(name, 'expired', 1)
    options.logger.error({ receiver: name, set_jti: head.jti, attempts: head.attempts }, 'SET given up: older than ssf.retry.max_age_seconds')
    return 'next'
  }
  if (head.nextAttemptAtMs > now) {
    drainAt(t, w, head.nextAttemptAtMs)
    return 'wait'
  }
  if (!(await holdLease(t, w))) return 'stop'
  const sending = { timeoutMs: options.pushTimeoutMs, signal: t.closing.signal }
  const outcome =
    delivery.method === 'push'
      ? await pushSet(delivery.endpointUrl, head.set, { authorization: delivery.authorization, ...sending })
      : await delivery.send(head, sending)
  // Stopping: the push was aborted or its answer may be lost; the next instance sends the same SET again.
  if (stopping(t)) return 'stop'
  return settlePush(t, w, head, outcome)
}

/** Records what the receiver answered to a push of the head. */
async function settlePush(t: TransmitterState, w: PushWorker, head: SsfOutboxRow, outcome: PushOutcome): Promise<Step> {
  const { store, metrics, logger } = t.options
  const { name } = w.receiver
  if (outcome.kind === 'delivered') {
    // Noted first: whoever sees the entry settled sees the success too.
    await store.noteOutcome(name, t.wallMs(), undefined)
    await store.delivered(name, [head.jti])
    metrics?.delivered(name, 'push', 1)
    logger.debug({ receiver: name, set_jti: head.jti, attempts: head.attempts + 1 }, 'SET delivered')
    return 'next'
  }
  if (outcome.kind === 'refused') {
    // RFC 8935 §2.3: the receiver will never take this SET; sending it again would not help.
    await store.noteOutcome(name, t.wallMs(), `refused: ${outcome.err}`)
    await store.failed(name, new Map([[head.jti, `${outcome.err}: ${outcome.description}`]]))
    metrics?.failed(name, 'refused', 1)
    logger.error({ receiver: name, set_jti: head.jti, err: outcome.err, description: outcome.description }, 'SET refused by its receiver (400)')
    return 'next'
  }
  return retryOrGiveUp(t, w, head, outcome.reason)
}

/** A push that may succeed later: given up after `ssf.retry.max_attempts`, else tried again after the back-off. */
async function retryOrGiveUp(t: TransmitterState, w: PushWorker, head: SsfOutboxRow, reason: string): Promise<Step> {
  const { store, metrics, logger, retry } = t.options
  const { name } = w.receiver
  const attempts = head.attempts + 1
  await store.noteOutcome(name, t.wallMs(), reason)
  if (attempts >= retry.maxAttempts) {
    await store.failed(name, new Map([[head.jti, reason]]))
    metrics?.failed(name, 'attempts', 1)
    logger.error({ receiver: name, set_jti: head.jti, attempts, reason }, 'SET given up after ssf.retry.max_attempts pushes')
    return 'next'
  }
  const next = t.wallMs() + retryDelayMs(retry, attempts, t.random)
  await store.retryLater(name, head.jti, attempts, next, reason)
  metrics?.retried(name)
  logger.info({ receiver: name, set_jti: head.jti, attempts, reason, retry_in_ms: next - t.wallMs() }, 'SET push failed; retrying')
  drainAt(t, w, next)
  return 'wait'
}

/**
 * The wait after the `attempts`-th failed push: exponential back-off, drawn
 * from [ceiling/2, ceiling), so that a receiver coming back is not hit by
 * every SET at once. `random` returns [0, 1).
 */
export function retryDelayMs(retry: RetryPolicy, attempts: number, random: () => number): number {
  const ceiling = Math.min(retry.maxDelayMs, retry.initialDelayMs * 2 ** (attempts - 1))
  return Math.max(1, Math.round(ceiling / 2 + (random() * ceiling) / 2))
}

/** Stops the retry timer and gives the lease back, when held, so that another instance can take over at once. */
export async function releaseLease(t: TransmitterState, w: PushWorker): Promise<void> {
  clearTimeout(w.retryTimer)
  if (w.leaseUntil === 0) return
  w.leaseUntil = 0
  await t.options.store.release(w.receiver.name, t.owner)
}
