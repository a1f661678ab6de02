/**
 * The client's requests to the broker: its metadata (RFC 8414), fetched once,
 * and the token exchange (RFC 8693) with the retries the broker's answers
 * allow. Each function takes the client's `ClientState`.
 */
import * as oauth from 'oauth4webapi'
import { APPLY } from './auth.js'
import type { Actor, ClientState, MandateToken } from './client.js'
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
    [oauth.customFetch]: (url: string, init: oauth.CustomFetchOptions<'GET' | 'POST', URLSearchParams | undefined>) => c.fetch(url, init as RequestInit),
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- oauth4webapi's one switch for http endpoints; deprecated to stand out, and on only for an issuer checkedIssuer let through
    ...(c.insecure ? { [oauth.allowInsecureRequests]: true } : {}),
  }
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
 * `retry.maxAttempts` and `retry.maxWaitMs`; `signal` aborts it. Throws
 * `MandateClientError` for any other answer, or the last one.
 */
export async function sendRetried(c: ClientState, signal: AbortSignal, send: (auth: oauth.ClientAuth) => Promise<Response>, actor: Actor): Promise<Answered> {
  let waited = 0
  for (let attempt = 1; ; attempt++) {
    const sentAt = c.clock.now()
    // Applied for each attempt: an assertion's jti is single-use, and a workload token file may have rotated.
    const auth = await actor.auth[APPLY](Math.floor(sentAt / 1000), signal)
    const response = await send(auth)
    if (response.status === 200) return { response, sentAt, attempts: attempt }
    const retryAfter = isRetryableStatus(response.status) ? parseRetryAfter(response.headers.get('retry-after'), c.clock.now()) : undefined
    const error = await errorFromResponse(response, retryAfter, attempt)
    if (!isRetryableStatus(response.status) || attempt >= c.retry.maxAttempts) throw error
    const delay = backoffDelay(c.retry, attempt, retryAfter)
    if (waited + delay > c.retry.maxWaitMs) throw error
    waited += delay
    await c.clock.sleep(delay, signal)
  }
}

/**
 * One exchange, retried as `sendRetried` says; `signal` aborts it. Throws
 * `MandateClientError`.
 */
export async function exchange(
  c: ClientState,
  subjectToken: string,
  actor: Actor,
  audience: string,
  scopes: readonly string[] | undefined,
  signal: AbortSignal,
): Promise<MandateToken> {
  const as = await discover(c, signal)
  const client: oauth.Client = { client_id: actor.clientId }
  const params = new URLSearchParams({ subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, audience })
  if (scopes !== undefined) params.set('scope', scopes.join(' '))
  const { response, sentAt, attempts } = await sendRetried(
    c,
    signal,
    (auth) => oauth.genericTokenEndpointRequest(as, client, auth, TOKEN_EXCHANGE, params, requestOptions(c, signal)),
    actor,
  )
  return tokenOf(as, client, response, audience, scopes, sentAt, attempts)
}

/** The token a 200 answer holds (RFC 8693 §2.2.1); `MandateClientError` when it is not well-formed. */
async function tokenOf(
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
  return tokenFromBody(body, audience, scopes, sentAt, attempts)
}

/**
 * A token response oauth4webapi parsed, as a `MandateToken`:
 * `MandateClientError` `invalid_response` unless it has `issued_token_type`,
 * `expires_in` and a Bearer `token_type`.
 */
export function tokenFromBody(
  body: oauth.TokenEndpointResponse,
  audience: string,
  scopes: readonly string[] | undefined,
  sentAt: number,
  attempts: number,
): MandateToken {
  const issued = body['issued_token_type']
  const expiresIn = body.expires_in
  // RFC 8693 §2.2.1: issued_token_type is required; Mandate always says how long a token lives.
  if (typeof issued !== 'string' || expiresIn === undefined || !(expiresIn > 0) || body.token_type !== 'bearer') {
    throw new MandateClientError('invalid_response', 'the token response lacks issued_token_type, expires_in or a Bearer token_type', {
      status: 200,
      attempts,
    })
  }
  const granted = typeof body.scope === 'string' ? body.scope.split(' ').filter((s) => s !== '') : (scopes ?? [])
  return { accessToken: body.access_token, tokenType: 'Bearer', issuedTokenType: issued, audience, scope: granted, expiresAt: sentAt + expiresIn * 1000 }
}
