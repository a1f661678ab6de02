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

/** A `BearerRequest` carrying `authorization`. */
export function headerSource(authorization: string | null): BearerRequest {
  return { headers: { get: (name) => (name.toLowerCase() === 'authorization' ? authorization : null) } }
}
