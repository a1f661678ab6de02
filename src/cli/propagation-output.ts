/**
 * `mandate revoke status <id>` for people: where a revocation has reached
 * (GET /admin/revocations/{id}/propagation), one table per kind of reader.
 * No colours; text the broker sends goes through `printable`.
 */
import Table from 'cli-table3'
import type { RevocationPropagation } from '../http/routes/admin-revocation-propagation.js'
import { time } from './output.js'
import { printable } from './printable.js'

const plain = () => ({ style: { head: [] as string[], border: [] as string[] } })

function table(head: string[], rows: readonly string[][]): string {
  const t = new Table({ ...plain(), head })
  for (const row of rows) t.push(row.map(printable))
  return t.toString()
}

/** The answer as a summary line and three tables (an empty one says so instead). */
export function propagationTable(p: RevocationPropagation): string {
  const out = [
    `${p.kind} ${p.revocation_id} made ${time(p.created_at)}: ${p.complete ? 'COMPLETE' : 'NOT COMPLETE'} (checked ${time(p.checked_at)})`,
    table(
      ['instance', 'live', 'applied', 'last seen'],
      p.instances.map((i) => [i.instance, i.live ? 'yes' : 'no', i.applied_at === null ? 'NOT YET' : time(i.applied_at), time(i.last_seen)]),
    ),
  ]
  out.push(
    p.feed_subscribers.length === 0
      ? 'no open revocation-feed stream'
      : table(
          ['feed subscriber', 'instance', 'connected', 'sent (written, not acknowledged)'],
          p.feed_subscribers.map((f) => [f.subscriber, f.instance, time(f.connected_at), f.sent_at === null ? 'NOT YET' : time(f.sent_at)]),
        ),
  )
  out.push(
    p.ssf_receivers.length === 0
      ? 'no SSF receiver'
      : table(
          ['SSF receiver', 'method', 'state', 'attempts', 'last error'],
          p.ssf_receivers.map((r) => [r.receiver, r.method, r.state, String(r.attempts), r.last_error ?? '-']),
        ),
  )
  return out.join('\n')
}
