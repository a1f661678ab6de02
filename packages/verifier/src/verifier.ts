import { errors, jwtVerify, type JWTPayload } from 'jose'
import { MANDATE_REQUIRED, mandateClaimsProblem, parseScope, type MandateClaims } from './claims.js'
import { credentialRequest, type Credentials } from './credentials.js'
import { discover, metadataUrl, type BrokerMetadata } from './discovery.js'
import { createAuthenticate } from './authenticate.js'
import { dpopPolicy, type DpopOptions, type DpopPolicy } from './dpop-auth.js'
import { INVALID_TOKEN as INVALID, VerifierError, type VerifierErrorCode, type VerifierReason } from './errors.js'
import { followFeed, messageOf, type RevocationSource, type VerifierLogger } from './feed.js'
import { Unreachable } from './fetch-json.js'
import { createKeyCache, DEFAULT_KEY_POLICY, type KeyCache, type KeyCachePolicy } from './keys.js'
import { createRevocationMirror } from './mirror.js'
import { protectedResourceMetadata, protectedResourceMetadataUrl, type ProtectedResourceMetadata } from './resource-metadata.js'
import { tokenFacts } from './revocation.js'

/** The claims of a Mandate access token that passed every check (RFC 9068 profile). */
export type VerifiedToken = MandateClaims

export interface VerifierOptions {
  /**
   * The broker's issuer identifier, compared exactly with `iss`; its RFC 8414
   * metadata (`/.well-known/oauth-authorization-server`, §3.1) names
   * everything else. https (http only on a loopback host).
   */
  readonly issuer: string
  /** This resource server: `aud` must be it (RFC 9068 §4). */
  readonly audience: string
  /**
   * This resource server's identity as the broker's `resource_servers`
   * config holds it, for the revocation feed: `{ clientId, clientSecret }`
   * or `{ clientId, privateKey, alg, kid? }`.
   */
  readonly credentials: Credentials
  /**
   * Milliseconds after which a revocation list not confirmed current (the
   * broker's heartbeats come every 250 ms) makes every verification answer
   * 503 `temporarily_unavailable`. Default 1000; 300 to 60 000.
   */
  readonly staleAfterMs?: number
  /** Default 30, at most 60. */
  readonly clockSkewSeconds?: number
  /** `realm` of every `WWW-Authenticate` challenge. Default: `audience`. */
  readonly realm?: string
  /**
   * This resource server's RFC 9728 resource identifier (an https URL):
   * every challenge then carries `resource_metadata` (RFC 9728 §5.1), the URL
   * of its protected resource metadata, which `protectedResourceMetadata()`
   * builds.
   */
  readonly resource?: string
  /**
   * Bounds on the broker's key set: defaults 5 s timeout, one fetch per 30 s
   * for an unknown `kid`, refresh after 10 min, the last good set kept up to
   * 1 h while the broker cannot be reached.
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
   * Epoch milliseconds, for token times and revocation-entry expiry (tests
   * inject one). Liveness uses the process's monotonic clock. Default `Date.now`.
   */
  readonly clock?: () => number
  /** The fetch every request to the broker goes through (a proxy agent, a test). Default the global `fetch`. */
  readonly fetch?: typeof fetch
  /** Warnings (the feed lost, unreadable records). Silent when absent. pino fits. */
  readonly logger?: VerifierLogger
  /** Accept DPoP-bound tokens with their proofs (RFC 9449 §7.1). Without it a bound token is refused whatever its scheme. */
  readonly dpop?: DpopOptions
}

/** What `authenticate` answers: the token, or a refusal ready to send. */
export type AuthenticateResult =
  | {
      readonly ok: true
      readonly token: VerifiedToken
      /** To add to the answer: `DPoP-Nonce` when nonces are on (RFC 9449 §9: every answer carries the current one). */
      readonly headers: Readonly<Record<string, string>>
    }
  | {
      readonly ok: false
      readonly status: 400 | 401 | 403 | 503
      /**
       * `WWW-Authenticate` (RFC 6750 §3, RFC 9449 §7.1: a challenge per
       * scheme accepted, the one the request used first), `Content-Type`,
       * `Cache-Control: no-store`, `Retry-After` on 503, `DPoP-Nonce` when
       * nonces are on.
       */
      readonly headers: Readonly<Record<string, string>>
      /** JSON: `{ error, error_description }` (only `error_description` when no token was sent, RFC 6750 §3.1). */
      readonly body: string
      readonly reason: VerifierReason
      /** The refusal, for logs (`detail`); undefined when no token was sent. */
      readonly error: VerifierError | undefined
    }

