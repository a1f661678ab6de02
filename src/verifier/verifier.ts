import { randomUUID, type KeyObject } from 'node:crypto'
import { SignJWT, type CryptoKey } from 'jose'
import type { Logger } from 'pino'
import { withTimeout } from '../core/async.js'
import { parseScope, type MandateClaims } from '../core/claims.js'
import { createRevocationMirror } from '../revocation/mirror.js'
import { tokenFacts } from '../revocation/port.js'
import { UpstreamUnavailable, isAllowedUpstreamUrl } from '../tokens/fetch-limited.js'
import { ASYMMETRIC_ALGORITHMS, checkClaims, checkHeader, decodeJws, JwtError, verifySignature, type Algorithm } from '../tokens/jws.js'
import { SIGNING_ALG } from '../tokens/keys.js'
import { MANDATE_REQUIRED, mandateClaims } from '../tokens/subject.js'
import { createRemoteKeyResolver, DEFAULT_JWKS_POLICY, type KeyResolver } from '../tokens/upstream.js'
import { VerifierError, type VerifierErrorCode } from './errors.js'
import { followFeed, followRedis, type FeedCredentials, type RevocationSource } from './sources.js'

/** The claims of a Mandate access token that passed every check (RFC 9068 profile). */
export type VerifiedToken = MandateClaims

export type RevocationSourceOptions =
  | {
      /**
       * Follow the brokers' Redis directly, read-only: this verifier never
       * writes a key. `prefix` is the brokers' `storage.key_prefix` (default
       * `mandate:`).
       */
      readonly redis: { readonly url: string; readonly prefix?: string; readonly staleAfterMs?: number }
    }
  | {
      /**
       * Follow the broker's `/revocations/feed` (server-sent events), for
       * resource servers that cannot reach Redis. `url` is the feed's full
       * URL. Exactly one of `client`, this resource server's credentials as
       * the broker's `resource_servers` config holds them, or `adminKey`, an
       * admin key with `read` (auditor), which can also read the whole
       * delegation log: prefer `client`.
       */
      readonly feed: {
        readonly url: string
        readonly client?: FeedClient
        readonly adminKey?: string
        readonly staleAfterMs?: number
      }
    }

/**
 * A resource server's credentials at the broker's feed: `secret` (HTTP
 * Basic, on a GET), or `privateKey` and its `alg` (a client assertion, RFC
 * 7523, signed afresh for every connection and sent in a POST's form body;
 * `aud` is the broker's issuer, lifetime 60 s). `id` is its `rs/…` id.
 */
export type FeedClient =
  | { readonly id: string; readonly secret: string }
  | { readonly id: string; readonly privateKey: KeyObject | CryptoKey; readonly alg: Algorithm; readonly kid?: string }

export interface VerifierOptions {
  /** The broker's issuer identifier, compared exactly with `iss`. */
  readonly issuer: string
  /** This resource server: `aud` must be (or contain) it. */
  readonly audience: string
  /** Default `${issuer}/.well-known/jwks.json`. https, or http on a loopback host. */
  readonly jwksUri?: string
  /** Default 30, at most 60. */
  readonly clockSkewSeconds?: number
  /**
   * Where the revocation mirror comes from. Either way, when it has not
   * been confirmed in step within `staleAfterMs` (default 1000), every
   * verification answers 503 `temporarily_unavailable`.
   */
  readonly revocations: RevocationSourceOptions
  /** `realm` of every `WWW-Authenticate` challenge. Default: `audience`. */
  readonly realm?: string
  /**
   * JWKS fetch bounds (the remote key resolver of src/tokens/upstream.ts):
   * defaults 5 s timeout, 256 KiB, 100 usable keys kept, one fetch per 30 s (an unknown
   * `kid` included), refresh after 10 min, last good set kept up to 1 h
   * while the broker cannot be reached.
   */
  readonly jwks?: {
    // `| undefined`: callers compiled without exactOptionalPropertyTypes may pass it, and it means the default.
    readonly timeoutMs?: number | undefined
    readonly cooldownMs?: number | undefined
    readonly cacheMaxAgeMs?: number | undefined
    readonly staleMaxAgeMs?: number | undefined
  }
  /** How long `ready()` waits. Default 10 000. */
  readonly startTimeoutMs?: number
  /**
   * Epoch milliseconds, for token times, revocation-entry expiry, JWKS
   * timing and the Redis follower's liveness (tests inject one; it must
   * advance in real time). The feed client's liveness uses the process's
   * monotonic clock. Default `Date.now`.
   */
  readonly clock?: () => number
  /** Warnings of the revocation source (connection lost, unreadable records). Silent when absent. */
  readonly logger?: Logger
}

