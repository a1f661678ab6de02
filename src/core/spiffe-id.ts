/**
 * SPIFFE IDs (SPIFFE-ID spec §2): `spiffe://<trust domain><path>`, nothing
 * else of a URI. Pure: parsing and matching, no I/O.
 */

/** SPIFFE-ID §2.3: the longest SPIFFE ID, in bytes. */
const MAX_SPIFFE_ID_BYTES = 2048
/** SPIFFE-ID §2.1: a trust domain is lowercase letters, digits, `.`, `-` and `_`. */
const TRUST_DOMAIN = /^[a-z0-9._-]+$/
/** SPIFFE-ID §2.2: a path segment is letters, digits, `.`, `-` and `_`. */
const SEGMENT = /^[a-zA-Z0-9._-]+$/

export interface SpiffeId {
  readonly trustDomain: string
  /** `''` or `/seg/seg`. */
  readonly path: string
  /** The whole ID, as given (it is already canonical when it parses). */
  readonly id: string
}

/**
 * Parses a SPIFFE ID; undefined when it is not one: another scheme, an
 * uppercase or empty trust domain, a port, userinfo, query or fragment
 * (none has a place in the grammar), an empty, `.` or `..` segment, or a
 * trailing `/` (SPIFFE-ID §2.2).
 */
export function parseSpiffeId(text: string): SpiffeId | undefined {
  if (Buffer.byteLength(text, 'utf8') > MAX_SPIFFE_ID_BYTES) return undefined
  if (!text.startsWith('spiffe://')) return undefined
  const rest = text.slice('spiffe://'.length)
  const slash = rest.indexOf('/')
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash)
  const path = slash < 0 ? '' : rest.slice(slash)
  // `:` (port), `@` (userinfo), `?` and `#` are outside both character sets, so they are refused here.
  if (!TRUST_DOMAIN.test(trustDomain)) return undefined
  if (path !== '') {
    const segments = path.slice(1).split('/')
    for (const s of segments) if (!SEGMENT.test(s) || s === '.' || s === '..') return undefined
  }
  return { trustDomain, path, id: text }
}

/**
 * Parses a SPIFFE ID prefix as a policy writes it: a SPIFFE ID followed by
 * `/` (`spiffe://example.org/ns/prod/`, or `spiffe://example.org/` for a
 * whole trust domain). The trailing `/` is required so that a prefix ends at
 * a segment boundary: `…/sa/bill/` never matches `…/sa/billing`.
 */
export function parseSpiffeIdPrefix(text: string): SpiffeId | undefined {
  if (!text.endsWith('/')) return undefined
  const parsed = parseSpiffeId(text.slice(0, -1))
  return parsed === undefined ? undefined : { ...parsed, id: text }
}

/**
 * The prefixes (each ending in `/`) a SPIFFE ID falls under, longest first:
 * `spiffe://td/a/b` → `spiffe://td/a/`, `spiffe://td/`. A policy store looks
 * each up in turn, so the most specific prefix wins.
 */
export function spiffeIdPrefixes(id: SpiffeId): string[] {
  const out: string[] = []
  const base = `spiffe://${id.trustDomain}`
  const segments = id.path === '' ? [] : id.path.slice(1).split('/')
  for (let n = segments.length - 1; n >= 0; n--)
    out.push(
      `${base}/${segments
        .slice(0, n)
        .map((s) => `${s}/`)
        .join('')}`,
    )
  return out
}