/**
 * What `authenticate` reads of a request: its `Authorization` header, and
 * for DPoP its `DPoP` header, method and URL. A web `Request` is one.
 */
export interface BearerRequest {
  readonly headers: { get(name: string): string | null }
  /** The request's method (RFC 9449 `htm`). */
  readonly method?: string
  /** The request's absolute URL as the server sees it (`htu`; see the `dpop.baseUrl` option). */
  readonly url?: string
}

export interface RequiredScopes {
  /** Scopes the token must all carry (RFC 6749 §3.3 scope-tokens). */
  readonly scopes?: readonly string[]
}

export interface Verifier {
  /** `realm` of this verifier's challenges. */
  readonly realm: string
  /**
   * Verifies a Mandate access token for this resource server. Resolves with
   * its claims; rejects with `VerifierError` only: 401 `invalid_token`
   * (malformed, not `at+jwt`, an algorithm the broker does not sign with,
   * unknown `kid`, bad signature, wrong `iss` or `aud`, expired or not yet
   * valid beyond the skew, a Mandate claim missing or ill-typed, revoked), 403
   * `insufficient_scope` (a required scope the token lacks), 503
   * `temporarily_unavailable` (revocation state unknown, broker metadata or
   * keys unreachable). A DPoP-bound token (`cnf.jkt`) is refused 401
   * `invalid_token` here: without its proof it is a Bearer token (RFC 9449
   * §7.2); `authenticate` checks the proof. Throws `TypeError` on a
   * malformed required scope.
   */
  verify(token: string, required?: RequiredScopes): Promise<VerifiedToken>
  /**
   * The web-standard adapter: reads `Authorization: Bearer` (RFC 6750 §2.1;
   * never a query or form parameter), and with `dpop` `Authorization: DPoP`
   * and its proof (RFC 9449 §7.1). No token → 401 with a bare challenge
   * (§3.1); a malformed header → 400 `invalid_request`; a bad proof → 401
   * `invalid_dpop_proof`, no current nonce → 401 `use_dpop_nonce`;
   * otherwise `verify`'s refusal, ready to send.
   */
  authenticate(request: BearerRequest, required?: RequiredScopes): Promise<AuthenticateResult>
  /**
   * Resolves once the broker's metadata and keys are in hand and the
   * revocation mirror holds its list; rejects after `startTimeoutMs` (the
   * verifier keeps trying: verifications answer 503 meanwhile).
   */
  ready(): Promise<void>
  /** Whether the revocation state is known right now (for a readiness probe). */
  fresh(): boolean
  /** The broker's metadata, once discovered. */
  metadata(): BrokerMetadata | undefined
  /**
   * RFC 9728 §2 metadata of this resource (`resource` defaults to the
   * `resource` option), with the path to serve it at (§3.1).
   */
  protectedResourceMetadata(options?: { readonly resource?: string; readonly scopesSupported?: readonly string[] }): ProtectedResourceMetadata
  /** Stops following the broker. Verifications then answer 503. */
  close(): Promise<void>
}

const DEFAULT_STALE_AFTER_MS = 1000
/** Longer than any token the broker mints; a bound on what is parsed at all. */
const MAX_TOKEN_LENGTH = 16 * 1024
const UNAVAILABLE = 'revocation state unknown; try again'

interface Following {
  readonly metadata: BrokerMetadata
  readonly keys: KeyCache
  readonly source: RevocationSource
}

