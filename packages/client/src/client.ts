/**
 * The Mandate client: discovers the broker's token endpoint (RFC 8414),
 * exchanges tokens (RFC 8693), caches what it got until shortly before it
 * expires, shares one request among concurrent callers that want the same
 * token (flight.ts), and retries what the broker says may succeed later
 * (exchange.ts). Every function here takes one `ClientState`.
 */
import { createHash } from 'node:crypto'
import type * as oauth from 'oauth4webapi'
import { requestApproval, waitForApproval, type ApprovalRequest, type ApprovedToken, type PendingApproval, type WaitOptions } from './approval.js'
import { APPLY, type ClientAuth } from './auth.js'
import { TokenCache } from './cache.js'
import { checkedIssuer, exchange } from './exchange.js'
import { checkedAudience, scopesOf } from './params.js'
import { joinFlight, type Flight } from './flight.js'
import { retryPolicy, sleep, type RetryOptions, type RetryPolicy } from './retry.js'

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
  /**
   * OpenID CIBA §7.1 (poll mode): asks for a token to `audience` that a
   * person must approve first, as the agent's policy says for that grant.
   * Returns the pending request; pass it to `waitForApproval`. Nothing is
   * cached. Throws `MandateClientError` (see `requestApproval` in approval.ts).
   */
  requestApproval(request: ApprovalRequest): Promise<PendingApproval>
  /**
   * Polls until the person decides (CIBA §7.3, §11: every `interval`
   * seconds, 5 s slower after each `slow_down`); resolves with the token and
   * the approved `authorizationDetails`. Throws `MandateClientError`
   * `access_denied`, `expired_token` or `invalid_grant`, or the signal's reason.
   */
  waitForApproval(pending: PendingApproval, options?: WaitOptions): Promise<ApprovedToken>
  /** Drops a cached token (e.g. one a resource server refused by other means). */
  forget(request: GetTokenRequest | DelegateRequest): void
  /** Tokens cached now. */
  readonly cachedTokens: number
  /** Drops every cached token. */
  clear(): void
}

/** Everything the client's functions share: its options as checked, its clock, its cache, the exchanges in flight. */
export interface ClientState {
  readonly issuer: URL
  /** oauth4webapi's switch is all or nothing: it is on for an http issuer checkedIssuer let through, whose metadata `discover` then checks. */
  readonly insecure: boolean
  /** `ClientOptions.allowInsecureRequests`. */
  readonly allowInsecureRequests: boolean
  readonly fetch: typeof fetch
  readonly clock: Clock
  readonly retry: RetryPolicy
  /** `cache.refreshMarginSeconds`, in ms. */
  readonly marginMs: number
  readonly cache: TokenCache<MandateToken>
  /** Exchanges in flight, by cache key. */
  readonly flights: Map<string, Flight<MandateToken>>
  /** The broker's metadata once asked for; undefined again after a failure. */
  metadata: Promise<oauth.AuthorizationServer> | undefined
  /** This client's own agent: the actor of `getToken`, and of `delegate` by default. */
  readonly self: Actor
}

/**
 * Makes a client for one agent at one broker. Nothing is sent until the first
 * token is asked for; the broker's metadata is then fetched once (again
 * only after a failure). Throws `TypeError` for options that cannot work.
 */
export function createClient(options: ClientOptions): MandateClient {
  const c = clientState(options)
  return {
    getToken: (request) => obtain(c, request.subjectToken, request, c.self),
    delegate: (request) => obtain(c, request.parentToken, request, request.actor ?? c.self),
    forget(request) {
      const [subject, actor] = actorOf(c, request)
      c.cache.delete(parse(subject, request, actor).key)
    },
    get cachedTokens() {
      return c.cache.size
    },
    clear: () => c.cache.clear(),
    fetch: (subjectToken, fetchOptions) => authorizedFetch(c, subjectToken, fetchOptions),
    requestApproval: (request) => requestApproval(c, request),
    waitForApproval: (pending, waitOptions) => waitForApproval(c, pending, waitOptions),
  }
}

