/**
 * Wire format of the broker's revocation feed (`GET /revocations/feed`,
 * server-sent events), shared by the broker route and the verifier's client.
 * Read by hand, strictly: an event that is not exactly what this says is
 * unreadable, and the client treats its revocation state as unknown.
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
import { decodeRevocation, encodeRevocation, isRecord, readRevocation } from './codec.js'
import type { Revocation } from './revocation.js'

/**
 * The broker's RFC 8414 metadata member naming the feed's URL. Not a
 * registered name: RFC 8414 §2 allows additional members, and the `mandate_`
 * prefix keeps this one from ever meaning something else.
 */
export const FEED_METADATA_MEMBER = 'mandate_revocation_feed_endpoint'

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

/** `{"fresh": bool, "lag_ms": n}` with n a finite number ≥ 0; undefined otherwise. */
function readFreshness(json: unknown): FeedFreshness | undefined {
  if (!isRecord(json)) return undefined
  const { fresh, lag_ms: lagMs } = json
  if (typeof fresh !== 'boolean' || typeof lagMs !== 'number' || !Number.isFinite(lagMs) || lagMs < 0) return undefined
  return { fresh, lagMs }
}

/** Undefined when `data` is no snapshot; `unreadable` counts records this version could not read. */
export function decodeSnapshot(data: string): (FeedSnapshot & { readonly unreadable: number }) | undefined {
  const json = parseJson(data)
  const freshness = readFreshness(json)
  const list = isRecord(json) ? json['records'] : undefined
  if (freshness === undefined || !Array.isArray(list)) return undefined
  const records: Revocation[] = []
  let unreadable = 0
  for (const r of list as unknown[]) {
    const record = readRevocation(r)
    if (record === undefined) unreadable++
    else records.push(record)
  }
  return { ...freshness, records, unreadable }
}

export function decodeHeartbeat(data: string): FeedFreshness | undefined {
  return readFreshness(parseJson(data))
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