/**
 * A verifier of Mandate access tokens for resource servers: discovers the
 * broker from its metadata, checks the signature against its JWKS (cached),
 * `typ`, `iss`, `aud`, lifetime and Mandate's claims with jose, then the
 * in-memory revocation mirror that the broker's feed keeps in step, then the
 * required scopes. Starts at once; see `ready()`. Throws `TypeError` on bad
 * options.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  // Long, not split: option checks, then a factory whose methods share the discovery, the keys, the mirror and the feed.
  const { issuer, audience } = options
  if (typeof issuer !== 'string' || issuer === '') throw new TypeError('issuer is required')
  if (typeof audience !== 'string' || audience === '') throw new TypeError('audience is required')
  const skew = options.clockSkewSeconds ?? 30
  if (!(Number.isInteger(skew) && skew >= 0 && skew <= 60)) throw new TypeError('clockSkewSeconds must be an integer in 0..60')
  const staleAfterMs = options.staleAfterMs ?? DEFAULT_STALE_AFTER_MS
  if (!(Number.isInteger(staleAfterMs) && staleAfterMs >= 300 && staleAfterMs <= 60_000)) throw new TypeError('staleAfterMs must be an integer in 300..60000')
  const realm = options.realm ?? audience
  if (!/^[\x20-\x7e]+$/.test(realm)) throw new TypeError('realm must be printable ASCII')
  const resourceMetadata = options.resource === undefined ? undefined : protectedResourceMetadataUrl(options.resource)
  metadataUrl(issuer) // throws TypeError on an issuer that is no issuer identifier (RFC 8414 §2)
  const clock = options.clock ?? Date.now
  const fetchImpl = options.fetch ?? fetch
  const startTimeoutMs = options.startTimeoutMs ?? 10_000
  const policy: KeyCachePolicy = { ...DEFAULT_KEY_POLICY }
  for (const [name, value] of Object.entries(options.jwks ?? {})) {
    if (value === undefined) continue
    if (!(name in DEFAULT_KEY_POLICY)) throw new TypeError(`jwks.${name} is not an option`)
    if (!(typeof value === 'number' && value >= 0 && Number.isFinite(value))) throw new TypeError(`jwks.${name} must be a non-negative number`)
    Object.assign(policy, { [name]: value })
  }
  if (!(policy.timeoutMs > 0)) throw new TypeError('jwks.timeoutMs must be positive')
  const request = credentialRequest(options.credentials, issuer, clock)
  const logger = options.logger
  const dpop: DpopPolicy | undefined = options.dpop === undefined ? undefined : dpopPolicy(options.dpop, () => Math.floor(clock() / 1000))

  const mirror = createRevocationMirror(() => Math.floor(clock() / 1000))
  let following: Following | undefined
  let discoveryError = 'not fetched yet'
  let closed = false
  let wake = () => {}

  /** Fetches the metadata until it has it (100 ms, doubling to 5 s), then starts following the feed. */
  async function start(): Promise<Following | undefined> {
    for (let attempt = 0; !closed; attempt++) {
      try {
        const metadata = await discover(issuer, { fetch: fetchImpl, timeoutMs: policy.timeoutMs })
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by close() while this awaited; TypeScript keeps the narrowing from before the await
        if (closed) return undefined
        const keys = createKeyCache(metadata.jwksUri, policy, fetchImpl)
        const source = followFeed({
          url: metadata.revocationFeedEndpoint,
          request,
          mirror,
          staleAfterMs,
          fetch: fetchImpl,
          ...(logger === undefined ? {} : { logger }),
        })
        following = { metadata, keys, source }
        return following
      } catch (err) {
        discoveryError = messageOf(err)
        if (attempt === 0) logger?.warn({ error: discoveryError }, 'broker metadata unavailable; retrying')
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(100 * 2 ** attempt, 5_000))
          wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
      }
    }
    return undefined
  }
  const started = start()

  const fail = (code: VerifierErrorCode, description: string, reason: VerifierReason, detail?: string, scope?: string) =>
    new VerifierError(code, description, {
      realm,
      reason,
      ...(resourceMetadata === undefined ? {} : { resourceMetadata }),
      ...(detail === undefined ? {} : { detail }),
      ...(scope === undefined ? {} : { scope }),
    })

  /** A jose failure as a refusal; anything else is a bug and propagates. */
  function refusalOf(err: unknown): VerifierError {
    if (err instanceof Unreachable) return fail('temporarily_unavailable', 'signing keys unavailable; try again', 'keys_unavailable', err.message)
    if (err instanceof errors.JWTExpired) return fail('invalid_token', 'token expired', 'expired', err.message)
    if (err instanceof errors.JWTClaimValidationFailed) {
      const byClaim: Record<string, VerifierReason> = { iss: 'wrong_issuer', aud: 'wrong_audience', nbf: 'not_yet_valid', typ: 'wrong_type' }
      return fail('invalid_token', INVALID, byClaim[err.claim] ?? 'bad_claims', err.message)
    }
    if (err instanceof errors.JOSEAlgNotAllowed) return fail('invalid_token', INVALID, 'algorithm_not_allowed', err.message)
    if (err instanceof errors.JWSSignatureVerificationFailed) return fail('invalid_token', INVALID, 'bad_signature', err.message)
    if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
      return fail('invalid_token', INVALID, 'unknown_key', err.message)
    if (err instanceof errors.JOSEError) return fail('invalid_token', INVALID, 'malformed_token', err.message)
    throw err
  }

  function checkScopes(required: RequiredScopes): readonly string[] {
    const scopes = required.scopes ?? []
    for (const s of scopes) if (typeof s !== 'string' || parseScope(s)?.length !== 1) throw new TypeError(`malformed required scope: ${JSON.stringify(s)}`)
    return scopes
  }

  /** RFC 9068 §2.2 and Mandate's claims, well typed, after jose checked `typ`, `iss`, `aud`, `exp`, `nbf` and presence. */
  function claimsOf(payload: JWTPayload, now: number): MandateClaims {
    const p = payload as Record<string, unknown>
    for (const name of ['iat', 'exp', 'nbf'] as const) {
      const v = p[name]
      // RFC 7519 §2 NumericDate; JSON.parse turns 1e400 into Infinity, which jose's comparisons would let through.
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) throw fail('invalid_token', INVALID, 'bad_claims', `bad ${name}`)
    }
    for (const name of ['sub', 'jti'] as const) {
      if (typeof p[name] !== 'string' || p[name] === '') throw fail('invalid_token', INVALID, 'bad_claims', `bad ${name}`)
    }
    if ((p['iat'] as number) > now + skew) throw fail('invalid_token', INVALID, 'issued_in_future')
    const problem = mandateClaimsProblem(p)
    if (problem !== undefined) throw fail('invalid_token', INVALID, 'bad_claims', problem)
    return p as unknown as MandateClaims
  }

  async function verify(token: string, required: RequiredScopes = {}): Promise<VerifiedToken> {
    const scopes = checkScopes(required)
    const claims = await verifyToken(token)
    // RFC 9449 §7.2: a bound token without its proof is refused.
    if (claims.cnf !== undefined) throw fail('invalid_token', INVALID, 'bound_token_as_bearer')
    return scoped(claims, scopes)
  }

  function scoped(claims: MandateClaims, scopes: readonly string[]): MandateClaims {
    const granted = new Set(claims.scope.split(' '))
    const missing = scopes.filter((s) => !granted.has(s))
    if (missing.length > 0) {
      throw fail('insufficient_scope', 'token lacks a required scope', 'insufficient_scope', `missing ${missing.join(' ')}`, [...new Set(scopes)].join(' '))
    }
    return claims
  }

  /** Every check of the token but the scopes and its binding. */
  async function verifyToken(token: string): Promise<MandateClaims> {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) throw fail('invalid_token', INVALID, 'malformed_token', 'not a string or too long')
    const f = following
    if (f === undefined) throw fail('temporarily_unavailable', 'signing keys unavailable; try again', 'keys_unavailable', `broker metadata: ${discoveryError}`)

    const now = clock()
    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, f.keys.getKey, {
        issuer,
        audience,
        algorithms: [...f.metadata.algorithms],
        typ: 'at+jwt',
        clockTolerance: skew,
        currentDate: new Date(now),
        requiredClaims: [...MANDATE_REQUIRED],
      }))
    } catch (err) {
      throw refusalOf(err)
    }
    const claims = claimsOf(payload, Math.floor(now / 1000))

    // Revocation before scope: a revoked token is invalid whatever it asks for.
    if (!f.source.fresh()) throw fail('temporarily_unavailable', UNAVAILABLE, 'revocation_state_unknown', `revocation mirror stale: ${f.source.status()}`)
    const verdict = mirror.checkToken(tokenFacts(claims))
    switch (verdict.state) {
      case 'clear':
        break
      case 'revoked':
        throw fail('invalid_token', 'token revoked', 'revoked', verdict.detail)
      case 'unknown':
        throw fail('temporarily_unavailable', UNAVAILABLE, 'revocation_state_unknown', verdict.detail)
    }
    return claims
  }

  const authenticate = createAuthenticate({
    realm,
    resourceMetadata,
    audience,
    dpop,
    nowSeconds: () => Math.floor(clock() / 1000),
    checkScopes,
    verifyToken,
    scoped,
    fail,
  })

  async function whenReady(): Promise<void> {
    const f = await started
    if (f === undefined) throw new Error('verifier closed')
    await Promise.all([f.source.synced, f.keys.warm()])
  }

  return {
    realm,
    verify,
    authenticate,
    ready() {
      let timer: ReturnType<typeof setTimeout> | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`verifier not ready within ${startTimeoutMs} ms: ${following?.source.status() ?? discoveryError}`)),
          startTimeoutMs,
        )
      })
      return Promise.race([whenReady(), timeout]).finally(() => clearTimeout(timer))
    },
    fresh: () => following?.source.fresh() ?? false,
    metadata: () => following?.metadata,
    protectedResourceMetadata(o = {}) {
      const resource = o.resource ?? options.resource
      if (resource === undefined) throw new TypeError('protectedResourceMetadata needs a resource (or the resource option)')
      return protectedResourceMetadata({ issuer, resource, ...(o.scopesSupported === undefined ? {} : { scopesSupported: o.scopesSupported }) })
    },
    async close() {
      closed = true
      wake()
      await started
      await following?.source.close()
    },
  }
}
