/**
 * The hostile-input suite's runner: sends one generated case to the real app
 * and checks every rule the suite holds the broker to, whatever the input:
 * no 5xx, the answer the generator derived from what it built, no token for
 * a refused request, an RFC 6749 §5.2 body for every refusal, no stack trace
 * and none of the case's credentials in the answer or in the lines logged
 * while it ran. Failures are plain errors (no vitest `expect`), so that
 * `npm run fuzz` runs the same checks outside vitest.
 */
import fc from 'fast-check'
import type { AuditEvent } from '../../src/audit/port.js'
import type { TestBroker } from '../support/broker.js'

/** One acceptable answer. */
export type Outcome =
  /**
   * 200 with a token, and exactly one new `token.issued` record; its
   * `token_type` is `tokenType` (default Bearer), and with `jkt` the token is
   * bound to that key (`cnf.jkt`, RFC 9449 §6.1).
   */
  | { readonly kind: 'token'; readonly tokenType?: string; readonly jkt?: string }
  /**
   * An error body `{ error }` with this status; with `description`, exactly
   * that `error_description` (one text for every failed check: no oracle),
   * with `headers`, these answer headers exactly.
   */
  | {
      readonly kind: 'error'
      readonly status: number
      readonly error: string
      readonly description?: string
      readonly headers?: Readonly<Record<string, string>>
    }
  /** RFC 7662 §2.2: exactly `{"active": false}`. */
  | { readonly kind: 'inactive' }
  /** RFC 7662 §2.2: `active: true` for a token issued to `clientId`. */
  | { readonly kind: 'active'; readonly clientId: string }
  /** A success without a token (RFC 7009 §2.2, admin reads, metadata). */
  | { readonly kind: 'ok'; readonly status: number }
  /** 405 naming at least these methods in `Allow`. */
  | { readonly kind: 'method_not_allowed'; readonly allow: readonly string[] }
  /** GET /forward-auth allowed: 200, an empty body, `no-store`, and `X-Mandate-Agent` naming the token's holder. */
  | { readonly kind: 'forward_allowed'; readonly clientId: string }
  /** RFC 8935 §2.3 (RFC 8936 §2.4.4): an error body `{ err }` with this status. */
  | { readonly kind: 'set_error'; readonly status: number; readonly err: string }
  /** RFC 8936 §2.4: 200 `{ sets: {…}, moreAvailable }`. */
  | { readonly kind: 'polled' }

export const error = (status: number, code: string, description?: string, headers?: Readonly<Record<string, string>>): Outcome => ({
  kind: 'error',
  status,
  error: code,
  ...(description === undefined ? {} : { description }),
  ...(headers === undefined ? {} : { headers }),
})
export const INVALID_REQUEST = error(400, 'invalid_request')
export const INVALID_CLIENT = error(401, 'invalid_client')
/** A body over the limit: 413, and the body of an `invalid_request`. */
export const TOO_LARGE = error(413, 'invalid_request')

export interface HostileRequest {
  readonly method: string
  /** Path and query, as sent (already percent-encoded). */
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  readonly body?: Uint8Array
}

