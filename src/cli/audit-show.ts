/**
 * `mandate audit show REQUEST_ID`: the full audit record(s) of one token
 * request, from a running broker (GET /admin/audit/requests/{id}, auditor
 * role). The denied caller was told only the standard error and the id
 * (`X-Request-Id`, `error_uri`); the agent's owner or an auditor reads the
 * reason here. Fields for people, `--json` for scripts.
 */
import { DENIAL_URN_PREFIX } from '../http/routes/token.js'
import { adminRequest, CliError, resolveBroker, run, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import { printable } from './printable.js'

interface Entry {
  id: number
  chain: string
  seq: number
  hash: string
  record: Record<string, unknown>
}

/** The fields people look for first, in this order; the rest of the record follows. */
const FIRST = ['event', 'at', 'agent', 'sub_iss', 'sub', 'error', 'reason', 'requested_aud', 'requested_scopes', 'aud', 'scopes', 'jti', 'actors']
/** Bookkeeping of the hash chain, shown on the record's header line instead. */
const SKIP = new Set(['v', 'chain', 'seq'])

function valueText(key: string, v: unknown): string {
  if (key === 'at' || key === 'exp') return typeof v === 'number' ? `${new Date(v * 1000).toISOString()} (${v})` : String(v)
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(' ')
  return typeof v === 'string' ? v : JSON.stringify(v)
}

export function entryLines(e: Entry): string[] {
  const lines = [`record ${e.id} (chain ${e.chain} seq ${e.seq}, hash ${e.hash.slice(0, 16)}…)`]
  const keys = [...FIRST.filter((k) => k in e.record), ...Object.keys(e.record).filter((k) => !FIRST.includes(k) && !SKIP.has(k))]
  const width = Math.max(...keys.map((k) => k.length))
  for (const k of keys) lines.push(`  ${k.padEnd(width)}  ${printable(valueText(k, e.record[k]))}`)
  return lines
}

/** `mandate audit show REQUEST_ID` (or the `urn:mandate:request:` URI a denial's error_uri holds). */
export const auditShow = (requestId: string, o: BrokerOptions) =>
  run(async () => {
    const id = requestId.startsWith(DENIAL_URN_PREFIX) ? requestId.slice(DENIAL_URN_PREFIX.length) : requestId
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id))
      throw new CliError('REQUEST_ID must be 1-64 letters, digits, ".", "_" or "-" (the answer’s X-Request-Id)', EXIT.USAGE)
    const b = await resolveBroker(o)
    const answer = (await adminRequest(b, 'GET', `/admin/audit/requests/${id}`)) as { request_id: string; records: Entry[] }
    if (o.json === true) return void process.stdout.write(`${JSON.stringify(answer)}\n`)
    const out = [`request ${printable(answer.request_id)}: ${answer.records.length} record${answer.records.length === 1 ? '' : 's'}`]
    for (const e of answer.records) out.push(...entryLines(e))
    process.stdout.write(`${out.join('\n')}\n`)
  })
