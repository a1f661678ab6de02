/**
 * Just-in-time human approval: OpenID CIBA Core 1.0 in poll mode, the action
 * described by RFC 9396 Rich Authorization Requests. The agent asks the
 * broker's backchannel authentication endpoint for a token that a person
 * must approve first (`requestApproval`), then polls the token endpoint with
 * the `auth_req_id` it got until the person decides (`waitForApproval`).
 * Each function takes the client's `ClientState`.
 */
import * as oauth from 'oauth4webapi'
import { APPLY } from './auth.js'
import type { ClientState, MandateToken } from './client.js'
import { errorFromResponse, MandateClientError } from './errors.js'
import { discover, isNonceRefusal, requestOptions, sendRetried, tokenFromBody, tokenRequestOptions } from './exchange.js'
import { checkedAudience, scopesOf } from './params.js'
import { isRetryableStatus, parseRetryAfter } from './retry.js'

/** RFC 9396 §2: one authorization detail, an object with a string `type` and members its type defines. */
export type AuthorizationDetail = Readonly<Record<string, unknown>> & { readonly type: string }

/** What the agent asks a person to approve. */
export interface ApprovalRequest {
  /** The user's access token, as `getToken`'s `subjectToken` (sent as CIBA `login_hint_token`). A secret: never logged. */
  readonly subjectToken: string
  /** The one audience the token is for (RFC 8693 §2.1). */
  readonly audience: string
  /** Space-separated, or a list; left out, the policy's `default_scopes` for the audience. */
  readonly scope?: string | readonly string[]
  /** RFC 9396 §2: what exactly is to be done, each detail of a `type` the agent's grant declares; the approver sees them. */
  readonly authorizationDetails?: readonly AuthorizationDetail[]
  /**
   * CIBA §7.1 `binding_message`: a short text (at most 64 printable
   * characters) the agent also shows its user, so that the approver can
   * tell this request from another, e.g. `Order 4711: pay 120 EUR`.
   */
  readonly bindingMessage?: string
  /** CIBA §7.1 `requested_expiry`: seconds the request may wait for a decision; the broker caps it at the grant's `timeout`. */
  readonly requestedExpiry?: number
  readonly signal?: AbortSignal
}

/** A request waiting for a person (CIBA §7.3). Hold `authReqId` as a secret: whoever has it and the agent's credentials gets the token. */
export interface PendingApproval {
  /** CIBA `auth_req_id`: the agent's handle on the request, never shown to anyone. */
  readonly authReqId: string
  /** Seconds the request waits for a decision, from when it was made. */
  readonly expiresIn: number
  /** Seconds to wait at least between polls (CIBA §7.3; 5 when the broker says nothing). */
  readonly interval: number
  /** Epoch ms at which it expires, by the client's clock. */
  readonly expiresAt: number
  /** The audience and scopes asked for: the token's, unless the broker says otherwise. */
  readonly audience: string
  readonly scope: readonly string[] | undefined
}

/** The token a person approved: a `MandateToken` and the details as approved (RFC 9396 §7), empty when none were asked for. */
export interface ApprovedToken extends MandateToken {
  readonly authorizationDetails: readonly AuthorizationDetail[]
}

export interface WaitOptions {
  /** Stops waiting: the promise rejects with the signal's reason. The request stays pending at the broker until it expires. */
  readonly signal?: AbortSignal
}

/** CIBA §7.3: the interval when the broker gives none. */
const DEFAULT_INTERVAL = 5
/** CIBA §11: after `slow_down`, the interval grows by 5 s for this and every later poll. */
const SLOW_DOWN_STEP = 5
/** CIBA §7.1: binding_message is short enough to show on a phone; Mandate takes printable text of up to 64 characters. */
const BINDING_MESSAGE = /^[\x20-\x7E]{1,64}$/
/** How long past the request's expiry, by the client's clock, a broker still answering `authorization_pending` is believed: clocks differ. */
const EXPIRY_GRACE_MS = 60_000