export interface HostileCase {
  /** What the generator built, e.g. "client_assertion: alg none". */
  readonly label: string
  readonly request: HostileRequest
  /** Every answer that is right for this input; the broker must give one of them. */
  readonly expected: readonly Outcome[]
  /** Credentials the request carries: none may appear in the answer or in a log line. */
  readonly secrets: readonly string[]
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/
/** Traces of an exception: stack frames, source paths, an error class with its message. */
const STACK = [/\bat (?:async )?[\w$.<>[\]]+ \(/, /\n\s+at /, /(?:file:\/\/|\/)[\w@./-]+\.(?:ts|js|mjs|cjs):\d+/, /node:internal/, /\b[A-Z]\w*Error: /]

const printable = (s: string, max: number) => {
  const t = JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s)
  return s.length > max ? `${t} (${s.length} chars)` : t
}

/** A readable one-paragraph account of a case, for failures and counterexamples. */
export function describeCase(c: HostileCase): string {
  const { method, path, headers, body } = c.request
  const h = Object.entries(headers).map(([k, v]) => `${k}: ${printable(v, 120)}`)
  const b = body === undefined ? 'no body' : `body ${printable(Buffer.from(body).toString('latin1'), 400)}`
  return `[${c.label}] ${method} ${printable(path, 200)} {${h.join(', ')}} ${b} — expected ${c.expected.map(describeOutcome).join(' or ')}`
}

function describeOutcome(o: Outcome): string {
  switch (o.kind) {
    case 'token':
      return `200 token${o.tokenType === undefined ? '' : ` (${o.tokenType}${o.jkt === undefined ? '' : `, cnf.jkt ${o.jkt}`})`}`
    case 'error':
      return `${o.status} ${o.error}${o.description === undefined ? '' : ` "${o.description}"`}${o.headers === undefined ? '' : ` ${JSON.stringify(o.headers)}`}`
    case 'inactive':
      return '200 {"active":false}'
    case 'active':
      return `200 active for ${o.clientId}`
    case 'ok':
      return `${o.status}`
    case 'method_not_allowed':
      return `405 Allow: ${o.allow.join(', ')}`
    case 'forward_allowed':
      return `200 allowed for ${o.clientId}`
    case 'set_error':
      return `${o.status} {"err":"${o.err}"}`
    case 'polled':
      return '200 polled'
  }
}

/** Builds a case that prints as `describeCase` in fast-check's counterexamples. */
export function hostileCase(c: HostileCase): HostileCase {
  return Object.defineProperty({ ...c }, fc.toStringMethod, { value: () => describeCase(c), enumerable: false })
}

export class HostileFailure extends Error {
  override readonly name = 'HostileFailure'
}

/** The records appended after `last` (the memory log trims from the front only). */
function appendedSince(events: readonly AuditEvent[], last: AuditEvent | undefined): AuditEvent[] {
  const out: AuditEvent[] = []
  for (let i = events.length - 1; i >= 0 && events[i] !== last; i--) out.push(events[i]!)
  return out
}

/** What the request itself contains, so that a reflected input is not taken for a trace. */
function requestText(r: HostileRequest): string {
  const body = r.body === undefined ? '' : Buffer.from(r.body).toString('utf8')
  let path = r.path
  try {
    path = `${path}\n${decodeURIComponent(path)}`
  } catch {
    // not decodable: the raw path is all there is
  }
  return `${path}\n${Object.entries(r.headers).flat().join('\n')}\n${body}\n${JSON.stringify(body)}`
}

/** Stack-trace-like text in `text` that the request did not itself contain. */
export function traces(text: string, request: HostileRequest | undefined): string[] {
  const found: string[] = []
  let sent: string | undefined
  for (const re of STACK) {
    const m = re.exec(text)
    if (m === null) continue
    sent ??= request === undefined ? '' : requestText(request)
    if (!sent.includes(m[0])) found.push(m[0])
  }
  return found
}

/** The `cnf.jkt` of a JWT access token (RFC 9449 §6.1), unverified: the key it is bound to. */
function boundKey(token: string): unknown {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { cnf?: { jkt?: unknown } }
    return claims.cnf?.jkt
  } catch {
    return undefined
  }
}

const noStore = (res: Response) => /(^|,)\s*no-store\s*(,|$)/.test(res.headers.get('cache-control') ?? '')

/** `head`: a HEAD answer has no body, so an error is told by its status alone. */
function matches(o: Outcome, status: number, body: unknown, res: Response, issued: number, head: boolean, text: string): boolean {
  const obj = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined
  switch (o.kind) {
    case 'token':
      return (
        status === 200 &&
        typeof obj?.['access_token'] === 'string' &&
        obj['token_type'] === (o.tokenType ?? 'Bearer') &&
        issued === 1 &&
        (o.jkt === undefined || boundKey(obj['access_token']) === o.jkt)
      )
    case 'error':
      return (
        status === o.status &&
        (head || (obj?.['error'] === o.error && (o.description === undefined || obj['error_description'] === o.description))) &&
        Object.entries(o.headers ?? {}).every(([name, value]) => res.headers.get(name) === value)
      )
    case 'inactive':
      return status === 200 && obj?.['active'] === false && Object.keys(obj).length === 1
    case 'active':
      return status === 200 && obj?.['active'] === true && obj['client_id'] === o.clientId
    case 'ok':
      return status === o.status
    case 'method_not_allowed': {
      const allow = (res.headers.get('allow') ?? '').split(',').map((m) => m.trim().toUpperCase())
      return status === 405 && o.allow.every((m) => allow.includes(m))
    }
    case 'forward_allowed':
      return status === 200 && text === '' && noStore(res) && res.headers.get('x-mandate-agent') === o.clientId
    case 'set_error':
      return status === o.status && obj?.['err'] === o.err
    case 'polled':
      return status === 200 && typeof obj?.['sets'] === 'object' && obj['sets'] !== null && typeof obj['moreAvailable'] === 'boolean' && noStore(res)
  }
}

/**
 * Sends `c` to the broker's app and checks it. Throws `HostileFailure`
 * naming every rule the answer broke.
 */
