/**
 * Load generator (see run.ts): `loops` concurrent closed loops of exchanges,
 * until `stop` or `maxMs`. Reports every answer: [startMs, endMs, 200, jti]
 * or [startMs, endMs, status, error, retry-after, cache-control]; status 0 is
 * no HTTP answer (a connection error, or none within `timeoutMs`). Times are
 * epoch milliseconds.
 */
import { printReport, readCommands } from './run.js'

export interface Settings {
  readonly url: string
  readonly authorization: string
  readonly body: string
  readonly loops: number
  readonly maxMs: number
  /** Longest an exchange may take before it counts as unanswered. */
  readonly timeoutMs: number
}

export type Answer = [start: number, end: number, status: number, jtiOrError: string | null, retryAfter?: string | null, cacheControl?: string | null]
export interface Report {
  readonly answers: Answer[]
}

const jtiOf = (token: string): string | null => {
  try {
    const jti: unknown = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { jti?: unknown }).jti
    return typeof jti === 'string' ? jti : null
  } catch {
    return null
  }
}

const commands = await readCommands()
const { url, authorization, body, loops, maxMs, timeoutMs } = commands.settings as Settings
let stop = false
void commands.next().then(() => (stop = true))
setTimeout(() => (stop = true), maxMs).unref()
const answers: Answer[] = []
let warm = 0

async function once(): Promise<void> {
  const start = Date.now()
  let answer: Answer
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    })
    const text = await res.text()
    let json: Record<string, unknown> | null = null
    try {
      json = JSON.parse(text) as Record<string, unknown>
    } catch {
      // not JSON: the error column keeps the text
    }
    const token = json?.['access_token']
    if (res.status === 200) answer = [start, Date.now(), 200, typeof token === 'string' ? jtiOf(token) : null]
    else {
      const error = json?.['error']
      answer = [
        start,
        Date.now(),
        res.status,
        typeof error === 'string' ? error : text.slice(0, 200),
        res.headers.get('retry-after'),
        res.headers.get('cache-control'),
      ]
    }
  } catch (e) {
    const err = e as { name?: unknown; message?: unknown; cause?: { code?: unknown } }
    answer = [start, Date.now(), 0, `${String(err.name)}: ${String(err.cause?.code ?? err.message)}`]
  }
  answers.push(answer)
  // A broker that is gone refuses at once: no hot spin.
  if (answer[2] === 0) await new Promise((resolve) => setTimeout(resolve, 5))
}

async function loop(): Promise<void> {
  await once()
  if (++warm === loops) process.stdout.write('go\n')
  while (!stop) await once()
}

await Promise.all(Array.from({ length: loops }, loop))
printReport({ answers } satisfies Report)
