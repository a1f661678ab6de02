/**
 * Tables for people; `--json` prints the broker's answer instead, for
 * scripts. No colours: the output is as readable in a log, a pipe or a
 * ticket as in a terminal.
 */
import Table from 'cli-table3'
import { printable } from './printable.js'

/** A revocation record as the admin API sends it (revocationJson in src/http/routes/admin-revocations.ts). */
export interface RevocationJson {
  id: string
  kind: string
  target: Record<string, unknown>
  reason: string
  created_by: string
  created_at: string | null
  expires_at: string | null
  in_force: boolean | null
  lifted_at: string | null
  lifted_by: string | null
}

/** cli-table3 colours the header red and the border grey unless told not to. */
const plain = () => ({ style: { head: [] as string[], border: [] as string[] } })
/** No rule between rows. */
const unruled = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' }

/**
 * Wraps at spaces to `width` characters a line, breaking a longer word (an
 * issuer URL) rather than cutting it short: an identifier in a table is
 * copied from it, so none is ever truncated.
 */
export function wrap(text: string, width: number): string {
  const lines: string[] = []
  let line = ''
  for (const word of printable(text).split(' ').filter(Boolean)) {
    if (line !== '' && line.length + 1 + word.length <= width) {
      line += ` ${word}`
      continue
    }
    if (line !== '') lines.push(line)
    line = word
    while (line.length > width) {
      lines.push(line.slice(0, width))
      line = line.slice(width)
    }
  }
  lines.push(line)
  return lines.join('\n')
}

/** `2025-06-01T12:00:00.000Z` → `2025-06-01 12:00:00Z`. */
export const time = (iso: string | null) => (iso === null ? '-' : iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))

export const targetText = (r: RevocationJson) =>
  Object.entries(r.target)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ')

/** A kill (agent, user) holds until lifted; a token revocation until the token would have expired anyway. */
function state(r: RevocationJson): string {
  if (r.in_force === null) return `until ${time(r.expires_at)}`
  return r.in_force ? 'in force' : `lifted ${time(r.lifted_at)} by ${r.lifted_by ?? '-'}`
}

/** One record, field by field. */
export function revocationTable(r: RevocationJson): string {
  const rows: [string, string][] = [
    ['id', r.id],
    ['kind', r.kind],
    ['target', targetText(r)],
    ['reason', r.reason],
    ['created', `${time(r.created_at)} by ${r.created_by}`],
    ['state', state(r)],
  ]
  const t = new Table({ ...plain(), chars: unruled })
  for (const [k, v] of rows) t.push({ [k]: wrap(v, 72) })
  return t.toString()
}

/** Many records, one a row; at a terminal, long targets and reasons wrap to fit its width, the other cells take a line per part. */
export function revocationsTable(list: readonly RevocationJson[], columns = process.stdout.isTTY ? process.stdout.columns : undefined): string {
  const stateCell = (r: RevocationJson) =>
    r.in_force === null ? `until\n${time(r.expires_at)}` : r.in_force ? 'in force' : `lifted\n${time(r.lifted_at)}\nby ${printable(r.lifted_by ?? '-')}`
  const rows = list.map((r) => [
    printable(r.id),
    printable(r.kind),
    targetText(r),
    stateCell(r),
    `${time(r.created_at)}\nby ${printable(r.created_by)}`,
    r.reason,
  ])
  const head = ['id', 'kind', 'target', 'state', 'created', 'reason']
  const width = (cell: string) => Math.max(...cell.split('\n').map((l) => l.length))
  const natural = head.map((h, i) => Math.max(h.length, ...rows.map((row) => width(row[i]!))) + 2)
  // What the other columns and the borders leave to target and reason, shared; 16 each at least.
  const room = columns === undefined ? Infinity : Math.max(32, columns - natural[0]! - natural[1]! - natural[3]! - natural[4]! - head.length - 1)
  const target = Math.min(natural[2]!, Math.max(16, Math.floor(room / 2)), 56)
  const reason = Math.min(natural[5]!, Math.max(16, room - target), 42)
  const t = new Table({ ...plain(), head })
  for (const row of rows) t.push([row[0]!, row[1]!, wrap(row[2]!, target - 2), row[3]!, row[4]!, wrap(row[5]!, reason - 2)])
  return t.toString()
}
