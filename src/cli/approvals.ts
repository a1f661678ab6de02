/**
 * `mandate approvals list|show|approve|deny`: human approval of agents'
 * requests (OpenID CIBA, poll mode) through a running broker's admin API
 * (/admin/approvals). A table for people, `--json` for scripts; failures as
 * one line and an exit code (client.ts). The binding message comes first
 * and quoted: the approver compares it with what the agent's user sees.
 */
import Table from 'cli-table3'
import { adminRequest, resolveBroker, run, type BrokerOptions } from './client.js'
import { time, wrap } from './output.js'
import { printable } from './printable.js'

export interface ApprovalsOptions extends BrokerOptions {
  status?: string
  agent?: string
  limit?: string
  offset?: string
  note?: string
}

/** An approval as the admin API sends it. */
export interface ApprovalJson {
  id: string
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled' | 'issued'
  agent: string
  user: { iss: string; sub: string }
  audience: string
  scopes: string[]
  authorization_details: Record<string, unknown>[]
  binding_message: string | null
  purpose: string | null
  owner: string | null
  approvers: string
  created_at: string
  expires_at: string
  decided_at: string | null
  decided_by: string | null
  decided_via: 'admin_api' | 'link' | 'reuse' | null
  note: string | null
}

const write = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
const plain = () => ({ style: { head: [] as string[], border: [] as string[] } })
const unruled = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' }

/** A value of a detail in one line: scalars as they are, strings quoted only when they hold a space, anything else as JSON. */
function scalar(value: unknown): string {
  if (typeof value === 'string') return /[\s"]/.test(value) || value === '' ? JSON.stringify(value) : value
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value)
  // JSON holds no undefined: a member parsed from JSON never is; printed as nothing all the same.
  if (value === undefined) return ''
  return JSON.stringify(value)
}

/** `key=value` pairs of an object, nested objects flattened with dots (`creditor.name=Bob`), arrays as `[a,b]`. */
function pairs(value: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(value).flatMap(([k, v]) => {
    const key = `${prefix}${k}`
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return pairs(v as Record<string, unknown>, `${key}.`)
    if (Array.isArray(v)) return [`${key}=[${v.map(scalar).join(',')}]`]
    return [`${key}=${scalar(v)}`]
  })
}

/**
 * RFC 9396 details, one line each: the type, then its members as
 * `key=value` (`payment_initiation: amount=120 currency=EUR`). Printable:
 * every member is the agent's text.
 */
export function detailsText(details: readonly Record<string, unknown>[]): string[] {
  return details.map((d) => {
    const { type, ...rest } = d
    const members = pairs(rest)
    return printable(`${scalar(type)}${members.length === 0 ? '' : `: ${members.join(' ')}`}`)
  })
}

/**
 * The binding message as shown: a JSON string, so that a quote inside cannot
 * pass for its end, its control characters escaped; `(none)` when the agent
 * sent none.
 */
export const bindingText = (a: ApprovalJson) => (a.binding_message === null ? '(none)' : printable(JSON.stringify(a.binding_message)))

const userText = (a: ApprovalJson) => `${a.user.sub} (${a.user.iss})`

/** `approved 2025-06-01 12:00:00Z by alice via admin_api`, or `-` while undecided. */
function decision(a: ApprovalJson): string {
  if (a.decided_at === null) return '-'
  return `${time(a.decided_at)}${a.decided_by === null ? '' : ` by ${a.decided_by}`}${a.decided_via === null ? '' : ` via ${a.decided_via}`}`
}

/** One approval, field by field, after its binding message. */
export function approvalTable(a: ApprovalJson): string {
  const rows: [string, string][] = [
    ['id', a.id],
    ['status', a.status],
    ['agent', a.agent],
    ['purpose', a.purpose ?? '-'],
    ['owner', a.owner ?? '-'],
    ['user', userText(a)],
    ['audience', a.audience],
    ['scopes', a.scopes.join(' ') || '-'],
    ['approvers', a.approvers],
    ['requested', time(a.created_at)],
    ['expires', time(a.expires_at)],
    ['decided', decision(a)],
    ['note', a.note ?? '-'],
  ]
  const t = new Table({ ...plain(), chars: unruled })
  for (const [k, v] of rows) t.push({ [k]: wrap(v, 72) })
  const details = detailsText(a.authorization_details)
  const lines = [`binding message: ${bindingText(a)}`, t.toString(), 'authorization details:']
  lines.push(...(details.length === 0 ? ['  none'] : details.map((d) => `  ${d}`)))
  return lines.join('\n')
}

