/**
 * Where a kill has reached (GET /admin/revocations/{id}/propagation): the
 * broker instances that applied it, the revocation-feed subscribers it was
 * written to, the Shared Signals receivers it was delivered to. Until every
 * one has it, the section refreshes itself (`data-refresh`, assets.ts).
 * Read loosely: a broker without the route says so in words.
 */
import { z } from 'zod'
import type { ApiAnswer } from './api.js'
import { Badge, Time } from './layout.js'

const At = z.string().nullable().optional()
const PropagationBody = z.looseObject({
  complete: z.boolean(),
  instances: z.array(z.looseObject({ instance: z.string(), applied_at: At, last_seen: At })).default([]),
  feed_subscribers: z.array(z.looseObject({ subscriber: z.string(), instance: z.string().nullable().optional(), connected_at: At, sent_at: At })).default([]),
  ssf_receivers: z.array(z.looseObject({ stream: z.string(), delivered_at: At, state: z.string().nullable().optional() })).default([]),
})

/** Milliseconds between two refreshes of a kill's propagation while it is incomplete. */
export const PROPAGATION_REFRESH_MS = 2000

interface Row {
  readonly what: string
  readonly name: string
  readonly where: string
  readonly at: string | null | undefined
  readonly state: string | undefined
}

export function Propagation({ answer }: { answer: ApiAnswer<unknown> }) {
  if (!answer.ok) {
    const text = answer.status === 404 ? 'not available from this broker' : `unavailable (${answer.description})`
    return <p class="muted">{`Propagation status: ${text}.`}</p>
  }
  const parsed = PropagationBody.safeParse(answer.body)
  if (!parsed.success) return <p class="muted">Propagation status: the broker’s answer is not one this console reads.</p>
  const p = parsed.data
  const rows: Row[] = [
    ...p.instances.map((i) => ({ what: 'Broker instance', name: i.instance, where: '', at: i.applied_at, state: undefined })),
    ...p.feed_subscribers.map((s) => ({ what: 'Feed subscriber', name: s.subscriber, where: s.instance ?? '', at: s.sent_at, state: undefined })),
    ...p.ssf_receivers.map((r) => ({ what: 'SSF receiver', name: r.stream, where: '', at: r.delivered_at, state: r.state ?? undefined })),
  ]
  const waiting = rows.filter((r) => r.at === null || r.at === undefined)
  const last = rows
    .flatMap((r) => (typeof r.at === 'string' ? [r.at] : []))
    .sort()
    .at(-1)
  const summary = p.complete ? (
    <p class="notice ok" role="status">
      {'Reached every instance and subscriber'}
      {last === undefined ? '.' : ' at '}
      {last === undefined ? null : <Time at={last} />}
    </p>
  ) : (
    <p class="notice warn" role="status">
      {`Waiting for: ${waiting.length === 0 ? 'the broker to confirm' : waiting.map((w) => `${w.what.toLowerCase()} ${w.name}`).join(', ')}.`}
    </p>
  )
  const section = (
    <div class="propagation" {...(p.complete ? {} : { 'data-refresh': String(PROPAGATION_REFRESH_MS) })}>
      {summary}
      {rows.length === 0 ? null : (
        <table>
          <caption>Where the kill has reached</caption>
          <thead>
            <tr>
              <th scope="col">Kind</th>
              <th scope="col">Name</th>
              <th scope="col">On instance</th>
              <th scope="col">Applied or sent</th>
              <th scope="col">State</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr>
                <td>{r.what}</td>
                <td class="mono">{r.name}</td>
                <td class="mono">{r.where}</td>
                <td>{r.at === null || r.at === undefined ? <Badge state="pending" label="waiting" /> : <Time at={r.at} />}</td>
                <td>{r.state ?? (r.at === null || r.at === undefined ? 'waiting' : 'done')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
  return section
}
