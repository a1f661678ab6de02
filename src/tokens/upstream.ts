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

/**
 * Resolver over an issuer's published JWKS, through jose's remote JWK set
 * (cache, refetch on unknown `kid` after a cooldown), with DESIGN.md's
 * bounds: timeout, body size, key count, one network attempt per cooldown
 * after a failure, and the last good set served for `staleMaxAgeMs` while the
 * issuer is down.
 */
export function createRemoteKeyResolver(issuer: TrustedIssuer, policy: JwksPolicy, now: () => number = Date.now): KeyResolver {
  let jwksUri: Promise<string> | undefined
  let lastGood: { body: string; at: number } | undefined
  let lastAttempt = -Infinity

  const discover = async (): Promise<string> => {
    if (issuer.jwksUri !== undefined) return issuer.jwksUri
    const url = new URL(issuer.issuer)
    const options = {
      algorithm: 'oauth2' as const,
      [oauth.allowInsecureRequests]: url.protocol === 'http:',
      [oauth.customFetch]: (u: string, init: RequestInit) => fetchLimited(u, init, policy),
    }
    try {
      let response = await oauth.discoveryRequest(url, options)
      let metadata: oauth.AuthorizationServer
      try {
        metadata = await oauth.processDiscoveryResponse(url, response)
      } catch {
        // Not an RFC 8414 server: try OpenID Connect discovery.
        response = await oauth.discoveryRequest(url, { ...options, algorithm: 'oidc' })
        metadata = await oauth.processDiscoveryResponse(url, response)
      }
      const uri = metadata.jwks_uri
      if (typeof uri !== 'string' || !isAllowedUpstreamUrl(new URL(uri))) {
        throw new UpstreamUnavailable(`issuer ${issuer.issuer} metadata has no usable jwks_uri`)
      }
      return uri
    } catch (err) {
      jwksUri = undefined // try discovery again on a later request
      throw err instanceof UpstreamUnavailable ? err : new UpstreamUnavailable(`discovery failed: ${(err as Error).name}`)
    }
  }

  const fetchJwks = async (url: string, init: RequestInit): Promise<Response> => {
    const t = now()
    const serveStale = (cause: Error): Response => {
      if (lastGood !== undefined && t - lastGood.at <= policy.staleMaxAgeMs) {
        return new Response(lastGood.body, { status: 200, headers: { 'content-type': 'application/json' } })
      }
      throw cause
    }
    if (t - lastAttempt < policy.cooldownMs && lastGood === undefined) {
      throw new UpstreamUnavailable(`JWKS of ${issuer.issuer} failed recently; cooling down`)
    }
    if (t - lastAttempt < policy.cooldownMs) return serveStale(new UpstreamUnavailable('cooling down'))
    lastAttempt = t
    try {
      const response = await fetchLimited(url, init, policy)
      const body = await response.text()
      const parsed = JSON.parse(body) as { keys?: unknown }
      if (!Array.isArray(parsed.keys) || parsed.keys.length > policy.maxKeys) {
        throw new UpstreamUnavailable(`JWKS of ${issuer.issuer} is malformed or holds over ${policy.maxKeys} keys`)
      }
      lastGood = { body, at: t }
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
    } catch (err) {
      return serveStale(err instanceof UpstreamUnavailable ? err : new UpstreamUnavailable('JWKS is not JSON'))
    }
  }

  let remote: ReturnType<typeof createRemoteJWKSet> | undefined
  return async (header) => {
    try {
      if (remote === undefined) {
        jwksUri ??= discover()
        const uri = await jwksUri
        remote ??= createRemoteJWKSet(new URL(uri), {
          timeoutDuration: policy.timeoutMs,
          cooldownDuration: policy.cooldownMs,
          cacheMaxAge: policy.cacheMaxAgeMs,
          [customFetch]: fetchJwks,
        })
      }
      return toKeyObject(await remote(header as JWSHeaderParameters))
    } catch (err) {
      if (err instanceof JwtError) throw err
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
  if (!verifySignature(header.alg, key, decoded.signingInput, decoded.signature)) throw new JwtError('bad_signature')
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
