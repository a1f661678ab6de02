import { outgoingTraceHeaders } from '../telemetry/tracing.js'

/** Bounds for every fetch of an upstream document (docs/ARCHITECTURE.md "Decisions"). */
export interface FetchLimits {
  readonly timeoutMs: number
  readonly maxBytes: number
}

export class UpstreamUnavailable extends Error {
  override readonly name = 'UpstreamUnavailable'
}

/**
 * GETs `url` with a timeout, no redirects and a body cap, and returns the
 * body as a fresh in-memory Response. Throws `UpstreamUnavailable` on any
 * network failure, non-200 status or oversize body. Under an active span the
 * request carries its W3C `traceparent`, so the issuer's side of a key fetch
 * joins the exchange's trace.
 */
export async function fetchLimited(url: string, init: RequestInit, limits: FetchLimits): Promise<Response> {
  const trace = outgoingTraceHeaders()
  let headers = init.headers
  if (trace !== undefined) {
    const merged = new Headers(init.headers)
    for (const [name, value] of Object.entries(trace)) merged.set(name, value)
    headers = merged
  }
  let response: Response
  try {
    response = await fetch(url, {
      ...init,
      ...(headers === undefined ? {} : { headers }),
      method: 'GET',
      redirect: 'manual',
      signal: AbortSignal.timeout(limits.timeoutMs),
    })
  } catch (err) {
    throw new UpstreamUnavailable(`fetch ${url} failed: ${(err as Error).name}`)
  }
  if (response.status !== 200 || response.body === null) {
    await response.body?.cancel()
    throw new UpstreamUnavailable(`fetch ${url} answered ${response.status}`)
  }
  const declared = Number(response.headers.get('content-length') ?? '0')
  if (declared > limits.maxBytes) {
    await response.body.cancel()
    throw new UpstreamUnavailable(`fetch ${url}: body over ${limits.maxBytes} bytes`)
  }
  const chunks: Uint8Array[] = []
  let size = 0
  // A fetch body is a byte stream (Fetch standard); undici-types leaves its chunk type `any`.
  const reader = (response.body as ReadableStream<Uint8Array>).getReader()
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > limits.maxBytes) {
        await reader.cancel()
        throw new UpstreamUnavailable(`fetch ${url}: body over ${limits.maxBytes} bytes`)
      }
      chunks.push(value)
    }
  } catch (err) {
    if (err instanceof UpstreamUnavailable) throw err
    throw new UpstreamUnavailable(`fetch ${url}: body read failed: ${(err as Error).name}`)
  }
  return new Response(Buffer.concat(chunks), {
    status: 200,
    headers: { 'content-type': response.headers.get('content-type') ?? 'application/json' },
  })
}

/** http:// is allowed only for loopback hosts (tests, local IdPs); everything else must be https. */
export function isAllowedUpstreamUrl(url: URL): boolean {
  if (url.protocol === 'https:') return true
  return url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)
}
