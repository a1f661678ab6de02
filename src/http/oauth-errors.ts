/**
 * Every HTTP error answer, whoever refuses (an OAuth endpoint, the admin API,
 * the router, the body limit), is rendered by {@link renderError}: one body
 * shape, one set of cache headers.
 */
import type { Context } from 'hono'
import { answerOf, OAuthError } from '../core/errors.js'
import type { AppContext } from './env.js'

/** Codes of the admin API; same body shape as OAuth errors. */
export type AdminErrorCode = 'invalid_request' | 'unauthorized' | 'forbidden' | 'not_found' | 'conflict' | 'temporarily_unavailable'

/** A refusal of the admin API. `description` is sent; `detail` is for logs only. */
export class AdminError extends Error {
  override readonly name = 'AdminError'
  constructor(
    readonly code: AdminErrorCode,
    readonly description: string,
    readonly detail?: string,
  ) {
    super(`${code}: ${description}`)
  }
}

function adminStatus(code: AdminErrorCode): 400 | 401 | 403 | 404 | 409 | 503 {
  switch (code) {
    case 'invalid_request':
      return 400
    case 'unauthorized':
      return 401
    case 'forbidden':
      return 403
    case 'not_found':
      return 404
    case 'conflict':
      return 409
    case 'temporarily_unavailable':
      return 503
  }
}

/** Headers every token-endpoint answer carries (RFC 6749 §5.1). */
export const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' } as const

/**
 * Turns anything thrown into the OAuthError that will be sent. An unexpected
 * error becomes `server_error` with fixed text: its message (driver errors
 * can hold parameters) is for the log only.
 */
export function toOAuthError(err: unknown): OAuthError {
  if (err instanceof OAuthError) return err
  return new OAuthError('server_error', 'internal error', { detail: 'unexpected error', cause: err })
}

/**
 * A refusal no route made: no such route (404), a method the route does not
 * answer (405, with `Allow`: RFC 9110 §15.5.6), a body over the limit (413).
 */
export class RouteError extends Error {
  override readonly name = 'RouteError'
  constructor(
    readonly status: 404 | 405 | 413,
    readonly code: 'not_found' | 'method_not_allowed' | 'invalid_request',
    readonly description: string,
    /** 405 only: the methods the route does answer. */
    readonly allow?: readonly string[],
  ) {
    super(`${code}: ${description}`)
  }
}

/**
 * A refusal of a bearer token by a protected resource's gatekeeper (GET
 * /forward-auth), RFC 6750 §3: `missing_token` is the bare challenge of a
 * request with no Bearer credentials (§3.1: no error code then; the body
 * says `unauthorized`), `invalid_token` 401, `insufficient_scope` 403 with
 * the `scope` the resource needs. `description` is fixed text; `detail` is
 * for logs only.
 */
export class BearerError extends Error {
  override readonly name = 'BearerError'
  constructor(
    /** `invalid_dpop_proof`: RFC 9449 §7.1, with the DPoP scheme only. */
    readonly code: 'missing_token' | 'invalid_token' | 'insufficient_scope' | 'invalid_dpop_proof',
    readonly description: string,
    /** For logs only. */
    readonly detail?: string,
    /** `insufficient_scope`: the scopes the resource needs, space-separated. */
    readonly scope?: string,
    /** When the request used the DPoP scheme: the proof algorithms, and the challenge names DPoP and `algs` (RFC 9449 §7.1). */
    readonly dpopAlgs?: readonly string[],
  ) {
    super(`${code}: ${description}`)
  }
}

/** The realm of every Bearer challenge the broker sends (RFC 6750 §3). */
export const BEARER_REALM = 'mandate'

/**
 * RFC 6750 §3 (RFC 9449 §7.1 for DPoP) `WWW-Authenticate` for `error`. Every value is fixed text or a
 * validated scope (RFC 6749 §3.3 scope-tokens hold no `"` or `\`), so it
 * needs no escaping and holds no CR or LF.
 */
function bearerChallenge(error: BearerError): string {
  const scheme = error.dpopAlgs === undefined ? 'Bearer' : 'DPoP'
  const algs = error.dpopAlgs === undefined ? '' : `, algs="${error.dpopAlgs.join(' ')}"`
  if (error.code === 'missing_token') return `${scheme} realm="${BEARER_REALM}"${algs}`
  const scope = error.scope === undefined ? '' : `, scope="${error.scope}"`
  return `${scheme} realm="${BEARER_REALM}", error="${error.code}", error_description="${error.description}"${scope}${algs}`
}

export type HttpError = OAuthError | AdminError | RouteError | BearerError

/**
 * The only place error answers are rendered: `{ error, error_description }`
 * (RFC 6749 §5.2 for the OAuth endpoints, the same shape elsewhere), never
 * cached (`Cache-Control: no-store`, `Pragma: no-cache`: RFC 6749 §5.1), and
 * the headers each kind needs.
 */
export function renderError(c: Context, error: HttpError): Response {
  const { status, code, headers } = answerFor(error)
  const uri = error instanceof OAuthError ? (c as AppContext).get('errorUri') : undefined
  return c.json({ error: code, error_description: error.description, ...(uri === undefined ? {} : { error_uri: uri }) }, status, { ...NO_STORE, ...headers })
}

function answerFor(error: HttpError): {
  readonly status: 400 | 401 | 403 | 404 | 405 | 409 | 413 | 429 | 500 | 503
  readonly code: string
  readonly headers: Record<string, string>
} {
  if (error instanceof OAuthError) {
    const headers: Record<string, string> = {}
    // RFC 6749 §5.2: a 401 for client authentication names the scheme the client should use.
    if (error.code === 'invalid_client') headers['WWW-Authenticate'] = 'Basic realm="mandate", charset="UTF-8"'
    // RFC 9110 §10.2.3 (503), RFC 6585 §4 (429): when to come back.
    if (error.code === 'temporarily_unavailable' || error.code === 'rate_limited') headers['Retry-After'] = String(error.retryAfter ?? 1)
    const { status, error: code } = answerOf(error.code)
    return { status, code, headers }
  }
  if (error instanceof AdminError) {
    const headers: Record<string, string> = {}
    if (error.code === 'unauthorized') headers['WWW-Authenticate'] = 'Bearer realm="mandate-admin"'
    if (error.code === 'temporarily_unavailable') headers['Retry-After'] = '1'
    return { status: adminStatus(error.code), code: error.code, headers }
  }
  if (error instanceof BearerError) {
    const headers = { 'WWW-Authenticate': bearerChallenge(error) }
    if (error.code === 'missing_token') return { status: 401, code: 'unauthorized', headers }
    return { status: error.code === 'insufficient_scope' ? 403 : 401, code: error.code, headers }
  }
  return { status: error.status, code: error.code, headers: error.allow === undefined ? {} : { Allow: error.allow.join(', ') } }
}
