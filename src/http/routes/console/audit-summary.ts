/**
 * One audit record in a line, for the Audit page's table: what a responder
 * scans for (the audience and scopes of a token, the reason of a denial, the
 * target of a kill), and a badge class for its event.
 */
import { AUDIT_EVENTS } from '../../../audit/port.js'

const str = (v: unknown) => (typeof v === 'string' ? v : '')
const list = (v: unknown) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string').join(' ') : '')

/** The event filter's choices: each family (`token.*`), then its events. */
export const EVENT_CHOICES: readonly { value: string; label: string }[] = (() => {
  const out: { value: string; label: string }[] = []
  const families = [...new Set(AUDIT_EVENTS.map((e) => e.slice(0, e.indexOf('.'))))]
  for (const f of families) {
    out.push({ value: `${f}.*`, label: `${f}.* (every ${f} event)` })
    for (const e of AUDIT_EVENTS.filter((t) => t.startsWith(`${f}.`))) out.push({ value: e, label: e })
  }
  return out
})()

/** The badge class of an event (its word is the event itself). */
export function eventBadge(event: string): string {
  if (event === 'token.issued') return 'issued'
  if (event === 'token.denied' || event === 'token.withheld' || event === 'revocation.created' || event === 'agent.anomaly') return 'denied'
  if (event === 'revocation.lifted') return 'lifted'
  if (event.startsWith('approval.')) return 'pending'
  return 'neutral'
}

/** A one-line summary of a record's own fields. */
export function summarize(record: Record<string, unknown>): string {
  const event = str(record['event'])
  switch (event) {
    case 'token.issued':
      return `${str(record['aud'])} · ${list(record['scopes']) || 'no scope'} · ${Number(record['lifetime'])} s`
    case 'token.denied':
      return `${str(record['error'])}: ${str(record['reason'])}`
    case 'token.withheld':
      return str(record['reason'])
    case 'revocation.created':
    case 'revocation.lifted': {
      const r = (record['revocation'] ?? {}) as Record<string, unknown>
      const target = ['agent', 'sub', 'jti', 'instance'].flatMap((k) => (typeof r[k] === 'string' ? [`${k} ${str(r[k])}`] : [])).join(', ')
      return `${str(r['kind'])} ${target}: ${str(r['reason'])} (by ${str(record['by'])})`
    }
    case 'policy.loaded':
    case 'policy.unloaded':
      return `${str(record['source'])} (${str(record['sha256']).slice(0, 12)}…)`
    case 'key.rotated':
      return `kid ${str(record['kid'])}`
    case 'agent.attested':
      return `by ${str(record['by'])}${str(record['note']) === '' ? '' : `: ${str(record['note'])}`}`
    case 'agent.lifecycle':
      return `${str(record['transition'])}: ${str(record['detail'])}`
    case 'agent.anomaly':
      return `${str(record['rule'])} (${str(record['action'])}): ${str(record['detail'])}`
    case 'approval.requested':
      return `${str(record['aud'])} · ${list(record['scopes'])} · approvers ${str(record['approvers'])}`
    case 'approval.decided':
      return `${str(record['decision'])} by ${str(record['by'])}`
    case 'approval.cancelled':
      return str(record['reason'])
    default:
      // admin.* reads: who asked what.
      return `${str(record['by'])} ${str(record['request'])}`.trim()
  }
}
