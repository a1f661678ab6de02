import { KeyObject, type webcrypto } from 'node:crypto'
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  errors as joseErrors,
  type JSONWebKeySet,
  type JWSHeaderParameters,
} from 'jose'
import * as oauth from 'oauth4webapi'
import { fetchLimited, isAllowedUpstreamUrl, UpstreamUnavailable, type FetchLimits } from './fetch-limited.js'
import { checkClaims, checkHeader, decodeJws, JwtError, verifySignature, type JwsHeader } from './jws.js'

/** An issuer trusted for one role (user subjects, or workload actors). */
export interface TrustedIssuer {
  readonly issuer: string
  /** When absent, discovered from the issuer's RFC 8414 / OIDC metadata. */
  readonly jwksUri: string | undefined
  readonly algorithms: readonly string[]
  /** Tokens must carry this value in `aud`. */
  readonly audience: string
  /** Accepted `typ` header values, normalized; `undefined` accepts no `typ`. */
  readonly typ: readonly (string | undefined)[]
}

export interface JwksPolicy extends FetchLimits {
  readonly maxKeys: number
  /** Minimum time between two fetches for one issuer (unknown `kid` refetch cooldown). */
  readonly cooldownMs: number
  /** How long a key set is used before it is refreshed. */
  readonly cacheMaxAgeMs: number
  /** How long the last good key set keeps serving while the issuer cannot be reached. */
  readonly staleMaxAgeMs: number
}

export const DEFAULT_JWKS_POLICY: JwksPolicy = {
  timeoutMs: 5_000,
  maxBytes: 256 * 1024,
  maxKeys: 100,
  cooldownMs: 30_000,
  cacheMaxAgeMs: 10 * 60_000,
  staleMaxAgeMs: 60 * 60_000,
}

/** Finds the verification key for a header; throws `JwtError('unknown_kid')` or `UpstreamUnavailable`. */
export type KeyResolver = (header: JwsHeader) => Promise<KeyObject>

/** Key objects are converted from jose's CryptoKeys once and kept as long as jose keeps the CryptoKey. */
const keyObjects = new WeakMap<object, KeyObject>()

function toKeyObject(key: unknown): KeyObject {
  if (key instanceof KeyObject) return key
  let ko = keyObjects.get(key as object)
  if (ko === undefined) {
    ko = KeyObject.from(key as webcrypto.CryptoKey)
    keyObjects.set(key as object, ko)
  }
  return ko
}

function joseToKeyError(err: unknown): Error {
  if (err instanceof UpstreamUnavailable) return err
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new JwtError('unknown_kid')
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return new JwtError('ambiguous_key')
  if (err instanceof joseErrors.JOSENotSupported || err instanceof joseErrors.JWKInvalid) {
    return new JwtError('unusable_key')
  }
  if (err instanceof joseErrors.JWKSTimeout) return new UpstreamUnavailable('JWKS fetch timed out')
  return new UpstreamUnavailable(`JWKS unavailable: ${(err as Error).name}`)
}

/** Resolver over a key set held in memory (the broker's own keys, the dev user issuer). */
export function createLocalKeyResolver(jwks: JSONWebKeySet): KeyResolver {
  const local = createLocalJWKSet(jwks)
  return async (header) => {
    try {
      return toKeyObject(await local(header as JWSHeaderParameters))
    } catch (err) {
      throw joseToKeyError(err)
    }
  }
}

/** jose asked for a refetch within the cooldown: the key set stays as it is. */
class CoolingDown extends Error {
  override readonly name = 'CoolingDown'
}

/**
 * Resolver over an issuer's published JWKS. jose's remote JWK set selects
 * and imports keys and keeps the last set it loaded; when to touch the
 * network is decided here, on the injected clock, with DESIGN.md's bounds:
 * timeout, body size and key count per fetch; at most one network attempt
 * (JWKS or discovery) per cooldown, whether the last one failed or an
 * unknown `kid` asks again; a refresh after `cacheMaxAgeMs`; and while the
 * issuer cannot be reached, the last good set serves until it is
 * `max(cacheMaxAgeMs, staleMaxAgeMs)` old, then nothing does.
 */