/** The options checked (`TypeError` for one that cannot work), with their defaults. */
function clientState(options: ClientOptions): ClientState {
  if (typeof options.clientId !== 'string' || options.clientId === '') throw new TypeError('clientId must be a non-empty string')
  if (typeof options.auth !== 'object' || typeof options.auth[APPLY] !== 'function')
    throw new TypeError('auth must come from privateKeyJwt, clientSecret or workloadIdentity')
  const issuer = checkedIssuer(options.issuer, options.allowInsecureRequests === true)
  const clock: Clock = { now: options.clock?.now ?? Date.now, sleep: options.clock?.sleep ?? sleep }
  const retry = retryPolicy(options.retry)
  const marginMs = (options.cache?.refreshMarginSeconds ?? 30) * 1000
  if (!(marginMs >= 0)) throw new TypeError('cache.refreshMarginSeconds must be non-negative')
  return {
    issuer,
    insecure: issuer.protocol === 'http:',
    allowInsecureRequests: options.allowInsecureRequests === true,
    fetch: options.fetch ?? globalThis.fetch,
    clock,
    retry,
    marginMs,
    cache: new TokenCache<MandateToken>(options.cache?.maxEntries ?? 1000, () => clock.now()),
    flights: new Map(),
    metadata: undefined,
    self: { clientId: options.clientId, auth: options.auth },
  }
}

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('base64url')

function keyOf(actor: Actor, subjectToken: string, audience: string, scopes: readonly string[] | undefined): string {
  // Only digests: the cache holds no subject token, not even as a key.
  return sha256(JSON.stringify([actor.clientId, sha256(subjectToken), audience, scopes ?? null]))
}

/** A request checked (`TypeError` for one that cannot work): its scopes in order, and its cache key. */
function parse(subjectToken: string, request: TokenRequest, actor: Actor) {
  if (typeof subjectToken !== 'string' || subjectToken === '') throw new TypeError('the subject token must be a non-empty string')
  checkedAudience(request.audience)
  if (typeof actor.clientId !== 'string' || actor.clientId === '' || typeof actor.auth[APPLY] !== 'function') {
    throw new TypeError('actor must have a clientId and an auth from privateKeyJwt, clientSecret or workloadIdentity')
  }
  const scopes = scopesOf(request.scope)
  return { scopes, key: keyOf(actor, subjectToken, request.audience, scopes) }
}

/** The token from the cache when fresh, else from the exchange in flight for the same key, else from a new one (cached). */
function obtain(c: ClientState, subjectToken: string, request: TokenRequest, actor: Actor): Promise<MandateToken> {
  const { scopes, key } = parse(subjectToken, request, actor)
  const cached = c.cache.get(key)
  if (cached !== undefined) return Promise.resolve(cached)
  return joinFlight(
    c.flights,
    key,
    async (signal) => {
      const token = await exchange(c, subjectToken, actor, request.audience, scopes, signal)
      const lifetime = token.expiresAt - c.clock.now()
      c.cache.set(key, token, token.expiresAt - Math.min(c.marginMs, lifetime * 0.1))
      return token
    },
    request.signal,
  )
}

function actorOf(c: ClientState, request: GetTokenRequest | DelegateRequest): [string, Actor] {
  return 'parentToken' in request ? [request.parentToken, request.actor ?? c.self] : [request.subjectToken, c.self]
}

/** `MandateClient.fetch`. */
function authorizedFetch(c: ClientState, subjectToken: string, fetchOptions: FetchOptions) {
  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init)
    const target = fetchOptions.audienceFor(new URL(request.url))
    if (target === undefined) return c.fetch(request)
    const tokenRequest: GetTokenRequest = {
      subjectToken,
      audience: target.audience,
      signal: request.signal,
      ...(target.scope === undefined ? {} : { scope: target.scope }),
    }
    // Kept for the one retry: a body can be sent only once.
    const spare = request.clone()
    const token = await obtain(c, subjectToken, tokenRequest, c.self)
    const response = await sendWith(c, request, token)
    if (response.status !== 401 || !invalidTokenChallenge(response.headers.get('www-authenticate'))) {
      await spare.body?.cancel()
      return response
    }
    await response.body?.cancel()
    c.cache.delete(parse(subjectToken, tokenRequest, c.self).key, token)
    return sendWith(c, spare, await obtain(c, subjectToken, tokenRequest, c.self))
  }
}

/** `request` with `Authorization: Bearer` and the token (RFC 6750 §2.1). */
function sendWith(c: ClientState, request: Request, token: MandateToken): Promise<Response> {
  const headers = new Headers(request.headers)
  headers.set('authorization', `Bearer ${token.accessToken}`)
  return c.fetch(new Request(request, { headers }))
}

/** RFC 6750 §3: a Bearer challenge with `error="invalid_token"` (the token is expired, revoked or otherwise not accepted). */
function invalidTokenChallenge(header: string | null): boolean {
  if (header === null) return false
  return /(^|,)\s*Bearer\b[^]*?\berror\s*=\s*"?invalid_token"?/i.test(header)
}
