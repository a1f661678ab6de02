/**
 * OAuth error codes Mandate answers with: RFC 6749 §5.2, `invalid_target` from
 * RFC 8693 §2.2.2, and the two service-level codes of RFC 6749 §4.1.2.1.
 * `rate_limited` is Mandate's name for a request over a limit: no registered
 * code says that, so it is sent as `temporarily_unavailable` (the one a
 * generic client already takes as "retry later") with status 429 and
 * `Retry-After` (RFC 6585 §4); logs and metrics keep the distinct name.
 */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  /** RFC 9396 §5: `authorization_details` malformed, of an undeclared type, or outside its schema. */
  | 'invalid_authorization_details'
  /** OpenID Connect Core §3.1.2.6: this grant needs a person's approval first (CIBA). */
  | 'interaction_required'
  /** CIBA Core §11 (polling): not decided yet; poll too fast; the approver said no; the request lapsed. */
  | 'authorization_pending'
  | 'slow_down'
  | 'access_denied'
  | 'expired_token'
  /** RFC 9449 §5: the DPoP proof is missing where required, malformed, or fails a check; and the server's nonce is needed (§8). */
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  | 'rate_limited'
  | 'temporarily_unavailable'
  | 'server_error'

/**
 * A failure the client caused (or a dependency outage it must be told about).
 * `description` is short, safe and sent; `detail` goes to logs and the audit
 * log only and may name the check that failed.
 */
export class OAuthError extends Error {
  override readonly name = 'OAuthError'
  readonly code: OAuthErrorCode
  readonly description: string
  readonly detail: string | undefined
  /** Seconds, for `temporarily_unavailable` and `rate_limited` (sent as `Retry-After`). */
  readonly retryAfter: number | undefined

  constructor(code: OAuthErrorCode, description: string, options: { detail?: string; retryAfter?: number; cause?: unknown } = {}) {
    super(`${code}: ${description}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.description = description
    this.detail = options.detail
    this.retryAfter = options.retryAfter
  }
}

/** Seconds to wait, rounded up and at least 1: what `Retry-After` carries (RFC 9110 §10.2.3). */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

/** HTTP status and the `error` sent for each code: one exhaustive switch, no default. */
export function answerOf(code: OAuthErrorCode): { readonly status: 400 | 401 | 429 | 500 | 503; readonly error: OAuthErrorCode } {
  switch (code) {
    case 'invalid_client':
      return { status: 401, error: code }
    case 'rate_limited':
      return { status: 429, error: 'temporarily_unavailable' }
    case 'temporarily_unavailable':
      return { status: 503, error: code }
    case 'server_error':
      return { status: 500, error: code }
    case 'invalid_request':
    case 'invalid_grant':
    case 'unauthorized_client':
    case 'unsupported_grant_type':
    case 'invalid_scope':
    case 'invalid_target':
    case 'invalid_authorization_details':
    case 'interaction_required':
    case 'authorization_pending':
    case 'slow_down':
    case 'access_denied':
    case 'expired_token':
    case 'invalid_dpop_proof':
    case 'use_dpop_nonce':
      return { status: 400, error: code }
  }
}

/** HTTP status for each code (see `answerOf`). */
export function statusOf(code: OAuthErrorCode): 400 | 401 | 429 | 500 | 503 {
  return answerOf(code).status
}

/** The one text every client-authentication failure carries. */
export const CLIENT_AUTH_FAILED = 'client authentication failed'
/** RFC 8693 §2.2.2: one fixed description whichever subject/actor check failed. */
export const SUBJECT_TOKEN_UNACCEPTABLE = 'subject_token is invalid or not acceptable'
/** RFC 9449 §5: one fixed description whichever check of a DPoP proof failed (the verifier package's text). */
export const DPOP_PROOF_INVALID = 'DPoP proof is invalid'
/** RFC 7523 §3.1: one fixed `invalid_grant` description whichever check of a JWT authorization grant (an ID-JAG) failed. */
export const ASSERTION_UNACCEPTABLE = 'assertion is invalid or not acceptable'

/**
 * A client-supplied value fit for `detail`: short identifiers pass, anything
 * long or shaped like a JWT (a token sent in the wrong field) is named by its
 * length only, so that logs never hold a credential.
 */
export function loggable(value: string): string {
  return value.length <= 100 && !value.includes('.') ? JSON.stringify(value) : `<${value.length} chars>`
}

/** JWS or JWE compact serialization: base64url parts joined by dots (RFC 7515 §7.1, RFC 7516 §7.1). */
const COMPACT_JOSE = /^[A-Za-z0-9_-]{8,}(\.[A-Za-z0-9_-]*){2,4}$/

/**
 * A client-supplied value fit for the delegation log as asked (an audience or
 * a scope of a denied request): kept as it is unless it is longer than 512
 * characters or shaped like a JWT (a token pasted into the wrong field), then
 * named by its length only, so that the log never holds a credential.
 */
export function recordable(value: string): string {
  return value.length <= 512 && !COMPACT_JOSE.test(value) ? value : `<${value.length} chars>`
}

/** The message of anything thrown, for a log line or an error of our own. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/**
 * A cause for the log: its class and message (cut to 200 characters), never
 * a stack or a value that might hold a secret; an OAuthError by its code.
 */
export function describeCause(cause: unknown): string | undefined {
  if (cause === undefined) return undefined
  if (cause instanceof OAuthError) return cause.code
  if (cause instanceof Error) return `${cause.name}: ${cause.message.slice(0, 200)}`
  return typeof cause
}
