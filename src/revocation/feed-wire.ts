/**
 * Wire format of the broker's revocation feed (`GET /revocations/feed`,
 * server-sent events), shared by the broker route and the verifier's client.
 *
 * Events, in order:
 * - `snapshot` (with `id`): `{"fresh": bool, "lag_ms": n, "records": [...]}`,
 *   every record the broker's mirror holds. Replaces the client's whole state.
 *   Sent first, and again whenever the broker's mirror resynced or a resume
 *   cannot be served exactly.
 * - `revocation` (with `id`): one record, to apply (idempotent: a record with
 *   a known id replaces the old version, e.g. when a kill is lifted).
 * - `heartbeat` (no `id`): `{"fresh": bool, "lag_ms": n}` every 250 ms. A
 *   client that hears none within its bound, or hears `fresh: false`, must
 *   treat its revocation state as unknown.
 *
 * Records use the canonical JSON of {@link encodeRevocation}. Event ids are
 * `<instance>.<sequence>`: the sequence increases within one broker process,
 * and the instance part keeps a reconnecting client's `Last-Event-ID` from
 * being read against another process's sequence.
 */
import { z } from 'zod'
import type { Revocation } from './port.js'
import { decodeRevocation, encodeRevocation } from './codec.js'

export const FEED_EVENTS = { snapshot: 'snapshot', revocation: 'revocation', heartbeat: 'heartbeat' } as const

export interface FeedFreshness {
  /** False when the broker's own mirror is stale: the client's state is unknown too. */
  readonly fresh: boolean
  readonly lagMs: number
}

export interface FeedSnapshot extends FeedFreshness {
  readonly records: readonly Revocation[]
}

export function encodeSnapshot(records: readonly Revocation[], freshness: FeedFreshness): string {
  return `{"fresh":${freshness.fresh},"lag_ms":${Math.round(freshness.lagMs)},"records":[${records.map(encodeRevocation).join(',')}]}`
}

export function encodeHeartbeat(freshness: FeedFreshness): string {
  return JSON.stringify({ fresh: freshness.fresh, lag_ms: Math.round(freshness.lagMs) })
}

export { encodeRevocation as encodeFeedRecord }

const Freshness = z.object({ fresh: z.boolean(), lag_ms: z.number().nonnegative() })
const Snapshot = Freshness.extend({ records: z.array(z.unknown()) })

/** Undefined when `data` is no snapshot; `unreadable` counts records this version could not read. */
export function decodeSnapshot(data: string): (FeedSnapshot & { readonly unreadable: number }) | undefined {
  const parsed = Snapshot.safeParse(parseJson(data))
  if (!parsed.success) return undefined
  const records: Revocation[] = []
  let unreadable = 0
  for (const r of parsed.data.records) {
    const record = decodeRevocation(JSON.stringify(r))
    if (record === undefined) unreadable++
    else records.push(record)
  }
  return { fresh: parsed.data.fresh, lagMs: parsed.data.lag_ms, records, unreadable }
}

export function decodeHeartbeat(data: string): FeedFreshness | undefined {
  const parsed = Freshness.safeParse(parseJson(data))
  return parsed.success ? { fresh: parsed.data.fresh, lagMs: parsed.data.lag_ms } : undefined
}

export { decodeRevocation as decodeFeedRecord }

/** Event id of `sequence` on broker process `instance`. */
export function feedEventId(instance: string, sequence: number): string {
  return `${instance}.${sequence}`
}

/** The sequence a `Last-Event-ID` names on `instance`; undefined when it names another process or nothing readable. */
export function feedSequence(instance: string, lastEventId: string | undefined): number | undefined {
  if (lastEventId === undefined || !lastEventId.startsWith(`${instance}.`)) return undefined
  const rest = lastEventId.slice(instance.length + 1)
  if (!/^(0|[1-9][0-9]{0,14})$/.test(rest)) return undefined
  return Number(rest)
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}