export interface Verifier {
  /** `realm` of this verifier's challenges. */
  readonly realm: string
  /**
   * Verifies a Mandate access token for this resource server. Resolves with
   * its claims; rejects with `VerifierError` only: 401 `invalid_token`
   * (malformed, not ES256 `at+jwt`, unknown `kid`, bad signature, wrong
   * `iss` or `aud`, expired or not yet valid beyond the skew, revoked), 403
   * `insufficient_scope` (a `required` scope the token lacks), 503
   * `temporarily_unavailable` (revocation state unknown, signing keys
   * unreachable). Throws `TypeError` on a malformed required scope.
   */
  verify(token: string, required?: { readonly scopes?: readonly string[] }): Promise<VerifiedToken>
  /**
   * Resolves once the revocation mirror holds the broker's list and the
   * signing keys were fetched; rejects after `startTimeoutMs` (the verifier
   * keeps trying: verifications answer 503 meanwhile).
   */
  ready(): Promise<void>
  /** Whether the revocation state is known right now (for a readiness probe). */
  fresh(): boolean
  /** Stops following the revocation source. Verifications then answer 503. */
  close(): Promise<void>
}

const DEFAULT_STALE_AFTER_MS = 1000
/** Seconds a feed client assertion is valid: one connection's worth. */
const ASSERTION_LIFETIME = 60
/** Descriptions sent to clients: which check failed goes to `detail` only. */
const INVALID = 'token is not valid'

function validUrl(value: string, what: string, protocols: readonly string[]): URL {
  if (!URL.canParse(value)) throw new TypeError(`${what} is not a URL`)
  const url = new URL(value)
  if (!protocols.includes(url.protocol)) throw new TypeError(`${what} must be ${protocols.join(' or ')}`)
  return url
}

