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
import { dpopState, boundJktOf, signProof, type DpopOption, type DpopState } from './dpop.js'
import { checkedIssuer, discover, exchange } from './exchange.js'
import { checkedAudience, scopesOf } from './params.js'
import { joinFlight, type Flight } from './flight.js'
import { authorizedFetch, fetchWithToken } from './resource.js'
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
  /**
   * DPoP (RFC 9449): every token request carries a proof of this key, and
   * the broker binds the tokens to it (`cnf.jkt`, `tokenType: 'DPoP'`).
   * `true` makes an ES256 key pair, once per client, whose private key
   * cannot be exported; or pass a `CryptoKeyPair` (ECDSA, RSA or Ed25519,
   * private key with the `sign` usage). One client is one key: a token it
   * gets is of use only with proofs this client (or another holding the
   * same key pair) makes.
   */
  readonly dpop?: DpopOption
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
  /** For a DPoP-bound subject token: its holder's proof for it (see `delegationProof`), sent as `subject_token_dpop`. */
  readonly subjectTokenProof?: string
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
  /**
   * For a DPoP-bound parent token: the parent's proof for it, from the
   * parent's `delegationProof(parentToken)`, sent as `subject_token_dpop`.
   * Left out when the parent token is bound to this client's own key: the
   * client makes it.
   */
  readonly subjectTokenProof?: string
}

/** A Mandate access token (RFC 8693 §2.2.1). */
export interface MandateToken {
  readonly accessToken: string
  /** `DPoP` when the broker bound it to the client's DPoP key (RFC 9449 §5): it is sent with a proof of that key. */
  readonly tokenType: 'Bearer' | 'DPoP'
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
   * A fetch that attaches the token for each request's audience, as
   * `fetchWithToken` does (`Authorization: Bearer`, or `DPoP` with a proof).
   * A 401 whose challenge says `error="invalid_token"` (RFC 6750 §3.1:
   * revoked, expired) drops that token and retries once with a new one; one
   * that asks for the server's DPoP nonce is sent again with it, once.
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
  /**
   * Sends one request to a resource server with `token`: `Authorization:
   * DPoP` and a proof of the client's key (RFC 9449 §7.1) for a DPoP token,
   * retried once when the server asks for its nonce (`use_dpop_nonce`, §9);
   * `Authorization: Bearer` for a Bearer token (RFC 6750 §2.1).
   */
  fetchWithToken(token: MandateToken, input: string | URL | Request, init?: RequestInit): Promise<Response>
  /**
   * RFC 9449: the proof a sub-agent sends with this client's DPoP-bound
   * `token` as its subject token (`subject_token_dpop`): signed with this
   * client's key, for a POST to the broker's token endpoint, `ath` the
   * token's hash. Single use and short-lived (the broker takes it for about
   * a minute): make one per hop, just before handing it over with the token.
   * `TypeError` without a DPoP key.
   */
  delegationProof(token: string, options?: { readonly signal?: AbortSignal }): Promise<string>
  /** The RFC 7638 thumbprint of the client's DPoP key: the `cnf.jkt` of its DPoP tokens. `TypeError` without a DPoP key. */
  dpopThumbprint(): Promise<string>
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
  /** `ClientOptions.dpop`: the key and the resource servers' nonces; undefined without one. */
  readonly dpop: DpopState | undefined
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
    fetchWithToken: (token, input, init) => fetchWithToken(c, token, input, init),
    delegationProof: (token, proofOptions) => delegationProof(c, token, proofOptions?.signal),
    dpopThumbprint: async () => (await dpopKey(c)).jkt,
    forget(request) {
      const [subject, actor] = actorOf(c, request)
      c.cache.delete(parse(c, subject, request, actor).key)
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
    dpop: dpopState(options.dpop, clock),
  }
}

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('base64url')

function keyOf(c: ClientState, actor: Actor, subjectToken: string, audience: string, scopes: readonly string[] | undefined): string {
  // Only digests: the cache holds no subject token, not even as a key. A client with a DPoP key asks for tokens bound to it,
  // one without for Bearer tokens: the two never share an entry.
  return sha256(JSON.stringify([c.dpop === undefined ? 'bearer' : 'dpop', actor.clientId, sha256(subjectToken), audience, scopes ?? null]))
}

/** A request checked (`TypeError` for one that cannot work): its scopes in order, and its cache key. */
export function parse(c: ClientState, subjectToken: string, request: TokenRequest, actor: Actor) {
  if (typeof subjectToken !== 'string' || subjectToken === '') throw new TypeError('the subject token must be a non-empty string')
  checkedAudience(request.audience)
  if (typeof actor.clientId !== 'string' || actor.clientId === '' || typeof actor.auth[APPLY] !== 'function') {
    throw new TypeError('actor must have a clientId and an auth from privateKeyJwt, clientSecret or workloadIdentity')
  }
  const scopes = scopesOf(request.scope)
  return { scopes, key: keyOf(c, actor, subjectToken, request.audience, scopes) }
}

/** The token from the cache when fresh, else from the exchange in flight for the same key, else from a new one (cached). */
export function obtain(c: ClientState, subjectToken: string, request: TokenRequest & { subjectTokenProof?: string }, actor: Actor): Promise<MandateToken> {
  const { scopes, key } = parse(c, subjectToken, request, actor)
  const given = request.subjectTokenProof
  if (given !== undefined && (typeof given !== 'string' || given === '')) throw new TypeError('subjectTokenProof must be a non-empty string')
  const cached = c.cache.get(key)
  if (cached !== undefined) return Promise.resolve(cached)
  return joinFlight(
    c.flights,
    key,
    async (signal) => {
      const subjectTokenProof = given ?? (await ownProof(c, subjectToken))
      const token = await exchange(c, { subjectToken, subjectTokenProof, audience: request.audience, scopes }, actor, signal)
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

/** The client's DPoP key; `TypeError` without one. */
async function dpopKey(c: ClientState) {
  if (c.dpop === undefined) throw new TypeError('this client has no DPoP key (ClientOptions.dpop)')
  return c.dpop.key
}

/** `MandateClient.delegationProof`: for a POST to the token endpoint, with `ath` and the broker's nonce when it has sent one. */
async function delegationProof(c: ClientState, token: string, signal: AbortSignal | undefined): Promise<string> {
  if (typeof token !== 'string' || token === '') throw new TypeError('the token must be a non-empty string')
  const key = await dpopKey(c)
  const as = await discover(c, signal ?? new AbortController().signal)
  const url = new URL(as.token_endpoint!)
  const nonce = c.dpop!.nonces.get(url.origin)
  return signProof(key, { htm: 'POST', url, accessToken: token, ...(nonce === undefined ? {} : { nonce }) }, c.clock)
}

/**
 * A subject token bound to this client's own key (a parent and its sub-agent
 * in one client) is proved by the client itself, afresh for each attempt
 * (a proof's jti is single-use); any other needs no proof, or one its holder made.
 */
async function ownProof(c: ClientState, subjectToken: string): Promise<(() => Promise<string>) | undefined> {
  if (c.dpop === undefined) return undefined
  const jkt = boundJktOf(subjectToken)
  if (jkt === undefined || jkt !== (await c.dpop.key).jkt) return undefined
  return () => delegationProof(c, subjectToken, undefined)
}
