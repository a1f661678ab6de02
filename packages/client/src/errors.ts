/**
 * What can go wrong when getting a token, typed.
 *
 * `error` is the broker's RFC 6749 §5.2 code (`invalid_request`,
 * `invalid_client`, `invalid_grant`, `unauthorized_client`, `invalid_scope`,
 * `invalid_target` from RFC 8693 §2.2.2, `temporarily_unavailable`,
 * `server_error`, …) when the broker answered with one, or one of this
 * client's own codes when it did not. Human approval (OpenID CIBA Core 1.0
 * §11, §13; RFC 9396 §5) adds `interaction_required` (an exchange for a
 * grant that needs a person's approval: use `requestApproval`),
 * `access_denied` (the approver denied the request, or a revocation
 * cancelled it), `expired_token` (nobody decided before it expired),
 * `invalid_grant` (the `auth_req_id` is unknown or its token was already
 * issued) and `invalid_authorization_details`; the polling codes
 * `authorization_pending` and `slow_down` are handled by `waitForApproval`
 * and never thrown. DPoP (RFC 9449 §7.1) adds `invalid_dpop_proof` (no proof
 * where the agent's policy requires one, or a subject token's holder proof
 * missing or of another key) and `use_dpop_nonce` (thrown only when the one
 * retry with the broker's nonce was refused again).
 *
 * Its own codes:
 *
 * `invalid_response`: the broker's answer was neither a token response nor
 * an RFC 6749 §5.2 error (a proxy's HTML page, a truncated body, bad
 * metadata). After the last retry of a 429 or 503 the broker's own error is
 * thrown, with `attempts` saying how many requests were made.
 */
export class MandateClientError extends Error {
  override readonly name = 'MandateClientError'
  /** RFC 6749 §5.2 `error`, or `invalid_response` (see above). */
  readonly error: string
  /** The broker's `error_description`, when it sent a well-formed one. */
  readonly description: string | undefined
  /** HTTP status of the broker's answer; undefined when there was none to read (discovery failed before). */
  readonly status: number | undefined
  /** Seconds the broker asked to wait (RFC 9110 §10.2.3), on 429 and 503. */
  readonly retryAfter: number | undefined
  /** Requests made for this call, retries included. */
  readonly attempts: number

  constructor(
    error: string,
    description: string | undefined,
    options: { status?: number | undefined; retryAfter?: number | undefined; attempts?: number; cause?: unknown } = {},
  ) {
    super(description === undefined ? error : `${error}: ${description}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.error = error
    this.description = description
    this.status = options.status
    this.retryAfter = options.retryAfter
    this.attempts = options.attempts ?? 1
  }

  /** True for refusals worth trying again later as they are (429, 503); every other error needs a change first. */
  get retryable(): boolean {
    return this.status === 429 || this.status === 503
  }
}

/** RFC 6749 §5.2: `error` and `error_description` use %x20-21 / %x23-5B / %x5D-7E only. */
const ERROR_TEXT = /^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,512}$/

/** Body bytes read from an error answer at most: an RFC 6749 §5.2 body is small, a hostile one need not be. */
const MAX_ERROR_BODY = 16 * 1024

/**
 * Turns a non-200 answer of the token endpoint into a `MandateClientError`,
 * taking the `error` code and description only when they are well-formed
 * (RFC 6749 §5.2); a body that is not one is `invalid_response`. Reads at
 * most 16 KiB of it.
 */
export async function errorFromResponse(response: Response, retryAfter: number | undefined, attempts: number): Promise<MandateClientError> {
  const options = { status: response.status, retryAfter, attempts }
  const text = await readBounded(response, MAX_ERROR_BODY)
  let body: unknown
  try {
    body = text === undefined ? undefined : JSON.parse(text)
  } catch {
    body = undefined
  }
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const { error, error_description: description } = body as Record<string, unknown>
    if (typeof error === 'string' && ERROR_TEXT.test(error)) {
      return new MandateClientError(error, typeof description === 'string' && ERROR_TEXT.test(description) ? description : undefined, options)
    }
  }
  return new MandateClientError('invalid_response', `HTTP ${response.status} without an OAuth error body`, options)
}

/** The body as text, or undefined when it is longer than `limit` bytes or cannot be read. */
async function readBounded(response: Response, limit: number): Promise<string | undefined> {
  const reader: ReadableStreamDefaultReader<Uint8Array> | undefined = response.body?.getReader()
  if (reader === undefined) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > limit) {
        await reader.cancel()
        return undefined
      }
      chunks.push(value)
    }
  } catch {
    return undefined
  }
  return new TextDecoder().decode(Buffer.concat(chunks))
}