/**
 * A verifier of Mandate access tokens for resource servers (docs/ARCHITECTURE.md
 * "What Mandate is"): signature against the broker's JWKS (cached), `iss`, `aud`,
 * lifetime, required scopes, then the in-memory revocation mirror, kept in
 * step from Redis or from the broker's feed. Starts following at once; see
 * `ready()`. Throws `TypeError` on bad options.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  // Long, not split: option checks, then a factory whose verify and ready share the mirror, the key resolver and the source.
  const { issuer, audience } = options
  if (typeof issuer !== 'string' || issuer === '') throw new TypeError('issuer is required')
  if (typeof audience !== 'string' || audience === '') throw new TypeError('audience is required')
  const skew = options.clockSkewSeconds ?? 30
  if (!(Number.isInteger(skew) && skew >= 0 && skew <= 60)) throw new TypeError('clockSkewSeconds must be an integer in 0..60')
  const realm = options.realm ?? audience
  if (!/^[\x20-\x7e]+$/.test(realm)) throw new TypeError('realm must be printable ASCII')
  const jwksUri = options.jwksUri ?? `${issuer.replace(/\/+$/, '')}/.well-known/jwks.json`
  if (!isAllowedUpstreamUrl(validUrl(jwksUri, 'jwksUri', ['https:', 'http:']))) {
    throw new TypeError('jwksUri must be https (http only on a loopback host)')
  }
  const clock = options.clock ?? Date.now
  const startTimeoutMs = options.startTimeoutMs ?? 10_000
  const policy = { ...DEFAULT_JWKS_POLICY }
  for (const [name, value] of Object.entries(options.jwks ?? {})) {
    if (value === undefined) continue
    if (!(typeof value === 'number' && value >= 0 && Number.isFinite(value))) throw new TypeError(`jwks.${name} must be a non-negative number`)
    Object.assign(policy, { [name]: value })
  }
  if (!(policy.timeoutMs > 0)) throw new TypeError('jwks.timeoutMs must be positive')
  const keys: KeyResolver = createRemoteKeyResolver({ issuer, jwksUri, algorithms: [SIGNING_ALG], audience, typ: ['at+jwt'] }, policy, clock, options.logger)

  const mirror = createRevocationMirror(() => Math.floor(clock() / 1000))
  const source = startSource(options.revocations, mirror, clock, issuer, options.logger)

  const fail = (code: VerifierErrorCode, description: string, detail?: string, scope?: string) =>
    new VerifierError(code, description, {
      realm,
      ...(detail === undefined ? {} : { detail }),
      ...(scope === undefined ? {} : { scope }),
    })
  const invalid = (err: unknown): VerifierError => {
    if (err instanceof JwtError) return fail('invalid_token', err.code === 'expired' ? 'token expired' : INVALID, err.code)
    if (err instanceof UpstreamUnavailable) return fail('temporarily_unavailable', 'signing keys unavailable; try again', err.message)
    throw err
  }

  async function verify(token: string, required: { readonly scopes?: readonly string[] } = {}): Promise<VerifiedToken> {
    const scopes = required.scopes ?? []
    for (const s of scopes) if (parseScope(s)?.length !== 1) throw new TypeError(`malformed required scope: ${JSON.stringify(s)}`)
    const now = Math.floor(clock() / 1000)

    let claims: MandateClaims
    try {
      if (typeof token !== 'string') throw new JwtError('not_compact_jws')
      const decoded = decodeJws(token)
      const { header } = decoded
      checkHeader(header, { algorithms: [SIGNING_ALG], typ: ['at+jwt'] })
      if (header.kid === undefined) throw new JwtError('missing_kid')
      const key = await keys.resolve(header)
      if (!(await verifySignature(header.alg, key, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
      checkClaims(decoded.payload, { issuer, audience, now, skew, required: MANDATE_REQUIRED })
      claims = mandateClaims(decoded.payload)
    } catch (err) {
      throw invalid(err)
    }

    // Revocation before scope: a revoked token is invalid whatever it asks for.
    if (!source.fresh()) throw fail('temporarily_unavailable', 'revocation state unknown; try again', `revocation mirror stale: ${source.status()}`)
    const verdict = mirror.checkToken(tokenFacts(claims))
    switch (verdict.state) {
      case 'clear':
        break
      case 'revoked':
        throw fail('invalid_token', 'token revoked', verdict.detail)
      case 'unknown':
        throw fail('temporarily_unavailable', 'revocation state unknown; try again', verdict.detail)
    }

    const granted = new Set(claims.scope.split(' '))
    const missing = scopes.filter((s) => !granted.has(s))
    if (missing.length > 0) {
      throw fail('insufficient_scope', 'token lacks a required scope', `missing ${missing.join(' ')}`, [...new Set(scopes)].join(' '))
    }
    return claims
  }

  /** Fetches the key set: any answer about a key means the set is in hand; only an unreachable JWKS fails. */
  async function warmKeys(): Promise<void> {
    try {
      await keys.resolve({ alg: SIGNING_ALG, kid: '\u0000warm-up' })
    } catch (err) {
      if (!(err instanceof JwtError)) throw err
    }
  }

  return {
    realm,
    verify,
    ready: () =>
      withTimeout(
        Promise.all([source.synced, warmKeys()]).then(() => undefined),
        startTimeoutMs,
        () => new Error(`verifier not ready within ${startTimeoutMs} ms: ${source.status()}`),
      ),
    fresh: () => source.fresh(),
    close: () => source.close(),
  }
}

