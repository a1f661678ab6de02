/**
 * Trusted upstream issuers' keys and tokens: discovery and fetching of a
 * JWKS within limits, the cached key set's life (fresh, stale, expired,
 * cooldown), and the full check of a decoded JWS against one issuer. Over
 * 400 lines because the key set's states and the checks that read them are
 * one state machine, on the exchange's hot path.
 */
import type { KeyObject } from 'node:crypto'
import type { JSONWebKeySet } from 'jose'
import * as oauth from 'oauth4webapi'
import type { Logger } from '../telemetry/log.js'
import { fetchLimited, isAllowedUpstreamUrl, UpstreamUnavailable, type FetchLimits } from './fetch-limited.js'
import { importPublicJwk, KeyRefused } from './jwk.js'
import {
  algorithmAccepts,
  ASYMMETRIC_ALGORITHMS,
  checkClaims,
  checkHeader,
  decodeJws,
  JwtError,
  keyFitsAlgorithm,
  verifySignature,
  type JwsHeader,
} from './jws.js'

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
  /** User subjects only: OpenID Connect ID tokens are accepted as subject tokens too (default: refused). */
  readonly acceptIdTokens?: boolean
  /** ID-JAG issuers only: seconds an ID-JAG may live (`exp` − `iat`, and `exp` − now). */
  readonly maxLifetime?: number
  /** Workload issuers only: the top-level claim naming the running copy (the instance); absent: `sub`. */
  readonly instanceClaim?: string
}