/**
 * Many approvals, one a row; the binding message and the details in full,
 * wrapped: at a terminal to fit its width (16 characters each at least),
 * else at 26 and 40.
 */
export function approvalsTable(list: readonly ApprovalJson[], columns = process.stdout.isTTY ? process.stdout.columns : undefined): string {
  const head = ['id', 'status', 'agent', 'user', 'audience / scopes', 'binding message', 'details', 'expires']
  const rows = list.map((a) => ({
    // Every column but the binding message's and the details'.
    cells: [
      printable(a.id),
      a.status,
      printable(a.agent),
      wrap(a.user.sub, 20),
      `${wrap(a.audience, 32)}\n${wrap(a.scopes.join(' ') || '-', 32)}`,
      time(a.expires_at),
    ],
    binding: bindingText(a),
    details: detailsText(a.authorization_details),
  }))
  const fixedHead = [...head.slice(0, 5), head[7]!]
  const width = (cell: string) => Math.max(...cell.split('\n').map((l) => l.length))
  const fixed = fixedHead.reduce((sum, h, i) => sum + Math.max(h.length, ...rows.map((r) => width(r.cells[i]!))) + 2, 0)
  // What the other columns and the borders leave to the binding message and the details, shared.
  const room = columns === undefined ? 66 : Math.max(32, columns - fixed - head.length - 1)
  const binding = Math.min(26, Math.max(16, Math.floor(room * 0.4)))
  const details = Math.max(16, room - binding)
  const t = new Table({ ...plain(), head })
  for (const { cells, binding: message, details: lines } of rows) {
    const detailCell = lines.map((d) => wrap(d, details - 2)).join('\n') || '-'
    t.push([...cells.slice(0, 5), wrap(message, binding - 2), detailCell, cells[5]!])
  }
  return t.toString()
}

/** `mandate approvals list`: newest first as the broker orders them; the next page's `--offset` on stderr. */
export const approvalsList = (o: ApprovalsOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const query = new URLSearchParams()
    for (const k of ['status', 'agent', 'limit', 'offset'] as const) if (o[k] !== undefined) query.set(k, o[k])
    const page = (await adminRequest(b, 'GET', `/admin/approvals${query.size === 0 ? '' : `?${query.toString()}`}`)) as {
      approvals: ApprovalJson[]
      total: number
    }
    if (o.json === true) return void write(JSON.stringify(page))
    if (page.approvals.length === 0) return void write(o.status === undefined ? 'no approvals' : `no ${o.status} approvals`)
    write(approvalsTable(page.approvals))
    write(`${page.total} approval${page.total === 1 ? '' : 's'}`)
    const next = Number(o.offset ?? 0) + page.approvals.length
    if (next < page.total) process.stderr.write(`more: --offset ${next}\n`)
  })

/** `mandate approvals show ID`. */
export const approvalsShow = (id: string, o: ApprovalsOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const a = (await adminRequest(b, 'GET', `/admin/approvals/${encodeURIComponent(id)}`)) as ApprovalJson
    if (o.json === true) return void write(JSON.stringify(a))
    write(approvalTable(a))
    if (a.status === 'pending') write(`\ndecide: mandate approvals approve ${id}  (or deny ${id}); compare the binding message with what the user sees`)
  })

const decide = (decisionName: 'approve' | 'deny') => (id: string, o: ApprovalsOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const body = { decision: decisionName, ...(o.note === undefined ? {} : { note: o.note }) }
    const a = (await adminRequest(b, 'POST', `/admin/approvals/${encodeURIComponent(id)}`, body)) as ApprovalJson
    if (o.json === true) return void write(JSON.stringify(a))
    const what = printable(`${a.agent} for ${a.user.sub} at ${a.audience}${a.scopes.length === 0 ? '' : ` (${a.scopes.join(' ')})`}`)
    write(`${a.status} ${printable(a.id)}: ${what}`)
    write(`binding message: ${bindingText(a)}`)
    write(
      a.status === 'approved'
        ? 'the agent gets its token at its next poll'
        : a.status === 'denied'
          ? 'the agent’s next poll is refused (access_denied)'
          : `now ${a.status}`,
    )
  })

/** `mandate approvals approve ID [--note TEXT]`: 409 when it is no longer pending, 403 when this key's person may not decide it. */
export const approvalsApprove = decide('approve')
/** `mandate approvals deny ID [--note TEXT]`. */
export const approvalsDeny = decide('deny')