function startSource(
  options: RevocationSourceOptions,
  mirror: ReturnType<typeof createRevocationMirror>,
  clock: () => number,
  issuer: string,
  logger: Logger | undefined,
): RevocationSource {
  if ('redis' in options) {
    const { url, prefix = 'mandate:', staleAfterMs = DEFAULT_STALE_AFTER_MS } = options.redis
    validUrl(url, 'revocations.redis.url', ['redis:', 'rediss:'])
    if (!/^[A-Za-z0-9:_{}-]{0,64}$/.test(prefix)) throw new TypeError('revocations.redis.prefix is malformed')
    checkStaleAfter(staleAfterMs)
    return followRedis({ url, prefix, mirror, staleAfterMs, now: clock, ...(logger === undefined ? {} : { logger }) })
  }
  if ('feed' in options) {
    const { url, client, adminKey, staleAfterMs = DEFAULT_STALE_AFTER_MS } = options.feed
    if (!isAllowedUpstreamUrl(validUrl(url, 'revocations.feed.url', ['https:', 'http:']))) {
      throw new TypeError('revocations.feed.url must be https (http only on a loopback host): it carries credentials')
    }
    if ((client === undefined) === (adminKey === undefined)) throw new TypeError('revocations.feed needs exactly one of client and adminKey')
    let credentials: FeedCredentials
    if (adminKey !== undefined) {
      if (typeof adminKey !== 'string' || !/^[\x21-\x7e]{1,512}$/.test(adminKey)) throw new TypeError('revocations.feed.adminKey is malformed')
      credentials = { method: 'admin_key', key: adminKey }
    } else {
      credentials = feedClientCredentials(client!, issuer, clock)
    }
    checkStaleAfter(staleAfterMs)
    return followFeed({ url, credentials, mirror, staleAfterMs, ...(logger === undefined ? {} : { logger }) })
  }
  throw new TypeError('revocations must name { redis } or { feed }')
}

/** Checks a resource server's feed credentials; with a private key, signs a fresh assertion per connection. */
function feedClientCredentials(client: FeedClient, issuer: string, clock: () => number): FeedCredentials {
  const { id } = client
  if (typeof id !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(id)) throw new TypeError('revocations.feed.client.id is malformed')
  if ('secret' in client) {
    if (typeof client.secret !== 'string' || client.secret === '' || client.secret.length > 512) {
      throw new TypeError('revocations.feed.client.secret is malformed')
    }
    return { method: 'client_secret_basic', id, secret: client.secret }
  }
  const { privateKey, alg, kid } = client
  if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)) throw new TypeError('revocations.feed.client.alg must be an asymmetric JWS algorithm')
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- a public API: JavaScript callers are not type-checked
  if (typeof privateKey !== 'object' || privateKey === null) throw new TypeError('revocations.feed.client needs secret or privateKey')
  if (kid !== undefined && (typeof kid !== 'string' || kid === '')) throw new TypeError('revocations.feed.client.kid is malformed')
  return {
    method: 'private_key_jwt',
    assertion: () => {
      const now = Math.floor(clock() / 1000)
      // RFC 7523 §3 with its update: aud is the issuer identifier alone; a jti the broker spends once.
      return new SignJWT({ iss: id, sub: id, aud: issuer, jti: randomUUID(), iat: now, exp: now + ASSERTION_LIFETIME })
        .setProtectedHeader({ alg, typ: 'client-authentication+jwt', ...(kid === undefined ? {} : { kid }) })
        .sign(privateKey)
    },
  }
}

function checkStaleAfter(ms: number): void {
  // The broker's heartbeats come every 250 ms.
  if (!(Number.isInteger(ms) && ms >= 300 && ms <= 60_000)) throw new TypeError('staleAfterMs must be an integer in 300..60000')
}
