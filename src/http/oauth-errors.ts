import type { Context } from 'hono'
import { OAuthError, statusOf } from '../core/errors.js'

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

/** The only place errors are rendered: RFC 6749 §5.2 body, no-store, and the status from `statusOf`. */
export function renderOAuthError(c: Context, error: OAuthError): Response {
  const headers: Record<string, string> = { ...NO_STORE }
  // RFC 6749 §5.2: a 401 for client authentication names the scheme the client should use.
  if (error.code === 'invalid_client') headers['WWW-Authenticate'] = 'Basic realm="mandate", charset="UTF-8"'
  if (error.code === 'temporarily_unavailable') headers['Retry-After'] = String(error.retryAfter ?? 1)
  return c.json({ error: error.code, error_description: error.description }, statusOf(error.code), headers)
}