export function createRemoteKeyResolver(issuer: TrustedIssuer, policy: JwksPolicy, now: () => number = Date.now): KeyResolver {
  const usableMs = Math.max(policy.cacheMaxAgeMs, policy.staleMaxAgeMs)
  const issuerUrl = new URL(issuer.issuer)
  let jwksUri: string | undefined
  let discoveryFailedAt = -Infinity
  let lastGoodAt: number | undefined
  let lastAttempt = -Infinity
  /** The JWKS fetch in flight, which concurrent requests share. */
  let reloading: Promise<unknown> | undefined
  let remote: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined

  const fetchMetadata = (u: string, init: RequestInit) => fetchLimited(u, init, policy)

  /** A discovered jwks_uri must be https, or loopback http only for a loopback issuer. */
  const acceptableJwksUri = (uri: unknown): uri is string =>
    typeof uri === 'string' &&
    URL.canParse(uri) &&
    (new URL(uri).protocol === 'https:' || (issuerUrl.protocol === 'http:' && isAllowedUpstreamUrl(new URL(uri))))

  async function discover(): Promise<string> {
    if (issuer.jwksUri !== undefined) return issuer.jwksUri
    if (jwksUri !== undefined) return jwksUri
    if (now() - discoveryFailedAt < policy.cooldownMs) {
      throw new UpstreamUnavailable(`discovery for ${issuer.issuer} failed recently; cooling down`)
    }
    const options = { [oauth.allowInsecureRequests]: issuerUrl.protocol === 'http:', [oauth.customFetch]: fetchMetadata }
    let uri: unknown
    for (const algorithm of ['oauth2', 'oidc'] as const) {
      try {
        // RFC 8414 first, then OpenID Connect discovery; each response is checked against the issuer.
        const response = await oauth.discoveryRequest(issuerUrl, { ...options, algorithm })
        uri = (await oauth.processDiscoveryResponse(issuerUrl, response)).jwks_uri
        break
      } catch {
        // try the next well-known location
      }
    }
    if (!acceptableJwksUri(uri)) {
      discoveryFailedAt = now()
      throw new UpstreamUnavailable(`discovery for ${issuer.issuer} found no usable jwks_uri`)
    }
    jwksUri = uri
    return uri
  }

  // jose calls this on every reload it wants; within the cooldown it is refused without a fetch or a parse.
  async function fetchJwks(url: string, init: RequestInit): Promise<Response> {
    const t = now()
    if (t - lastAttempt < policy.cooldownMs) throw new CoolingDown()
    lastAttempt = t
    const response = await fetchLimited(url, init, policy)
    const body = await response.text()
    let parsed: { keys?: unknown }
    try {
      parsed = JSON.parse(body) as { keys?: unknown }
    } catch {
      throw new UpstreamUnavailable(`JWKS of ${issuer.issuer} is not JSON`)
    }
    if (!Array.isArray(parsed.keys) || parsed.keys.length > policy.maxKeys) {
      throw new UpstreamUnavailable(`JWKS of ${issuer.issuer} is malformed or holds over ${policy.maxKeys} keys`)
    }
    lastGoodAt = t
    return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
  }

  function jwksSet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    // Concurrent first requests share one discovery; a failed one is forgotten (its cooldown is in discover).
    if (remote === undefined) {
      const pending = discover().then((uri) =>
        createRemoteJWKSet(new URL(uri), {
          timeoutDuration: policy.timeoutMs,
          // Timing is ours, on the injected clock: jose asks whenever it wants and fetchJwks decides.
          cooldownDuration: 0,
          cacheMaxAge: Infinity,
          [customFetch]: fetchJwks,
        }),
      )
      remote = pending
      pending.catch(() => {
        if (remote === pending) remote = undefined
      })
    }
    return remote
  }

  return async (header) => {
    try {
      const jwks = await jwksSet()
      const t = now()
      if ((lastGoodAt === undefined || t - lastGoodAt > policy.cacheMaxAgeMs) && t - lastAttempt >= policy.cooldownMs) {
        // A failed refresh leaves jose's last good set in place; the age check below decides whether it may serve.
        const started = jwks.reload().catch(() => undefined)
        reloading = started
        void started.finally(() => {
          if (reloading === started) reloading = undefined
        })
      }
      // Requests that arrive while a fetch is in flight wait for it (the first requests after a start
      // would otherwise find no set yet and be answered 503).
      if (reloading !== undefined) await reloading
      if (lastGoodAt === undefined || now() - lastGoodAt > usableMs) {
        throw new UpstreamUnavailable(`no usable JWKS for ${issuer.issuer}`)
      }
      return toKeyObject(await jwks(header as JWSHeaderParameters))
    } catch (err) {
      if (err instanceof JwtError) throw err
      if (err instanceof CoolingDown) throw new JwtError('unknown_kid')
      throw joseToKeyError(err)
    }
  }
}

export interface VerifiedJwt {
  readonly header: JwsHeader
  readonly payload: Record<string, unknown>
}

export interface VerifyOptions {
  readonly issuer: TrustedIssuer
  readonly keys: KeyResolver
  /** Epoch seconds. */
  readonly now: number
  readonly skew: number
  readonly required: readonly string[]
}

/**
 * Full check of an already-decoded JWS against one trusted issuer: header
 * profile, key, signature, then claims. Throws `JwtError` or `UpstreamUnavailable`.
 */
export async function verifyDecodedJwt(
  decoded: ReturnType<typeof decodeJws>,
  options: VerifyOptions,
): Promise<VerifiedJwt> {
  const { header, payload } = decoded
  checkHeader(header, { algorithms: options.issuer.algorithms, typ: options.issuer.typ })
  const key = await options.keys(header)
  if (!(await verifySignature(header.alg, key, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
  checkClaims(payload, {
    issuer: options.issuer.issuer,
    audience: options.issuer.audience,
    now: options.now,
    skew: options.skew,
    required: options.required,
  })
  return { header, payload }
}

/** Issuers trusted for one role, each with its key resolver. */
export interface IssuerRegistry {
  get(iss: string): { readonly issuer: TrustedIssuer; readonly keys: KeyResolver } | undefined
}

export function createIssuerRegistry(
  issuers: readonly TrustedIssuer[],
  resolverFor: (issuer: TrustedIssuer) => KeyResolver,
): IssuerRegistry {
  const map = new Map(issuers.map((i) => [i.issuer, { issuer: i, keys: resolverFor(i) }]))
  return { get: (iss) => map.get(iss) }
}

/** Reads `iss` from an unverified payload only to pick the issuer whose keys will verify it. */
export function unverifiedIssuer(payload: Record<string, unknown>): string {
  const iss = payload['iss']
  if (typeof iss !== 'string') throw new JwtError('missing_iss')
  return iss
}
