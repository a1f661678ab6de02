import type { Context } from 'hono'
import { answerOf, OAuthError } from '../core/errors.js'

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

/** Renders an admin refusal: `{ error, error_description }`, no-store, and the scheme on a 401. */
export function renderAdminError(c: Context, error: AdminError): Response {
  const headers: Record<string, string> = { ...NO_STORE }
  if (error.code === 'unauthorized') headers['WWW-Authenticate'] = 'Bearer realm="mandate-admin"'
  if (error.code === 'temporarily_unavailable') headers['Retry-After'] = '1'
  return c.json({ error: error.code, error_description: error.description }, adminStatus(error.code), headers)
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

/** The only place errors are rendered: RFC 6749 §5.2 body, no-store, and the status and code from `answerOf`. */
export function renderOAuthError(c: Context, error: OAuthError): Response {
  const headers: Record<string, string> = { ...NO_STORE }
  // RFC 6749 §5.2: a 401 for client authentication names the scheme the client should use.
  if (error.code === 'invalid_client') headers['WWW-Authenticate'] = 'Basic realm="mandate", charset="UTF-8"'
  // RFC 9110 §10.2.3 (503), RFC 6585 §4 (429): when to come back.
  if (error.code === 'temporarily_unavailable' || error.code === 'rate_limited') headers['Retry-After'] = String(error.retryAfter ?? 1)
  const { status, error: code } = answerOf(error.code)
  return c.json({ error: code, error_description: error.description }, status, headers)
}
