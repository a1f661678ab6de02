/** Push-based SET delivery (RFC 8935): one POST, and what its answer means for that SET. */

export type PushOutcome =
  /** RFC 8935 §2.2: 202 Accepted. */
  | { readonly kind: 'delivered' }
  /** RFC 8935 §2.3: 400 with an error body; the receiver will never take this SET. */
  | { readonly kind: 'refused'; readonly err: string; readonly description: string }
  /** Anything else (another status, a network failure, a timeout): try again later. */
  | { readonly kind: 'retry'; readonly reason: string }

export interface PushOptions {
  /** The whole Authorization header value, when the receiver wants one. */
  readonly authorization: string | undefined
  readonly timeoutMs: number
  /** Aborts the request (the broker is stopping). */
  readonly signal: AbortSignal
}

/** Most of an error answer read; RFC 8935 §2.3's body is a short JSON object. */
const MAX_ERROR_BODY = 4096

/**
 * POSTs one SET as `application/secevent+jwt`. Never follows a redirect (a
 * 3xx is retried: the configured URL is the one that must answer) and never
 * rejects: every failure is an outcome. Reasons and the receiver's error text
 * are bounded and stripped of control characters before anyone logs them.
 */
export async function pushSet(url: string, set: string, options: PushOptions): Promise<PushOutcome> {
  let response: Response
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/secevent+jwt',
        accept: 'application/json',
        ...(options.authorization === undefined ? {} : { authorization: options.authorization }),
      },
      body: set,
      redirect: 'manual',
      signal: AbortSignal.any([AbortSignal.timeout(options.timeoutMs), options.signal]),
    })
  } catch (err) {
    const name = err instanceof Error ? err.name : 'Error'
    const code = (err as { cause?: { code?: unknown } }).cause?.code
    return { kind: 'retry', reason: name === 'TimeoutError' ? 'timeout' : `network: ${typeof code === 'string' ? clean(code, 64) : name}` }
  }
  if (response.status === 202) {
    await response.body?.cancel()
    return { kind: 'delivered' }
  }
  if (response.status === 400) {
    const body = await readBounded(response)
    const error = errorBody(body)
    if (error !== undefined) return { kind: 'refused', ...error }
    // A 400 without RFC 8935's body is more likely a proxy in the way than the receiver's verdict.
    return { kind: 'retry', reason: 'status 400 without an error body' }
  }
  await response.body?.cancel()
  return { kind: 'retry', reason: `status ${response.status}` }
}

async function readBounded(response: Response): Promise<string | undefined> {
  if (response.body === null) return undefined
  const reader = (response.body as ReadableStream<Uint8Array>).getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > MAX_ERROR_BODY) {
        await reader.cancel()
        return undefined
      }
      chunks.push(value)
    }
  } catch {
    return undefined
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** RFC 8935 §2.3: `{"err": …, "description": …}`; undefined for anything else. */
function errorBody(body: string | undefined): { err: string; description: string } | undefined {
  if (body === undefined) return undefined
  try {
    const parsed: unknown = JSON.parse(body)
    if (typeof parsed !== 'object' || parsed === null) return undefined
    const { err, description } = parsed as { err?: unknown; description?: unknown }
    if (typeof err !== 'string' || err === '') return undefined
    return { err: clean(err, 64), description: typeof description === 'string' ? clean(description, 256) : '' }
  } catch {
    return undefined
  }
}

/** Receiver-supplied text for the logs: printable, bounded. */
export function clean(text: string, max: number): string {
  // eslint-disable-next-line no-control-regex -- stripping control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?').slice(0, max)
}
