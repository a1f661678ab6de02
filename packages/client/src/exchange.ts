/**
 * The client's requests to the broker: its metadata (RFC 8414), fetched once,
 * and the token exchange (RFC 8693) with the retries the broker's answers
 * allow. Each function takes the client's `ClientState`.
 */
import * as oauth from 'oauth4webapi'
import { APPLY } from './auth.js'
import type { Actor, ClientState, MandateToken } from './client.js'
import { boundJktOf, rememberNonce } from './dpop.js'
import { errorFromResponse, MandateClientError } from './errors.js'
import { backoffDelay, isRetryableStatus, parseRetryAfter } from './retry.js'

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i

/** The issuer as a URL; `TypeError` unless it is https (http on loopback, or when `insecure`) with no query or fragment. */
export function checkedIssuer(issuer: string, insecure: boolean): URL {
  let url: URL
  try {
    url = new URL(issuer)
  } catch {
    throw new TypeError('issuer must be an absolute URL')
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && (insecure || LOOPBACK.test(url.hostname)))) {
    throw new TypeError('issuer must be https (http only on loopback, or with allowInsecureRequests)')
  }
  if (url.search !== '' || url.hash !== '') throw new TypeError('issuer must not have a query or fragment (RFC 8414 §2)')
  return url
}

/** oauth4webapi's options for one request: the client's fetch, and `signal`. */
export function requestOptions(c: ClientState, signal: AbortSignal) {
  return {
    signal,
    [oauth.customFetch]: async (url: string, init: oauth.CustomFetchOptions<'GET' | 'POST', URLSearchParams | undefined>) => {
      const response = await c.fetch(url, init as RequestInit)
      // The broker's nonce, also for the delegation proofs this client makes (oauth4webapi's handle keeps its own copy).
      if (c.dpop !== undefined) rememberNonce(c.dpop, url, response)
      return response
    },
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- oauth4webapi's one switch for http endpoints; deprecated to stand out, and on only for an issuer checkedIssuer let through
    ...(c.insecure ? { [oauth.allowInsecureRequests]: true } : {}),
  }
}

/** `requestOptions` for a token request: with the client's DPoP handle when it has a key (RFC 9449 §5). */
export async function tokenRequestOptions(c: ClientState, signal: AbortSignal) {
  return c.dpop === undefined ? requestOptions(c, signal) : { ...requestOptions(c, signal), DPoP: (await c.dpop.key).handle }
}

/** The broker's metadata: fetched by the first call, shared by the calls after it; a failed discovery is tried again by the next call, not remembered. */
export function discover(c: ClientState, signal: AbortSignal): Promise<oauth.AuthorizationServer> {
  const metadata = (c.metadata ??= fetchMetadata(c, signal))
  metadata.catch(() => {
    // Only this attempt: a later call may already have started a newer one.
    if (c.metadata === metadata) c.metadata = undefined
  })
  return metadata
}

async function fetchMetadata(c: ClientState, signal: AbortSignal): Promise<oauth.AuthorizationServer> {
  const response = await oauth.discoveryRequest(c.issuer, { algorithm: 'oauth2', ...requestOptions(c, signal) })
  let as: oauth.AuthorizationServer
  try {
    as = await oauth.processDiscoveryResponse(c.issuer, response)
  } catch (cause) {
    throw new MandateClientError('invalid_response', "the broker's authorization server metadata (RFC 8414) is not usable", { status: response.status, cause })
  }
  if (typeof as.token_endpoint !== 'string') throw new MandateClientError('invalid_response', "the broker's metadata has no token_endpoint")
  const endpoint = new URL(as.token_endpoint)
  if (endpoint.protocol !== 'https:' && !(c.allowInsecureRequests || LOOPBACK.test(endpoint.hostname))) {
    throw new MandateClientError('invalid_response', "the broker's token_endpoint is not https")
  }
  return as
}

/** A 200 answer, with when its request was sent (epoch ms, the client's clock) and how many requests it took. */
export interface Answered {
  readonly response: Response
  readonly sentAt: number
  readonly attempts: number
}

/**
 * Sends a request made by `send` (once per attempt: an assertion's jti is
 * single-use) until the broker answers 200, retrying while its answer says a
 * retry may succeed (429, 503; its Retry-After honoured) within
 * `retry.maxAttempts` and `retry.maxWaitMs`; `signal` aborts it. A
 * `use_dpop_nonce` refusal with a `DPoP-Nonce` (RFC 9449 §8) is sent again
 * at once, once: the DPoP handle has learned the nonce. Throws
 * `MandateClientError` for any other answer, or the last one.
 */
export async function sendRetried(c: ClientState, signal: AbortSignal, send: (auth: oauth.ClientAuth) => Promise<Response>, actor: Actor): Promise<Answered> {
  let waited = 0
  let nonceRetried = false
  for (let attempt = 1; ; attempt++) {
    const sentAt = c.clock.now()
    // Applied for each attempt: an assertion's jti is single-use, and a workload token file may have rotated.
    const auth = await actor.auth[APPLY](Math.floor(sentAt / 1000), signal)
    const response = await send(auth)
    if (response.status === 200) return { response, sentAt, attempts: attempt }
    const retryAfter = isRetryableStatus(response.status) ? parseRetryAfter(response.headers.get('retry-after'), c.clock.now()) : undefined
    const error = await errorFromResponse(response, retryAfter, attempt)
    if (isNonceRefusal(c, error, response) && !nonceRetried) {
      nonceRetried = true
      continue
    }
    if (!isRetryableStatus(response.status) || attempt >= c.retry.maxAttempts) throw error
    const delay = backoffDelay(c.retry, attempt, retryAfter)
    if (waited + delay > c.retry.maxWaitMs) throw error
    waited += delay
    await c.clock.sleep(delay, signal)
  }
}

