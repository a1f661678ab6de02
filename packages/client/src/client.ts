/**
 * The Mandate client: discovers the broker's token endpoint (RFC 8414),
 * exchanges tokens (RFC 8693), caches what it got until shortly before it
 * expires, shares one request among concurrent callers that want the same
 * token, and retries what the broker says may succeed later.
 */
import { createHash } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import { APPLY, type ClientAuth } from './auth.js'
import { TokenCache } from './cache.js'
import { errorFromResponse, MandateClientError } from './errors.js'
import { backoffDelay, isRetryableStatus, parseRetryAfter, retryPolicy, sleep, type RetryOptions, type RetryPolicy } from './retry.js'

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/
/** An audience is a URI or a name the broker's policies list; it is sent as a form value, so only printable text. */
const AUDIENCE = /^[\x21-\x7E]{1,2048}$/

/** Time as the client sees it: the cache and the retries read it, tests inject it. */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number
  /** Resolves after `ms`; rejects with the signal's reason when it aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>
}

export interface CacheOptions {
  /** Tokens kept at most; the least recently used goes first (default 1000; 0 turns caching off). */
  readonly maxEntries?: number
  /** A token is refreshed this many seconds before it expires, or 10 % of its lifetime before when that is less (default 30). */
  readonly refreshMarginSeconds?: number
}

export interface ClientOptions {
  /** The broker's issuer identifier (its `issuer` config), e.g. `https://mandate.example.com`. */
  readonly issuer: string
  /** The agent id, as its policy's `agent`. */
  readonly clientId: string
  /** How the agent authenticates: `privateKeyJwt`, `clientSecret` or `workloadIdentity`. */
  readonly auth: ClientAuth
  /** A fetch to send every request with (a proxy, mTLS, a test's counter); the global fetch by default. */
  readonly fetch?: typeof fetch
  readonly cache?: CacheOptions
  readonly retry?: RetryOptions
  readonly clock?: Partial<Clock>
  /**
   * Allow `http:` for the issuer and its endpoints on a host other than
   * loopback. Development only: tokens and secrets would cross the network
   * in clear. Loopback (`localhost`, `127.0.0.0/8`, `[::1]`) is always allowed.
   */
  readonly allowInsecureRequests?: boolean
}

/** What a token is asked for: one audience (RFC 8693 §2.1), and scopes (default: the policy's `default_scopes`). */
export interface TokenRequest {
  readonly audience: string
  /** Space-separated, or a list; left out, the broker grants the policy's default scopes for the audience. */
  readonly scope?: string | readonly string[]
  readonly signal?: AbortSignal
}

export interface GetTokenRequest extends TokenRequest {
  /** The user's access token (or a parent Mandate token). A secret: it is never logged, and the cache keys it by its SHA-256. */
  readonly subjectToken: string
}

/** The sub-agent that takes a hop: its agent id and how it authenticates. */
export interface Actor {
  readonly clientId: string
  readonly auth: ClientAuth
}

export interface DelegateRequest extends TokenRequest {
  /** The parent agent's Mandate token. */
  readonly parentToken: string
  /** The sub-agent that will hold the new token; by default the agent of this client. */
  readonly actor?: Actor
}

/** A Mandate access token (RFC 8693 §2.2.1). */
export interface MandateToken {
  readonly accessToken: string
  readonly tokenType: 'Bearer'
  /** RFC 8693 `issued_token_type`. */
  readonly issuedTokenType: string
  readonly audience: string
  /** The scopes granted: the answer's `scope`, else those asked for (RFC 8693 §2.2.1: omitted when identical). */
  readonly scope: readonly string[]
  /** Epoch ms at which it expires, by the client's clock when the request was sent. */
  readonly expiresAt: number
}

/** Which audience and scopes a request to `url` needs; undefined sends it without a token. */
export type AudienceFor = (url: URL) => { readonly audience: string; readonly scope?: string | readonly string[] } | undefined

export interface FetchOptions {
  readonly audienceFor: AudienceFor
}

export interface MandateClient {
  /** RFC 8693 exchange of `subjectToken` for a token to `audience`, from the cache when one is fresh. Throws `MandateClientError`. */
  getToken(request: GetTokenRequest): Promise<MandateToken>
  /** A delegation hop: the parent's Mandate token exchanged for a narrower one held by `actor`. Throws `MandateClientError`. */
  delegate(request: DelegateRequest): Promise<MandateToken>
  /**
   * A fetch that attaches `Authorization: Bearer` with the token for each
   * request's audience. A 401 whose challenge says `error="invalid_token"`
   * (RFC 6750 §3.1: revoked, expired) drops that token and retries once
   * with a new one.
   */
  fetch(subjectToken: string, options: FetchOptions): (input: string | URL | Request, init?: RequestInit) => Promise<Response>
  /** Drops a cached token (e.g. one a resource server refused by other means). */
  forget(request: GetTokenRequest | DelegateRequest): void
  /** Tokens cached now. */
  readonly cachedTokens: number
  /** Drops every cached token. */
  clear(): void
}

