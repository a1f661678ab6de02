/**
 * The broker's signing keys, from its `jwks_uri`: fetched once, refreshed
 * after `cacheMaxAgeMs` (a key the broker removed stops verifying then), and
 * fetched again at most once per `cooldownMs` when a token names a `kid` the
 * set lacks (a key rotation). While the broker cannot be reached the last
 * good set is used for up to `staleMaxAgeMs`; after that verification fails
 * closed (503).
 */
import { createLocalJWKSet, errors, type JWSHeaderParameters, type FlattenedJWSInput, type JSONWebKeySet } from 'jose'
import { fetchJson, Unreachable, type FetchJsonOptions } from './fetch-json.js'

export interface KeyCachePolicy {
  readonly timeoutMs: number
  readonly cooldownMs: number
  readonly cacheMaxAgeMs: number
  readonly staleMaxAgeMs: number
}

export const DEFAULT_KEY_POLICY: KeyCachePolicy = { timeoutMs: 5_000, cooldownMs: 30_000, cacheMaxAgeMs: 600_000, staleMaxAgeMs: 3_600_000 }
/** A JWKS is a few keys; 256 KiB holds a hundred RSA keys. */
const MAX_JWKS_BYTES = 256 * 1024

type LocalSet = ReturnType<typeof createLocalJWKSet>

export interface KeyCache {
  /** For jose's `jwtVerify`: the key for this header. Throws `Unreachable` (503) or jose's `JWKSNoMatchingKey` (401). */
  readonly getKey: (header: JWSHeaderParameters, token: FlattenedJWSInput) => ReturnType<LocalSet>
  /** Fetches the set now unless one is in hand (for `ready()`). */
  warm(): Promise<void>
}

export function createKeyCache(jwksUri: string, policy: KeyCachePolicy, fetchImpl: typeof fetch): KeyCache {
  const clock = () => performance.now()
  const options: FetchJsonOptions = { fetch: fetchImpl, timeoutMs: policy.timeoutMs, maxBytes: MAX_JWKS_BYTES }
  let local: LocalSet | undefined
  let fetchedAt = -Infinity
  let attemptedAt = -Infinity
  let pending: Promise<void> | undefined

  function reload(): Promise<void> {
    // One fetch at a time, whatever the number of tokens waiting on it.
    pending ??= (async () => {
      attemptedAt = clock()
      try {
        const json = await fetchJson(jwksUri, 'application/jwk-set+json, application/json', options)
        let next: LocalSet
        try {
          next = createLocalJWKSet(json as JSONWebKeySet)
        } catch (err) {
          throw new Unreachable(`${jwksUri}: not a JWK Set`, { cause: err })
        }
        local = next
        fetchedAt = clock()
      } finally {
        pending = undefined
      }
    })()
    return pending
  }

  async function current(): Promise<LocalSet> {
    if (local === undefined || clock() - fetchedAt > policy.cacheMaxAgeMs) {
      try {
        await reload()
      } catch (err) {
        // The last good set, while it is not too old: an unreachable broker does not stop every resource server at once.
        if (local === undefined || clock() - fetchedAt > policy.staleMaxAgeMs) throw err
      }
    }
    return local!
  }

  return {
    getKey: async (header, token) => {
      if (typeof header.kid !== 'string' || header.kid === '') throw new errors.JWKSNoMatchingKey('a token without kid')
      const set = await current()
      try {
        return await set(header, token)
      } catch (err) {
        if (!(err instanceof errors.JWKSNoMatchingKey) || clock() - attemptedAt < policy.cooldownMs) throw err
        // An unknown kid: perhaps a rotation. Fetched again at most once per cooldown, so a flood of made-up kids cannot hammer the broker.
        await reload()
        return local!(header, token)
      }
    },
    async warm() {
      await current()
    },
  }
}