/** The request's form parameters (CIBA §7.1, RFC 9396 §3), checked: `TypeError` for one that cannot work. */
function approvalParams(request: ApprovalRequest): { params: URLSearchParams; audience: string; scopes: readonly string[] | undefined } {
  if (typeof request.subjectToken !== 'string' || request.subjectToken === '') throw new TypeError('subjectToken must be a non-empty string')
  const audience = checkedAudience(request.audience)
  const scopes = scopesOf(request.scope)
  const params = new URLSearchParams({ login_hint_token: request.subjectToken, audience })
  if (scopes !== undefined) params.set('scope', scopes.join(' '))
  const details = request.authorizationDetails
  if (details !== undefined) {
    const ok =
      Array.isArray(details) &&
      details.length > 0 &&
      details.every((d: unknown) => typeof d === 'object' && d !== null && !Array.isArray(d) && typeof (d as { type?: unknown }).type === 'string')
    if (!ok) throw new TypeError('authorizationDetails must be a non-empty array of objects, each with a string type (RFC 9396 §2)')
    params.set('authorization_details', JSON.stringify(details))
  }
  if (request.bindingMessage !== undefined) {
    if (typeof request.bindingMessage !== 'string' || !BINDING_MESSAGE.test(request.bindingMessage)) {
      throw new TypeError('bindingMessage must be 1-64 printable ASCII characters')
    }
    params.set('binding_message', request.bindingMessage)
  }
  if (request.requestedExpiry !== undefined) {
    if (!Number.isSafeInteger(request.requestedExpiry) || request.requestedExpiry < 1)
      throw new TypeError('requestedExpiry must be a positive number of seconds')
    params.set('requested_expiry', String(request.requestedExpiry))
  }
  return { params, audience, scopes }
}

/**
 * CIBA §7.1: asks the broker for a token that a person must approve first.
 * Retries 429 and 503 as an exchange does (`retry` options). Throws
 * `TypeError` for a request that cannot work, and `MandateClientError` for
 * the broker's refusals: `invalid_request` (e.g. the audience needs no
 * approval: exchange the token instead), `invalid_client`,
 * `unauthorized_client` (also this client's own, before anything is sent,
 * when the broker's metadata offers no CIBA poll mode), `invalid_scope`,
 * `invalid_target`, `invalid_authorization_details`, `access_denied`, and
 * 429 (too many of the agent's requests are pending).
 */
export async function requestApproval(c: ClientState, request: ApprovalRequest): Promise<PendingApproval> {
  const { params, audience, scopes } = approvalParams(request)
  const signal = request.signal ?? new AbortController().signal
  const as = await backchannelMetadata(c, signal)
  const client: oauth.Client = { client_id: c.self.clientId }
  const { response, sentAt, attempts } = await sendRetried(
    c,
    signal,
    (auth) => oauth.backchannelAuthenticationRequest(as, client, auth, params, requestOptions(c, signal)),
    c.self,
  )
  let body: oauth.BackchannelAuthenticationResponse
  try {
    body = await oauth.processBackchannelAuthenticationResponse(as, client, response)
  } catch {
    // No cause: oauth4webapi's error carries the body, which holds the auth_req_id.
    throw new MandateClientError('invalid_response', 'the backchannel authentication response is not well-formed', { status: 200, attempts })
  }
  const interval = body.interval ?? DEFAULT_INTERVAL
  if (!(body.expires_in > 0) || !(interval >= 0)) {
    throw new MandateClientError('invalid_response', 'the backchannel authentication response has a bad expires_in or interval', { status: 200, attempts })
  }
  return { authReqId: body.auth_req_id, expiresIn: body.expires_in, interval, expiresAt: sentAt + body.expires_in * 1000, audience, scope: scopes }
}

/** The metadata, which must name a backchannel authentication endpoint offering poll mode (CIBA §4). */
async function backchannelMetadata(c: ClientState, signal: AbortSignal): Promise<oauth.AuthorizationServer> {
  const as = await discover(c, signal)
  const endpoint = as.backchannel_authentication_endpoint
  const modes = as.backchannel_token_delivery_modes_supported
  if (typeof endpoint !== 'string' || (Array.isArray(modes) && !modes.includes('poll'))) {
    throw new MandateClientError('unauthorized_client', 'the broker offers no human approval (no CIBA poll mode in its metadata)')
  }
  if (new URL(endpoint).origin !== new URL(as.token_endpoint!).origin) {
    // The login_hint_token is the user's token: it goes only where the token endpoint is.
    throw new MandateClientError('invalid_response', "the broker's backchannel_authentication_endpoint is not at its token endpoint's origin")
  }
  return as
}