interface Flight {
  readonly promise: Promise<MandateToken>
  readonly controller: AbortController
  waiters: number
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i

function checkedIssuer(issuer: string, insecure: boolean): URL {
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

function scopesOf(scope: string | readonly string[] | undefined): readonly string[] | undefined {
  if (scope === undefined) return undefined
  const list = typeof scope === 'string' ? scope.split(' ').filter((s) => s !== '') : scope
  for (const s of list) if (typeof s !== 'string' || !SCOPE_TOKEN.test(s)) throw new TypeError('scope: each scope must be an RFC 6749 §3.3 scope-token')
  return [...new Set(list)].sort()
}

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('base64url')

/**
 * Makes a client for one agent at one broker. Nothing is sent until the first
 * token is asked for; the broker's metadata is then fetched once (again
 * only after a failure). Throws `TypeError` for options that cannot work.
 */
export function createClient(options: ClientOptions): MandateClient {
  if (typeof options.clientId !== 'string' || options.clientId === '') throw new TypeError('clientId must be a non-empty string')
  if (typeof options.auth !== 'object' || typeof options.auth[APPLY] !== 'function')
    throw new TypeError('auth must come from privateKeyJwt, clientSecret or workloadIdentity')
  const issuer = checkedIssuer(options.issuer, options.allowInsecureRequests === true)
  // oauth4webapi's switch is all or nothing: it is on for an http issuer we allowed above, whose metadata is then checked below.
  const insecure = issuer.protocol === 'http:'
  const fetchImpl = options.fetch ?? globalThis.fetch
  const clock: Clock = { now: options.clock?.now ?? Date.now, sleep: options.clock?.sleep ?? sleep }
  const retry: RetryPolicy = retryPolicy(options.retry)
  const marginMs = (options.cache?.refreshMarginSeconds ?? 30) * 1000
  if (!(marginMs >= 0)) throw new TypeError('cache.refreshMarginSeconds must be non-negative')
  const cache = new TokenCache<MandateToken>(options.cache?.maxEntries ?? 1000, () => clock.now())
  const flights = new Map<string, Flight>()
  const requestOptions = (signal: AbortSignal) => ({
    signal,
    [oauth.customFetch]: (url: string, init: oauth.CustomFetchOptions<'GET' | 'POST', URLSearchParams | undefined>) => fetchImpl(url, init as RequestInit),
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- oauth4webapi's one switch for http endpoints; deprecated to stand out, and on only for an issuer checkedIssuer let through
    ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}),
  })

