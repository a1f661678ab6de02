/**
 * Fetches a small JSON document from the broker (its metadata, its JWKS):
 * bounded in time and size, no redirect (a redirect could take the verifier
 * to a key set nobody vetted), 200 only.
 */

/** Why a document could not be had: the verifier answers 503 (fail closed), never 401. */
export class Unreachable extends Error {
  override readonly name = 'Unreachable'
}

export interface FetchJsonOptions {
  readonly fetch: typeof fetch
  readonly timeoutMs: number
  readonly maxBytes: number
}

export async function fetchJson(url: string, accept: string, options: FetchJsonOptions): Promise<unknown> {
  const signal = AbortSignal.timeout(options.timeoutMs)
  let response: Response
  try {
    response = await options.fetch(url, { method: 'GET', headers: { accept }, redirect: 'error', signal })
  } catch (err) {
    throw new Unreachable(`${url}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  if (response.status !== 200 || response.body === null) {
    await response.body?.cancel().catch(() => undefined)
    throw new Unreachable(`${url} answered ${response.status}`)
  }
  const declared = Number(response.headers.get('content-length') ?? NaN)
  if (declared > options.maxBytes) {
    await response.body.cancel().catch(() => undefined)
    throw new Unreachable(`${url}: larger than ${options.maxBytes} bytes`)
  }
  // Read by hand: a broker (or whatever answers in its place) that streams forever is cut off at the bound.
  const reader = (response.body as ReadableStream<Uint8Array>).getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > options.maxBytes) throw new Unreachable(`${url}: larger than ${options.maxBytes} bytes`)
      chunks.push(value)
    }
  } catch (err) {
    await reader.cancel().catch(() => undefined)
    if (err instanceof Unreachable) throw err
    throw new Unreachable(`${url}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  const bytes = new Uint8Array(size)
  let at = 0
  for (const c of chunks) {
    bytes.set(c, at)
    at += c.byteLength
  }
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as unknown
  } catch {
    throw new Unreachable(`${url}: not JSON`)
  }
}

/** https, or http on a loopback host only (a development broker): tokens' keys and credentials never cross a network in clear. */
export function isAllowedUrl(value: unknown): value is string {
  if (typeof value !== 'string' || !URL.canParse(value)) return false
  const url = new URL(value)
  if (url.username !== '' || url.password !== '' || url.hash !== '') return false
  if (url.protocol === 'https:') return true
  return url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)
}
