/**
 * `mandate webhooks list`: every configured webhook's delivery state through
 * a running broker's admin API (GET /admin/webhooks, auditor role). A table
 * for people, `--json` for scripts.
 */
import Table from 'cli-table3'
import { adminRequest, resolveBroker, run, type BrokerOptions } from './client.js'
import { time } from './output.js'
import { printable } from './printable.js'

/** One webhook as the admin API sends it (src/http/routes/admin-webhooks.ts). */
export interface WebhookJson {
  id: string
  url: string
  events: string[]
  format: string
  last_success_at: string | null
  last_failure_at: string | null
  last_failure: string | null
  pending: number
  next_attempt_at: string | null
}

/** One webhook a row: what it is, then its state (the last failure and why, what waits, when it is tried again). */
export function webhooksTable(list: readonly WebhookJson[]): string {
  const t = new Table({ style: { head: [], border: [] }, head: ['id', 'url', 'events', 'last success', 'last failure', 'pending', 'next attempt'] })
  for (const w of list) {
    t.push([
      printable(w.id),
      `${printable(w.url)}\n(${printable(w.format)})`,
      w.events.map(printable).join('\n'),
      time(w.last_success_at),
      w.last_failure_at === null ? '-' : `${time(w.last_failure_at)}\n${printable(w.last_failure ?? '')}`,
      String(w.pending),
      time(w.next_attempt_at),
    ])
  }
  return t.toString()
}

const write = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)

export const webhooksList = (o: BrokerOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const answer = (await adminRequest(b, 'GET', '/admin/webhooks')) as { webhooks: WebhookJson[] }
    if (o.json === true) write(JSON.stringify(answer))
    else if (answer.webhooks.length === 0) write('no webhooks configured (notifications.webhooks)')
    else write(webhooksTable(answer.webhooks))
  })