export async function runCase(b: TestBroker, c: HostileCase): Promise<void> {
  const { method, path, headers, body } = c.request
  const logMark = b.logLines.length
  const last = b.audit.events().at(-1)
  const res = await b.mandate.app.request(path, { method, headers, ...(body === undefined ? {} : { body }) })
  const text = await res.text()
  const issued = appendedSince(b.audit.events(), last).filter((e) => e.type === 'token.issued').length
  const problems: string[] = []
  const fail = (p: string) => problems.push(p)

  let parsed: unknown
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {
    parsed = undefined
  }
  const status = res.status
  // A HEAD answer has no body to check (RFC 9110 §9.3.2).
  const head = new Request('http://x/', { method }).method === 'HEAD'
  if (status >= 500) fail(`answered ${status}: a 5xx for hostile input`)
  const expectedToken = c.expected.some((o) => o.kind === 'token')
  if (!c.expected.some((o) => matches(o, status, parsed, res, issued, head, text))) {
    const got = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>)['error'] : undefined
    fail(`answered ${status}${typeof got === 'string' ? ` ${got}` : ''}, expected ${c.expected.map(describeOutcome).join(' or ')}`)
  }
  const tokenAnswer = typeof parsed === 'object' && parsed !== null && 'access_token' in parsed
  if (!expectedToken) {
    if (issued > 0) fail(`${issued} token.issued record(s) for a request that must be refused`)
    if (tokenAnswer || (status >= 400 && text.includes('access_token'))) fail('the answer holds an access_token')
  } else if (tokenAnswer && issued !== 1) {
    fail(`a token answered with ${issued} token.issued records`)
  }
  if (status >= 400 && !head) {
    const body = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined
    // SET delivery errors have RFC 8935 §2.3's shape; every other refusal RFC 6749 §5.2's.
    const setShaped = c.expected.some((o) => o.kind === 'set_error') && typeof body?.['err'] === 'string'
    if (typeof body?.['error'] !== 'string' && !setShaped) fail('a refusal without a JSON body holding a string `error` (RFC 6749 §5.2)')
    if (!(res.headers.get('content-type') ?? '').startsWith('application/json')) fail('a refusal that is not application/json')
    // Every error answer, on any path and from the router too, is rendered by one renderer that sets it.
    if (!/(^|,)\s*no-store\s*(,|$)/.test(res.headers.get('cache-control') ?? '')) {
      fail('a refusal without Cache-Control: no-store (RFC 6749 §5.1)')
    }
    if (status === 401 && (res.headers.get('www-authenticate') ?? '') === '') fail('a 401 without WWW-Authenticate (RFC 7235 §3.1)')
  }
  if (tokenAnswer && !/(^|,)\s*no-store\s*(,|$)/.test(res.headers.get('cache-control') ?? '')) fail('a token without Cache-Control: no-store')
  for (const t of traces(text, c.request)) fail(`the answer holds a stack trace or source path (${printable(t, 60)})`)
  for (const s of c.secrets) if (text.includes(s)) fail(`the answer echoes a credential of the request (${s.slice(0, 12)}…)`)
  for (const [name, value] of res.headers) {
    for (const s of c.secrets) if (value.includes(s)) fail(`the answer's ${name} header echoes a credential of the request (${s.slice(0, 12)}…)`)
  }
  const requestId = res.headers.get('x-request-id')
  if (requestId === null || !REQUEST_ID.test(requestId)) fail(`X-Request-Id answered as ${printable(requestId ?? '(none)', 80)}`)

  for (const line of b.logLines.slice(logMark)) {
    if (!line.startsWith('{')) fail(`a log line that is not JSON: ${printable(line, 120)}`)
    for (const t of traces(line, c.request)) fail(`a log line holds a stack trace or source path (${printable(t, 60)}): ${printable(line, 300)}`)
    for (const s of c.secrets) if (line.includes(s)) fail(`a log line holds a credential of the request (${s.slice(0, 12)}…): ${printable(line, 300)}`)
  }

  if (problems.length > 0) {
    throw new HostileFailure(`${problems.join('\n')}\n  case: ${describeCase(c)}\n  answer: ${status} ${printable(text, 300)}`)
  }
}

/** Stack traces in the lines the broker logged from `mark` on (late lines included: they follow no case). */
export function stackTracesInLogs(b: TestBroker, mark: number): string[] {
  const found: string[] = []
  for (const line of b.logLines.slice(mark)) for (const t of traces(line, undefined)) found.push(`${t}: ${printable(line, 300)}`)
  return found
}