/**
 * CIBA §7.3 and §11: polls the token endpoint every `interval` seconds
 * (the first poll too), 5 s slower after each `slow_down`, until a person
 * decides. Resolves with the token and the approved details. 429 and 503
 * are waited out (their Retry-After, at least the interval) until the
 * request expires. Throws `MandateClientError`: `access_denied` (denied, or
 * cancelled by a revocation), `expired_token` (nobody decided in time),
 * `invalid_grant` (unknown, or its token was already issued), or any other
 * refusal; and the signal's reason when it aborts.
 */
export async function waitForApproval(c: ClientState, pending: PendingApproval, options: WaitOptions = {}): Promise<ApprovedToken> {
  if (typeof (pending as Partial<PendingApproval> | undefined)?.authReqId !== 'string' || pending.authReqId === '')
    throw new TypeError('waitForApproval takes what requestApproval returned')
  const signal = options.signal ?? new AbortController().signal
  const as = await discover(c, signal)
  const client: oauth.Client = { client_id: c.self.clientId }
  const sendOptions = await tokenRequestOptions(c, signal)
  let interval = Math.max(pending.interval, 0)
  let wait = interval
  let nonceRetried = false
  for (let attempt = 1; ; attempt++) {
    await c.clock.sleep(wait * 1000, signal)
    const sentAt = c.clock.now()
    const auth = await c.self.auth[APPLY](Math.floor(sentAt / 1000), signal)
    const response = await oauth.backchannelAuthenticationGrantRequest(as, client, auth, pending.authReqId, sendOptions)
    if (response.status === 200) return approvedToken(c, as, client, response, pending, sentAt, attempt)
    const retryable = isRetryableStatus(response.status)
    const retryAfter = retryable ? parseRetryAfter(response.headers.get('retry-after'), c.clock.now()) : undefined
    const error = await errorFromResponse(response, retryAfter, attempt)
    // RFC 9449 §8: the DPoP handle has learned the broker's nonce; poll again at once, once in a row.
    const nonceRetry: boolean = isNonceRefusal(c, error, response) && !nonceRetried
    nonceRetried = nonceRetry
    if (nonceRetry) {
      wait = 0
      continue
    }
    if (retryable) {
      // The broker is busy or down; the request may still be decided. Past its expiry there is nothing left to wait for.
      if (c.clock.now() >= pending.expiresAt) throw error
      wait = Math.max(interval, retryAfter ?? 0)
      continue
    }
    if (error.error === 'slow_down') interval += SLOW_DOWN_STEP
    else if (error.error !== 'authorization_pending') throw error
    if (c.clock.now() >= pending.expiresAt + EXPIRY_GRACE_MS) {
      throw new MandateClientError('expired_token', 'the approval request expired without a decision', { status: response.status, attempts: attempt })
    }
    wait = interval
  }
}

/** The 200 answer of a poll (RFC 8693 §2.2.1 plus RFC 9396 §7's `authorization_details`); `invalid_response` when it is not well-formed. */
async function approvedToken(
  c: ClientState,
  as: oauth.AuthorizationServer,
  client: oauth.Client,
  response: Response,
  pending: PendingApproval,
  sentAt: number,
  attempts: number,
): Promise<ApprovedToken> {
  let body: oauth.TokenEndpointResponse
  try {
    body = await oauth.processBackchannelAuthenticationGrantResponse(as, client, response)
  } catch {
    // No cause: oauth4webapi's error carries the body, which holds the access token.
    throw new MandateClientError('invalid_response', 'the token response is not well-formed', { status: 200, attempts })
  }
  const details: unknown = body.authorization_details ?? []
  if (!Array.isArray(details) || !details.every((d: unknown) => typeof d === 'object' && d !== null && typeof (d as { type?: unknown }).type === 'string')) {
    throw new MandateClientError('invalid_response', 'the token response’s authorization_details is not an array of typed objects', { status: 200, attempts })
  }
  return { ...(await tokenFromBody(c, body, pending.audience, pending.scope, sentAt, attempts)), authorizationDetails: details as AuthorizationDetail[] }
}
