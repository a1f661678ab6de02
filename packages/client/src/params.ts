/**
 * The checks a token request's audience and scopes pass before anything is
 * sent, shared by the exchange (client.ts) and the approval request
 * (approval.ts): `TypeError` for a value that cannot work.
 */

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/
/** An audience is a URI or a name the broker's policies list; it is sent as a form value, so only printable text. */
const AUDIENCE = /^[\x21-\x7E]{1,2048}$/

/** The scopes, sorted and deduplicated; undefined when left out. */
export function scopesOf(scope: string | readonly string[] | undefined): readonly string[] | undefined {
  if (scope === undefined) return undefined
  const list = typeof scope === 'string' ? scope.split(' ').filter((s) => s !== '') : scope
  for (const s of list) if (typeof s !== 'string' || !SCOPE_TOKEN.test(s)) throw new TypeError('scope: each scope must be an RFC 6749 §3.3 scope-token')
  return [...new Set(list)].sort()
}

/** `audience` when it can be sent; `TypeError` otherwise. */
export function checkedAudience(audience: unknown): string {
  if (typeof audience !== 'string' || !AUDIENCE.test(audience)) throw new TypeError('audience must be a non-empty printable string')
  return audience
}