export interface JwksPolicy extends FetchLimits {
  /** Most usable keys kept from one JWKS: later entries are cut (and a warning logged). */
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

/** An issuer's verification keys. */
export interface KeyResolver {
  /** Finds the verification key for a header; throws `JwtError('unknown_kid' | 'ambiguous_key')` or `UpstreamUnavailable`. */
  resolve(header: JwsHeader): Promise<KeyObject>
  /**
   * Whether `key`, once returned by `resolve`, is still in the issuer's
   * current key set: a set lookup, no key import. Refreshes a set that is
   * due exactly as `resolve` does, so a key removed upstream stops counting
   * from the next refresh on. Throws `UpstreamUnavailable` when no set may serve.
   */
  holds(key: KeyObject): Promise<boolean>
  /**
   * What the key set can do now, from what is already known: no network.
   * For readiness (a token of this issuer would be refused 503 when not `usable`).
   */
  status(): KeySetStatus
  /**
   * Fetches the set when it is due, exactly as a request would (never
   * fetched or older than `cacheMaxAgeMs`, and the cooldown over): an idle
   * broker keeps its sets current and learns that an issuer is down. Never
   * rejects; a failure is kept in `status()`.
   */
  refreshIfDue(): Promise<void>
}

/**
 * One issuer's key set, as readiness reports it:
 * - `local`: held in memory (the dev user issuer, tests); always usable;
 * - `pending`: no set yet and no fetch finished (the first one is under way);
 * - `unavailable`: no set yet, and the last fetch failed;
 * - `fresh`: fetched less than `cacheMaxAgeMs` ago;
 * - `stale`: older, but within `max(cacheMaxAgeMs, staleMaxAgeMs)`: the last
 *   good set still serves (the issuer is down, or the refresh is just due);
 * - `expired`: older than that: nothing serves.
 *
 * `usable` (fresh, stale, local) says whether a token of the issuer can be
 * verified now; otherwise its exchanges fail closed with 503.
 */
export interface KeySetStatus {
  readonly state: 'local' | 'pending' | 'unavailable' | 'fresh' | 'stale' | 'expired'
  readonly usable: boolean
  /** Epoch milliseconds of the fetch the set in use came from. */
  readonly fetchedAt?: number
  /** Why the last fetch failed, every URL in it cut to its origin and path; absent once one succeeds. */
  readonly lastFailure?: string
}

/** One usable key of a set. */
interface SetKey {
  readonly kid: string | undefined
  readonly alg: string | undefined
  readonly key: KeyObject
}

/** The usable keys of one fetched JWKS. */
interface KeySet {
  readonly keys: readonly SetKey[]
  readonly objects: ReadonlySet<KeyObject>
  /** Each key under its entry's exact JSON text: an entry unchanged at the next fetch keeps its KeyObject. */
  readonly byText: ReadonlyMap<string, SetKey>
}

/** A JWKS entry left out of the set, and why (for the log: never key material). */
interface IgnoredKey {
  readonly kid: string | undefined
  readonly reason: string
}

const ALGORITHMS: ReadonlySet<string> = new Set(ASYMMETRIC_ALGORITHMS)
/** Most ignored entries named in one warning (a hostile JWKS can hold thousands). */
const MAX_IGNORED_LOGGED = 20

/** Whether a JWKS entry says it is no signature key of ours; such entries are skipped silently. */
function otherPurpose(jwk: Record<string, unknown>): boolean {
  const { use, key_ops: ops, alg } = jwk
  // RFC 7517 §4.2, §4.3: an encryption key, or one not allowed to verify, is not for us.
  if (typeof use === 'string' && use !== 'sig') return true
  if (Array.isArray(ops) && !ops.includes('verify')) return true
  // An algorithm we never accept (e.g. RSA-OAEP, HS256): no token we verify can select it.
  return typeof alg === 'string' && !ALGORITHMS.has(alg)
}

/**
 * The usable keys of a JWKS's `keys` array, in order, at most `maxKeys`:
 * entries for another purpose are skipped; malformed or weak keys, or keys
 * whose `alg` does not fit them, are ignored and reported; a repeated entry
 * counts once. An entry whose JSON text is unchanged since `previous` keeps
 * its key object.
 */
function buildKeySet(entries: readonly unknown[], maxKeys: number, previous: KeySet | undefined): { set: KeySet; ignored: IgnoredKey[]; cut: number } {
  const keys: SetKey[] = []
  const byText = new Map<string, SetKey>()
  const ignored: IgnoredKey[] = []
  let i = 0
  for (; i < entries.length && keys.length < maxKeys; i++) {
    const entry = entries[i]
    const text = JSON.stringify(entry)
    if (byText.has(text)) continue
    const known = previous?.byText.get(text)
    if (known !== undefined) {
      keys.push(known)
      byText.set(text, known)
      continue
    }
    const jwk = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>
    const kid = typeof jwk['kid'] === 'string' ? jwk['kid'] : undefined
    try {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new KeyRefused('not a JSON object')
      if ('kid' in jwk && kid === undefined) throw new KeyRefused('malformed kid')
      if ('use' in jwk && typeof jwk['use'] !== 'string') throw new KeyRefused('malformed use')
      if ('alg' in jwk && typeof jwk['alg'] !== 'string') throw new KeyRefused('malformed alg')
      if ('key_ops' in jwk && !(Array.isArray(jwk['key_ops']) && jwk['key_ops'].every((o) => typeof o === 'string'))) {
        throw new KeyRefused('malformed key_ops')
      }
      if (otherPurpose(jwk)) continue
      const key = importPublicJwk(jwk)
      const alg = jwk['alg'] as string | undefined
      if (alg !== undefined && !keyFitsAlgorithm(alg, key)) throw new KeyRefused(`alg ${alg} does not fit the key`)
      const setKey = { kid, alg, key }
      keys.push(setKey)
      byText.set(text, setKey)
    } catch (err) {
      if (!(err instanceof KeyRefused)) throw err
      ignored.push({ kid: kid?.slice(0, 128), reason: err.message })
    }
  }
  return { set: { keys, objects: new Set(keys.map((k) => k.key)), byText }, ignored, cut: entries.length - i }
}

/**
 * The one key of `set` a header selects (RFC 7515 §4.1.4 `kid`, RFC 7517
 * §4.4 `alg`, and the key type and curve `alg` needs); undefined when none,
 * `JwtError('ambiguous_key')` when several.
 */
function selectKey(set: KeySet, header: JwsHeader): KeyObject | undefined {
  let found: KeyObject | undefined
  for (const k of set.keys) {
    if (header.kid !== undefined && k.kid !== header.kid) continue
    if (k.alg !== undefined && !algorithmAccepts(k.alg, header.alg, k.key)) continue
    if (!keyFitsAlgorithm(header.alg, k.key)) continue
    if (found !== undefined) throw new JwtError('ambiguous_key')
    found = k.key
  }
  return found
}

/** Resolver over a key set held in memory (the dev user issuer, tests). Throws `TypeError` on a key it would not use. */
export function createLocalKeyResolver(jwks: JSONWebKeySet): KeyResolver {
  const { set, ignored } = buildKeySet(jwks.keys, Infinity, undefined)
  if (ignored.length > 0) throw new TypeError(`local key set: ${ignored.map((k) => `${k.kid ?? '(no kid)'}: ${k.reason}`).join('; ')}`)
  return {
    async resolve(header) {
      const key = selectKey(set, header)
      if (key === undefined) throw new JwtError('unknown_kid')
      return key
    },
    holds: async (key) => set.objects.has(key),
    status: () => ({ state: 'local', usable: true }),
    refreshIfDue: async () => {},
  }
}

/** `text` with each URL in it cut to its origin and path: a configured or discovered URL may carry credentials or a query token. */
export function withoutUrlSecrets(text: string): string {
  return text.replace(/\bhttps?:\/\/\S+/g, (u) => {
    if (!URL.canParse(u)) return '(url)'
    const url = new URL(u)
    return `${url.origin}${url.pathname}`
  })
}

/**
 * Resolver over an issuer's published JWKS, on the injected clock, with
 * these bounds: timeout and body size per fetch, at most `maxKeys`
 * usable keys kept (the rest cut, with a warning); at most one network
 * attempt (JWKS or discovery) per cooldown, whether the last one failed or
 * an unknown `kid` asks again; a refresh after `cacheMaxAgeMs`, which every
 * request waits for; and while the issuer cannot be reached, the last good
 * set serves until it is `max(cacheMaxAgeMs, staleMaxAgeMs)` old, then
 * nothing does. Each fetched JWKS is filtered by `importPublicJwk` before
 * any key of it is used; one warning per fetch names what was left out.
 */
export function createRemoteKeyResolver(issuer: TrustedIssuer, policy: JwksPolicy, now: () => number = Date.now, logger?: Logger): KeyResolver {
  // Long, not split: a factory whose short methods share one issuer's cached key set, its age and its fetch cooldown.
  const usableMs = Math.max(policy.cacheMaxAgeMs, policy.staleMaxAgeMs)
  const issuerUrl = new URL(issuer.issuer)
  let jwksUri: string | undefined
  let set: KeySet | undefined
  let lastGoodAt: number | undefined
  let lastAttempt = -Infinity
  let lastFailure = 'not fetched yet'
  /** The last finished attempt failed (a success clears it). */
  let failing = false
  /** The fetch in flight, which concurrent requests share. */
  let reloading: Promise<void> | undefined

  // oauth4webapi's own options carry only headers for a GET (no body; fetchLimited sets method, redirect and timeout).
  const fetchMetadata = (u: string, init: oauth.CustomFetchOptions<'GET'>) => fetchLimited(u, { headers: init.headers }, policy)

  /** A discovered jwks_uri must be https, or loopback http only for a loopback issuer. */
  const acceptableJwksUri = (uri: unknown): uri is string =>
    typeof uri === 'string' &&
    URL.canParse(uri) &&
    (new URL(uri).protocol === 'https:' || (issuerUrl.protocol === 'http:' && isAllowedUpstreamUrl(new URL(uri))))

  async function discover(): Promise<string> {
    if (issuer.jwksUri !== undefined) return issuer.jwksUri
    if (jwksUri !== undefined) return jwksUri
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- deprecated to stand out: the config accepts an http issuer on a loopback host only (tests, a local IdP)
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
    if (!acceptableJwksUri(uri)) throw new UpstreamUnavailable(`discovery for ${issuer.issuer} found no usable jwks_uri`)
    jwksUri = uri
    return uri
  }

  async function fetchSet(): Promise<void> {
    const started = now()
    lastAttempt = started
    const uri = await discover()
    const response = await fetchLimited(uri, { headers: { accept: 'application/jwk-set+json, application/json' } }, policy)
    let parsed: unknown
    try {
      parsed = JSON.parse(await response.text())
    } catch {
      throw new UpstreamUnavailable(`JWKS of ${issuer.issuer} is not JSON`)
    }
    const entries = (parsed as { keys?: unknown } | null)?.keys
    if (!Array.isArray(entries)) throw new UpstreamUnavailable(`JWKS of ${issuer.issuer} has no keys array`)
    const built = buildKeySet(entries, policy.maxKeys, set)
    if (built.ignored.length > 0 || built.cut > 0) {
      logger?.warn(
        {
          issuer: issuer.issuer,
          ignored: built.ignored.slice(0, MAX_IGNORED_LOGGED),
          ignored_count: built.ignored.length,
          cut: built.cut,
          max_keys: policy.maxKeys,
        },
        'JWKS keys ignored',
      )
    }
    set = built.set
    lastGoodAt = started
  }

  /** Starts one fetch unless one is in flight; it never rejects (a failure keeps the last good set). */
  function refresh(): Promise<void> {
    reloading ??= fetchSet()
      .then(() => {
        if (failing) logger?.info({ issuer: issuer.issuer }, 'JWKS fetched again')
        failing = false
      })
      .catch((err: unknown) => {
        lastFailure = err instanceof UpstreamUnavailable ? err.message : `JWKS fetch failed: ${(err as Error).name}`
        // Once per outage, not once per attempt: readiness reports it meanwhile.
        if (!failing) logger?.warn({ issuer: issuer.issuer, reason: withoutUrlSecrets(lastFailure) }, 'JWKS fetch failed')
        failing = true
      })
      .finally(() => {
        reloading = undefined
      })
    return reloading
  }

  /** Never fetched, or older than the cache age; and the cooldown since the last attempt is over. */
  const due = (t: number) => (lastGoodAt === undefined || t - lastGoodAt > policy.cacheMaxAgeMs) && t - lastAttempt >= policy.cooldownMs

  /** The set requests are answered from, refreshed first when due. */
  async function currentSet(): Promise<KeySet> {
    if (due(now())) void refresh()
    // Requests that arrive while a fetch is in flight wait for it: the first ones after a start
    // would otherwise find no set, and later ones would still trust a key the refresh drops.
    if (reloading !== undefined) await reloading
    if (set === undefined || lastGoodAt === undefined || now() - lastGoodAt > usableMs) {
      throw new UpstreamUnavailable(`no usable JWKS for ${issuer.issuer}: ${lastFailure}`)
    }
    return set
  }

  return {
    async resolve(header) {
      let key = selectKey(await currentSet(), header)
      if (key === undefined && now() - lastAttempt >= policy.cooldownMs) {
        // An unknown kid may be a key rotated in since the last fetch: one refetch per cooldown.
        await refresh()
        key = selectKey(await currentSet(), header)
      }
      if (key === undefined) throw new JwtError('unknown_kid')
      return key
    },
    holds: async (key) => (await currentSet()).objects.has(key),
    status() {
      const failure = failing ? { lastFailure: withoutUrlSecrets(lastFailure) } : {}
      if (set === undefined || lastGoodAt === undefined) return { state: failing ? 'unavailable' : 'pending', usable: false, ...failure }
      const age = now() - lastGoodAt
      const state = age <= policy.cacheMaxAgeMs ? 'fresh' : age <= usableMs ? 'stale' : 'expired'
      return { state, usable: state !== 'expired', fetchedAt: lastGoodAt, ...failure }
    },
    async refreshIfDue() {
      if (due(now())) await refresh()
    },
  }
}

/**
 * Keeps remote key sets current in the background: a fetch for each at once
 * (so the first tokens after a start need not wait, and readiness learns
 * early whether an issuer can be reached), then a due check every `everyMs`
 * (the fetches themselves follow each resolver's cache age and cooldown).
 * Returns the function that stops it.
 */
export function keepKeySetsFresh(resolvers: readonly KeyResolver[], everyMs = 1_000): () => void {
  if (resolvers.length === 0) return () => {}
  const tick = () => {
    for (const r of resolvers) void r.refreshIfDue()
  }
  tick()
  const timer = setInterval(tick, everyMs)
  timer.unref()
  return () => clearInterval(timer)
}

export interface VerifiedJwt {
  readonly header: JwsHeader
  readonly payload: Record<string, unknown>
  /** The issuer key the signature was checked with (see `KeyResolver.holds`). */
  readonly key: KeyObject
}

export interface VerifyOptions {
  readonly issuer: TrustedIssuer
  readonly keys: KeyResolver
  /** Epoch seconds. */
  readonly now: number
  readonly skew: number
  readonly required: readonly string[]
  /** Seconds; see `ClaimRules.maxExpiresIn`. */
  readonly maxExpiresIn?: number
}

/**
 * Full check of an already-decoded JWS against one trusted issuer: header
 * profile, key, signature, then claims. Throws `JwtError` or `UpstreamUnavailable`.
 */
export async function verifyDecodedJwt(decoded: ReturnType<typeof decodeJws>, options: VerifyOptions): Promise<VerifiedJwt> {
  const { header, payload } = decoded
  checkHeader(header, { algorithms: options.issuer.algorithms, typ: options.issuer.typ })
  const key = await options.keys.resolve(header)
  if (!(await verifySignature(header.alg, key, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
  checkClaims(payload, {
    issuer: options.issuer.issuer,
    audience: options.issuer.audience,
    now: options.now,
    skew: options.skew,
    required: options.required,
    ...(options.maxExpiresIn === undefined ? {} : { maxExpiresIn: options.maxExpiresIn }),
  })
  return { header, payload, key }
}

/** Issuers trusted for one role, each with its key resolver. */
export interface IssuerRegistry {
  get(iss: string): { readonly issuer: TrustedIssuer; readonly keys: KeyResolver } | undefined
}

export function createIssuerRegistry(issuers: readonly TrustedIssuer[], resolverFor: (issuer: TrustedIssuer) => KeyResolver): IssuerRegistry {
  const map = new Map(issuers.map((i) => [i.issuer, { issuer: i, keys: resolverFor(i) }]))
  return { get: (iss) => map.get(iss) }
}

/** Reads `iss` from an unverified payload only to pick the issuer whose keys will verify it. */
export function unverifiedIssuer(payload: Record<string, unknown>): string {
  const iss = payload['iss']
  if (typeof iss !== 'string') throw new JwtError('missing_iss')
  return iss
}
