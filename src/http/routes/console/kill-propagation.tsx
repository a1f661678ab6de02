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
  instances: z.array(z.looseObject({ instance: z.string(), live: z.boolean().optional(), applied_at: At })).default([]),
  feed_subscribers: z.array(z.looseObject({ subscriber: z.string(), instance: z.string().nullable().optional(), sent_at: At })).default([]),
  ssf_receivers: z
    .array(z.looseObject({ receiver: z.string().optional(), stream: z.string().optional(), state: z.string().nullable().optional(), delivered_at: At }))
    .default([]),
})
/** SSF delivery states that need nothing more: delivered, or the revocation predates the receiver's stream. */
const SSF_DONE = new Set(['delivered', 'before_stream'])

/** Milliseconds between two refreshes of a kill's propagation while it is incomplete. */
export const PROPAGATION_REFRESH_MS = 2000

interface Row {
  readonly what: string
  /** `what` within a sentence. */
  readonly noun: string
  readonly name: string
  readonly where: string
  /** When it applied, was sent, or was delivered it. */
  readonly at: string | undefined
  readonly state: string
  /** Still waited for: neither done nor gone. */
  readonly waiting: boolean
}

function rowsOf(p: z.infer<typeof PropagationBody>): Row[] {
  const at = (t: string | null | undefined) => t ?? undefined
  return [
    ...p.instances.map((i) => {
      const applied = typeof i.applied_at === 'string'
      const state = applied ? 'applied' : i.live === false ? 'stopped' : 'waiting'
      return { what: 'Broker instance', noun: 'broker instance', name: i.instance, where: '', at: at(i.applied_at), state, waiting: state === 'waiting' }
    }),
    ...p.feed_subscribers.map((f) => {
      const sent = typeof f.sent_at === 'string'
      return {
        what: 'Feed subscriber',
        noun: 'feed subscriber',
        name: f.subscriber,
        where: f.instance ?? '',
        at: at(f.sent_at),
        state: sent ? 'sent' : 'waiting',
        waiting: !sent,
      }
    }),
    ...p.ssf_receivers.map((r) => {
      const state = r.state ?? (typeof r.delivered_at === 'string' ? 'delivered' : 'waiting')
      return {
        what: 'SSF receiver',
        noun: 'SSF receiver',
        name: r.receiver ?? r.stream ?? '?',
        where: '',
        at: at(r.delivered_at),
        state,
        waiting: !SSF_DONE.has(state),
      }
    }),
  ]
}

export function Propagation({ answer }: { answer: ApiAnswer<unknown> }) {
  if (!answer.ok) {
    const text = answer.status === 404 ? 'not available from this broker' : `unavailable (${answer.description})`
    return <p class="muted">{`Propagation status: ${text}.`}</p>
  }
  const parsed = PropagationBody.safeParse(answer.body)
  if (!parsed.success) return <p class="muted">Propagation status: the broker’s answer is not one this console reads.</p>
  const p = parsed.data
  const rows = rowsOf(p)
  const waiting = rows.filter((r) => r.waiting)
  const last = rows
    .flatMap((r) => (r.at === undefined ? [] : [r.at]))
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
      {`Waiting for: ${waiting.length === 0 ? 'the broker to confirm' : waiting.map((w) => `${w.noun} ${w.name}`).join(', ')}.`}
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
                <td>{r.at === undefined ? <span class="muted">not yet</span> : <Time at={r.at} />}</td>
                <td>
                  <Badge state={r.waiting ? 'pending' : r.state === 'failed' ? 'denied' : r.state === 'stopped' ? 'neutral' : 'issued'} label={r.state} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
  return section
}
