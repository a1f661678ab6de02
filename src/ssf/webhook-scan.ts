/**
 * A webhook's scan: its two sources into its one queue. The moments of the
 * revocation log (kills, lifts) past the stream's cursor, and the governance
 * records of the delegation log (record-outbox.ts) past its record cursor,
 * each a page at a time, so that one instance's scan never holds more than a
 * page in memory. Entries of both share the queue, so the webhook hears of
 * everything in the order it was enqueued, from one sender (the lease).
 */
import type { TransmitterState, WebhookDelivery } from './transmitter.js'
import type { RecordKey } from './record-outbox.js'

/** Moments or records read from a log per query while scanning. */
const SCAN_PAGE = 200

/** Both sources of a webhook into its queue; true when it enqueued any. Rejects when the database fails. */
export async function enqueueWebhookEntries(t: TransmitterState, name: string, delivery: WebhookDelivery): Promise<boolean> {
  const moments = await enqueueMoments(t, name, delivery)
  const records = delivery.records === undefined ? false : await enqueueRecords(t, name, delivery.records)
  return moments || records
}

/** The unsent moments of the revocation log into the queue, a page at a time; true when it enqueued any. */
async function enqueueMoments(t: TransmitterState, name: string, delivery: WebhookDelivery): Promise<boolean> {
  const { store, graceSeconds } = t.options
  let found = false
  for (;;) {
    const moments = await store.unsentMoments(name, delivery.types, graceSeconds, SCAN_PAGE)
    if (moments.length === 0) break
    const at = t.wallMs()
    await store.enqueue(
      name,
      moments.map((m) => delivery.entryOf(m, at)),
      Math.max(...moments.map((m) => m.at)),
    )
    found = true
    if (moments.length < SCAN_PAGE) break
  }
  return found
}

/**
 * The unsent governance records into the queue, a page at a time; true when
 * it enqueued any. A page resumes after the last record read, so that a
 * record no entry is made of (unreadable: logged) is not read again and again
 * within one scan; the cursor moves past it all the same.
 */
async function enqueueRecords(t: TransmitterState, name: string, records: NonNullable<WebhookDelivery['records']>): Promise<boolean> {
  const { store, graceSeconds } = t.options
  let found = false
  let after: RecordKey | undefined
  for (;;) {
    const page = await store.unsentRecords(name, records.selectors, graceSeconds, after, SCAN_PAGE)
    if (page.length === 0) break
    const at = t.wallMs()
    const entries = (await Promise.all(page.map(async (r) => records.entryOf(r, at)))).flatMap((e) => e ?? [])
    const last = page[page.length - 1]!
    await store.enqueueRecords(name, entries, last.at)
    if (entries.length > 0) found = true
    if (page.length < SCAN_PAGE) break
    after = { at: last.at, id: last.id }
  }
  return found
}
