/**
 * The `Authorization` value of a request as node:http parsed it, for the
 * Express and Fastify adapters. node:http keeps the first of repeated
 * `Authorization` headers and drops the others; the web-standard `Headers`
 * joins them, which `authenticate` refuses as malformed. Joining them here
 * keeps every adapter's answer the same: two credentials are no credential.
 */
import type { BearerRequest } from './verifier.js'

/** The request's `Authorization`, repeated ones joined; null when there is none. */
export function authorizationOf(value: string | undefined, rawHeaders: readonly string[]): string | null {
  if (value === undefined) return null
  let seen = 0
  const all: string[] = []
  // rawHeaders alternates names and values, as received.
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== 'authorization') continue
    seen++
    all.push(rawHeaders[i + 1]!)
  }
  return seen > 1 ? all.join(', ') : value
}

/** What a Node framework tells of a request, for `authenticate`. */
export interface NodeRequestParts {
  readonly authorization: string | null
  /** node:http joins repeated `DPoP` headers with `, `, which `authenticate` refuses (RFC 9449 §4.3 item 1). */
  readonly dpop: string | string[] | undefined
  readonly method: string
  /** The request's path and query as received. */
  readonly path: string
  /** `http` or `https`, as the framework decided it (its trust-proxy setting). */
  readonly protocol: string
  /** The `Host` (or a trusted forwarded host), if any. */
  readonly host: string | undefined
}

/** A `BearerRequest` of a Node framework's request: its `Authorization` and `DPoP` headers, its method and URL. */
export function headerSource(parts: NodeRequestParts): BearerRequest {
  const dpop = Array.isArray(parts.dpop) ? parts.dpop.join(', ') : (parts.dpop ?? null)
  return {
    headers: {
      get(name) {
        const lower = name.toLowerCase()
        return lower === 'authorization' ? parts.authorization : lower === 'dpop' ? dpop : null
      },
    },
    method: parts.method,
    ...(parts.host === undefined ? {} : { url: `${parts.protocol}://${parts.host}${parts.path}` }),
  }
}
