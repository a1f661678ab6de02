/**
 * Codes a verifier answers with: RFC 6750 §3.1, plus `temporarily_unavailable`
 * (RFC 6749 §4.1.2.1) when it cannot tell whether a token is good (revocation
 * state unknown, signing keys unreachable).
 */
export type VerifierErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'temporarily_unavailable'

/** HTTP status for each code: one exhaustive switch, no default. */
export function verifierStatus(code: VerifierErrorCode): 400 | 401 | 403 | 503 {
  switch (code) {
    case 'invalid_request':
      return 400
    case 'invalid_token':
      return 401
    case 'insufficient_scope':
      return 403
    case 'temporarily_unavailable':
      return 503
  }
}

/** RFC 7230 quoted-string: `"` and `\` escaped; anything else outside printable ASCII is a programmer mistake. */
function quoted(value: string): string {
  if (!/^[\x20-\x7e]*$/.test(value)) throw new TypeError(`not printable ASCII: ${JSON.stringify(value)}`)
  return `"${value.replace(/["\\]/g, (ch) => `\\${ch}`)}"`
}

/**
 * An RFC 6750 §3 `WWW-Authenticate` challenge. Without `error`, the one for a
 * request that carried no token (§3.1: no error code then).
 */
export function bearerChallenge(realm: string, error?: { code: VerifierErrorCode; description: string; scope?: string }): string {
  const params = [`realm=${quoted(realm)}`]
  if (error !== undefined) {
    params.push(`error=${quoted(error.code)}`, `error_description=${quoted(error.description)}`)
    if (error.scope !== undefined) params.push(`scope=${quoted(error.scope)}`)
  }
  return `Bearer ${params.join(', ')}`
}

/**
 * Why a token was refused. `description` is short, safe and sent (in
 * `WWW-Authenticate` and the body); `detail` names the failed check, for logs
 * only. `wwwAuthenticate` is the header value to answer with.
 */
export class VerifierError extends Error {
  override readonly name = 'VerifierError'
  readonly status: 400 | 401 | 403 | 503
  readonly wwwAuthenticate: string
  readonly detail: string | undefined
  /** `insufficient_scope`: the scopes the resource requires. */
  readonly scope: string | undefined
  /** Seconds, for `temporarily_unavailable` (sent as `Retry-After`). */
  readonly retryAfter: number | undefined

  constructor(
    readonly error: VerifierErrorCode,
    readonly description: string,
    options: {
      readonly realm: string
      readonly detail?: string
      /** `insufficient_scope`: the scopes the resource requires, space-delimited. */
      readonly scope?: string
      readonly cause?: unknown
    },
  ) {
    super(`${error}: ${description}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.status = verifierStatus(error)
    this.detail = options.detail
    this.scope = options.scope
    this.retryAfter = error === 'temporarily_unavailable' ? 1 : undefined
    this.wwwAuthenticate = bearerChallenge(options.realm, {
      code: error,
      description,
      ...(options.scope === undefined ? {} : { scope: options.scope }),
    })
  }
}
