/**
 * Where one revocation's SETs stand for each receiver (the propagation view
 * of the admin API): read from the outbox, never written.
 */
import type { Revocation } from '../revocation/port.js'
import { eventsOf } from './events.js'
import type { RevocationEntry, SsfStore } from './outbox.js'
import type { Receiver } from './transmitter.js'

/**
 * - `delivered`: every SET of the revocation was delivered (a push answered
 *   202, or a poll acknowledged it);
 * - `pending`: queued, not delivered yet (or not every SET is queued yet);
 * - `failed`: a SET was given up (refused, too many attempts, too old);
 * - `not_queued`: the scan has not reached it yet;
 * - `before_stream`: made before the receiver's stream began (`start: now`):
 *   it is never sent to that receiver.
 */
export type SetDeliveryState = 'delivered' | 'pending' | 'failed' | 'not_queued' | 'before_stream'

export interface SetDelivery {
  readonly receiver: string
  readonly method: 'push' | 'poll'
  readonly state: SetDeliveryState
  /** Delivery attempts of its SETs so far (pushes; polls count none). */
  readonly attempts: number
  readonly lastError: string | undefined
  /** Epoch ms its first SET was queued; undefined when none is. */
  readonly enqueuedAtMs: number | undefined
}

/** The SSF receivers' (push and poll, not webhooks') state for `r`, in configuration order. */
export async function deliveryOf(store: SsfStore, receivers: readonly Receiver[], r: Revocation): Promise<readonly SetDelivery[]> {
  const types = new Set<string>(eventsOf(r).map((e) => e.type))
  const entries = (await store.entriesOfRevocation(r.id)).filter((e) => types.has(e.eventType))
  const out: SetDelivery[] = []
  for (const receiver of receivers) {
    const method = receiver.delivery.method
    if (method === 'webhook') continue
    const own = entries.filter((e) => e.receiver === receiver.name)
    const stream = own.length === 0 ? await store.stream(receiver.name) : undefined
    out.push({
      receiver: receiver.name,
      method,
      state: own.length === 0 && stream !== undefined && r.createdAt < stream.startAt ? 'before_stream' : stateOf(own, types.size),
      attempts: own.reduce((n, e) => n + e.attempts, 0),
      lastError: own.find((e) => e.lastError !== null)?.lastError ?? undefined,
      enqueuedAtMs: own[0]?.enqueuedAtMs,
    })
  }
  return out
}

/** The receiver's state from its queued SETs, `expected` of them in all. */
export function stateOf(own: readonly Pick<RevocationEntry, 'state'>[], expected: number): SetDeliveryState {
  if (own.length === 0) return 'not_queued'
  if (own.some((e) => e.state === 'failed')) return 'failed'
  if (own.length < expected || own.some((e) => e.state === 'pending')) return 'pending'
  return 'delivered'
}