/** RFC 9449 §8: the broker wants its nonce in the proof, and sent one (which the DPoP handle has learned). */
export function isNonceRefusal(c: ClientState, error: MandateClientError, response: Response): boolean {
  return c.dpop !== undefined && error.error === 'use_dpop_nonce' && response.headers.has('dpop-nonce')
}

/** One exchange's subject and what it asks for. */
export interface ExchangeRequest {
  readonly subjectToken: string
  /** The `subject_token_dpop` to send: the holder's proof for a DPoP-bound subject token, or how to make a new one for each attempt. */
  readonly subjectTokenProof: string | (() => Promise<string>) | undefined
  readonly audience: string
  readonly scopes: readonly string[] | undefined
}

/**
 * One exchange, retried as `sendRetried` says; `signal` aborts it. With a
 * DPoP key, each attempt carries a fresh proof of it. Throws
 * `MandateClientError`.
 */
export async function exchange(c: ClientState, request: ExchangeRequest, actor: Actor, signal: AbortSignal): Promise<MandateToken> {
  const { subjectToken, subjectTokenProof, audience, scopes } = request
  const as = await discover(c, signal)
  const client: oauth.Client = { client_id: actor.clientId }
  const params = new URLSearchParams({ subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, audience })
  if (scopes !== undefined) params.set('scope', scopes.join(' '))
  const options = await tokenRequestOptions(c, signal)
  const send = async (auth: oauth.ClientAuth) => {
    if (subjectTokenProof !== undefined) params.set('subject_token_dpop', typeof subjectTokenProof === 'string' ? subjectTokenProof : await subjectTokenProof())
    return oauth.genericTokenEndpointRequest(as, client, auth, TOKEN_EXCHANGE, params, options)
  }
  const { response, sentAt, attempts } = await sendRetried(c, signal, send, actor)
  return tokenOf(c, as, client, response, audience, scopes, sentAt, attempts)
}

/** The token a 200 answer holds (RFC 8693 §2.2.1); `MandateClientError` when it is not well-formed. */
async function tokenOf(
  c: ClientState,
  as: oauth.AuthorizationServer,
  client: oauth.Client,
  response: Response,
  audience: string,
  scopes: readonly string[] | undefined,
  sentAt: number,
  attempts: number,
): Promise<MandateToken> {
  let body: oauth.TokenEndpointResponse
  try {
    body = await oauth.processGenericTokenEndpointResponse(as, client, response)
  } catch {
    // No cause: oauth4webapi's error carries the response body, which may hold the access token.
    throw new MandateClientError('invalid_response', 'the token response is not well-formed', { status: response.status, attempts })
  }
  return tokenFromBody(c, body, audience, scopes, sentAt, attempts)
}

/**
 * A token response oauth4webapi parsed, as a `MandateToken`:
 * `MandateClientError` `invalid_response` unless it has `issued_token_type`,
 * `expires_in` and a `token_type` of `Bearer`, or of `DPoP` when the request
 * carried a proof (RFC 9449 §5) and the token names no other key than the
 * client's.
 */
export async function tokenFromBody(
  c: ClientState,
  body: oauth.TokenEndpointResponse,
  audience: string,
  scopes: readonly string[] | undefined,
  sentAt: number,
  attempts: number,
): Promise<MandateToken> {
  const issued = body['issued_token_type']
  const expiresIn = body.expires_in
  // RFC 8693 §2.2.1: issued_token_type is required; Mandate always says how long a token lives.
  const dpop = body.token_type === 'dpop' && c.dpop !== undefined
  if (typeof issued !== 'string' || expiresIn === undefined || !(expiresIn > 0) || !(dpop || body.token_type === 'bearer')) {
    throw new MandateClientError(
      'invalid_response',
      'the token response lacks issued_token_type, expires_in or a Bearer (or, with a DPoP key, DPoP) token_type',
      {
        status: 200,
        attempts,
      },
    )
  }
  if (dpop) {
    const jkt = boundJktOf(body.access_token)
    // A token bound to another key is of no use here: no proof this client makes would be accepted with it.
    if (jkt !== undefined && jkt !== (await c.dpop.key).jkt) {
      throw new MandateClientError('invalid_response', "the DPoP token is bound to a key other than the client's", { status: 200, attempts })
    }
  }
  const granted = typeof body.scope === 'string' ? body.scope.split(' ').filter((s) => s !== '') : (scopes ?? [])
  return {
    accessToken: body.access_token,
    tokenType: dpop ? 'DPoP' : 'Bearer',
    issuedTokenType: issued,
    audience,
    scope: granted,
    expiresAt: sentAt + expiresIn * 1000,
  }
}