  let metadata: Promise<oauth.AuthorizationServer> | undefined
  const discover = (signal: AbortSignal): Promise<oauth.AuthorizationServer> => {
    metadata ??= (async () => {
      const response = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...requestOptions(signal) })
      let as: oauth.AuthorizationServer
      try {
        as = await oauth.processDiscoveryResponse(issuer, response)
      } catch (cause) {
        throw new MandateClientError('invalid_response', "the broker's authorization server metadata (RFC 8414) is not usable", {
          status: response.status,
          cause,
        })
      }
      if (typeof as.token_endpoint !== 'string') throw new MandateClientError('invalid_response', "the broker's metadata has no token_endpoint")
      const endpoint = new URL(as.token_endpoint)
      if (endpoint.protocol !== 'https:' && !(options.allowInsecureRequests === true || LOOPBACK.test(endpoint.hostname))) {
        throw new MandateClientError('invalid_response', "the broker's token_endpoint is not https")
      }
      return as
    })()
    // A failed discovery is tried again by the next call, not remembered.
    metadata.catch(() => (metadata = undefined))
    return metadata
  }

  /** One exchange with its retries; `signal` aborts it. */
  async function exchange(
    subjectToken: string,
    actor: Actor,
    audience: string,
    scopes: readonly string[] | undefined,
    signal: AbortSignal,
  ): Promise<MandateToken> {
    const as = await discover(signal)
    const client: oauth.Client = { client_id: actor.clientId }
    let waited = 0
    for (let attempt = 1; ; attempt++) {
      const sentAt = clock.now()
      const params = new URLSearchParams({ subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, audience })
      if (scopes !== undefined) params.set('scope', scopes.join(' '))
      // Applied for each attempt: an assertion's jti is single-use, and a workload token file may have rotated.
      const auth = await actor.auth[APPLY](Math.floor(sentAt / 1000), signal)
      const response = await oauth.genericTokenEndpointRequest(as, client, auth, TOKEN_EXCHANGE, params, requestOptions(signal))
      if (response.status === 200) return tokenOf(as, client, response, audience, scopes, sentAt, attempt)
      const retryAfter = isRetryableStatus(response.status) ? parseRetryAfter(response.headers.get('retry-after'), clock.now()) : undefined
      const error = await errorFromResponse(response, retryAfter, attempt)
      if (!isRetryableStatus(response.status) || attempt >= retry.maxAttempts) throw error
      const delay = backoffDelay(retry, attempt, retryAfter)
      if (waited + delay > retry.maxWaitMs) throw error
      waited += delay
      await clock.sleep(delay, signal)
    }
  }

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

  /** Shares one exchange among the callers that want the same token; it is aborted only once every one of them has given up. */
  function join(key: string, start: (signal: AbortSignal) => Promise<MandateToken>, signal: AbortSignal | undefined): Promise<MandateToken> {
    let flight = flights.get(key)
    if (flight === undefined) {
      const controller = new AbortController()
      const promise = start(controller.signal).finally(() => {
        if (flights.get(key) === flight) flights.delete(key)
      })
      // Every waiter may have left; the outcome is then nobody's, and must not surface as unhandled.
      promise.catch(() => {})
      flight = { promise, controller, waiters: 0 }
      flights.set(key, flight)
    }
    const joined = flight
    joined.waiters++
    if (signal === undefined) return joined.promise
    return new Promise((resolve, reject) => {
      const leave = () => {
        if (--joined.waiters === 0) joined.controller.abort(signal.reason)
        reject(signal.reason as Error)
      }
      if (signal.aborted) {
        leave()
        return
      }
      signal.addEventListener('abort', leave, { once: true })
      joined.promise.then(
        (token) => {
          signal.removeEventListener('abort', leave)
          resolve(token)
        },
        (err: unknown) => {
          signal.removeEventListener('abort', leave)
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- passes on the shared exchange's own rejection, whatever it is
          reject(err)
        },
      )
    })
  }

  const self: Actor = { clientId: options.clientId, auth: options.auth }

  function keyOf(actor: Actor, subjectToken: string, audience: string, scopes: readonly string[] | undefined): string {
    // Only digests: the cache holds no subject token, not even as a key.
    return sha256(JSON.stringify([actor.clientId, sha256(subjectToken), audience, scopes ?? null]))
  }

  function parse(subjectToken: string, request: TokenRequest, actor: Actor) {
    if (typeof subjectToken !== 'string' || subjectToken === '') throw new TypeError('the subject token must be a non-empty string')
    if (typeof request.audience !== 'string' || !AUDIENCE.test(request.audience)) throw new TypeError('audience must be a non-empty printable string')
    if (typeof actor.clientId !== 'string' || actor.clientId === '' || typeof actor.auth[APPLY] !== 'function') {
      throw new TypeError('actor must have a clientId and an auth from privateKeyJwt, clientSecret or workloadIdentity')
    }
    const scopes = scopesOf(request.scope)
    return { scopes, key: keyOf(actor, subjectToken, request.audience, scopes) }
  }

  function obtain(subjectToken: string, request: TokenRequest, actor: Actor): Promise<MandateToken> {
    const { scopes, key } = parse(subjectToken, request, actor)
    const cached = cache.get(key)
    if (cached !== undefined) return Promise.resolve(cached)
    return join(
      key,
      async (signal) => {
        const token = await exchange(subjectToken, actor, request.audience, scopes, signal)
        const lifetime = token.expiresAt - clock.now()
        cache.set(key, token, token.expiresAt - Math.min(marginMs, lifetime * 0.1))
        return token
      },
      request.signal,
    )
  }

  const actorOf = (request: GetTokenRequest | DelegateRequest): [string, Actor] =>
    'parentToken' in request ? [request.parentToken, request.actor ?? self] : [request.subjectToken, self]

  return {
    getToken: (request) => obtain(request.subjectToken, request, self),
    delegate: (request) => obtain(request.parentToken, request, request.actor ?? self),
    forget(request) {
      const [subject, actor] = actorOf(request)
      cache.delete(parse(subject, request, actor).key)
    },
    get cachedTokens() {
      return cache.size
    },
    clear: () => cache.clear(),
    fetch(subjectToken, fetchOptions) {
      return async (input, init) => {
        const request = new Request(input, init)
        const target = fetchOptions.audienceFor(new URL(request.url))
        if (target === undefined) return fetchImpl(request)
        const tokenRequest: GetTokenRequest = {
          subjectToken,
          audience: target.audience,
          signal: request.signal,
          ...(target.scope === undefined ? {} : { scope: target.scope }),
        }
        // Kept for the one retry: a body can be sent only once.
        const spare = request.clone()
        const send = (req: Request, token: MandateToken) => {
          const headers = new Headers(req.headers)
          headers.set('authorization', `Bearer ${token.accessToken}`)
          return fetchImpl(new Request(req, { headers }))
        }
        const token = await obtain(subjectToken, tokenRequest, self)
        const response = await send(request, token)
        if (response.status !== 401 || !invalidTokenChallenge(response.headers.get('www-authenticate'))) {
          await spare.body?.cancel()
          return response
        }
        await response.body?.cancel()
        cache.delete(parse(subjectToken, tokenRequest, self).key, token)
        return send(spare, await obtain(subjectToken, tokenRequest, self))
      }
    },
  }
}

/** RFC 6750 §3: a Bearer challenge with `error="invalid_token"` (the token is expired, revoked or otherwise not accepted). */
function invalidTokenChallenge(header: string | null): boolean {
  if (header === null) return false
  return /(^|,)\s*Bearer\b[^]*?\berror\s*=\s*"?invalid_token"?/i.test(header)
}
