/**
 * DPoP at a resource server (RFC 9449 §7): the verifier's `dpop` options,
 * the memory of the proofs' `jti`s that refuses a replay (§11.1), and the
 * check of a request's proof against the token it comes with. The proof
 * checks themselves are `verifyDpopProof` (dpop.ts), shared with the broker.
 */
import { createDpopNonces, DPOP_ALGORITHMS, DPOP_KEY_MISMATCH, DpopError, dpopHeaderValue, verifyDpopProof, type DpopNonces } from './dpop.js'
import type { VerifierReason } from './errors.js'

/**
 * Where the `jti`s of accepted proofs are kept until their proofs are too
 * old to be accepted anyway. Several replicas of one resource server share
 * one (Redis `SET key 1 NX EXAT until` is one), or each keeps its own and a
 * proof may be replayed once at each replica.
 */
export interface DpopReplayStore {
  /**
   * Records `key` until `until` (epoch seconds). Resolves true when it was
   * not recorded yet (the proof is fresh), false when it was (a replay).
   * Rejects when it cannot tell: the request is then refused with 503,
   * never let through.
   */
  spend(key: string, until: number): Promise<boolean>
}

export interface MemoryDpopReplayOptions {
  /** Most `jti`s kept at once. Default 100 000 (about 1 500 proofs a second with the default 60 s age). */
  readonly capacity?: number
  /** Epoch seconds. Default the system clock. */
  readonly now?: () => number
}

/**
 * A replay store in this process's memory. When it is full of `jti`s still
 * within their window, it refuses to record more (the request answers 503):
 * forgetting one early would let its proof be replayed.
 */
export function createMemoryDpopReplayStore(options: MemoryDpopReplayOptions = {}): DpopReplayStore {
  const capacity = options.capacity ?? 100_000
  if (!(Number.isInteger(capacity) && capacity >= 1)) throw new TypeError('capacity must be a positive integer')
  const now = options.now ?? (() => Date.now() / 1000)
  const seen = new Map<string, number>()
  /** No entry expires before this: a full store is not swept again until then. */
  let nextExpiry = 0
  function sweep(t: number): void {
    if (t < nextExpiry) return
    let soonest = Infinity
    for (const [key, until] of seen) {
      if (until <= t) seen.delete(key)
      else soonest = Math.min(soonest, until)
    }
    nextExpiry = soonest
  }
  return {
    spend(key, until) {
      const t = now()
      const known = seen.get(key)
      if (known !== undefined && known > t) return Promise.resolve(false)
      if (known === undefined && seen.size >= capacity) sweep(t)
      if (known === undefined && seen.size >= capacity) return Promise.reject(new Error(`DPoP replay memory full (${capacity} proofs within their window)`))
      seen.set(key, until)
      nextExpiry = Math.min(nextExpiry, until)
      return Promise.resolve(true)
    },
  }
}

/** The verifier's `dpop` option: accept DPoP-bound tokens (RFC 9449 §7.1) at this resource server. */
export interface DpopOptions {
  /** Refuse Bearer tokens: only DPoP (RFC 9449 §7.1). Default false: both schemes, a bound token only as DPoP (§7.2). */
  readonly required?: boolean
  /**
   * This server's URL as clients call it (scheme, host, port, and a path
   * prefix a proxy strips, if any): `htu` must be it followed by the
   * request's path (§4.3 item 9). Set it behind a proxy, or wherever the
   * `Host` header is the client's to choose. Without it the URL the
   * framework reports is used, built from `Host`.
   */
  readonly baseUrl?: string
  /**
   * Secrets (32 bytes or more each) of server nonces (§9): every answer then
   * carries `DPoP-Nonce` and a proof without a current one is answered 401
   * `use_dpop_nonce`. Made with the first, accepted under any (rotation);
   * replicas sharing them accept each other's nonces. No nonces when absent.
   */
  readonly nonceSecrets?: readonly Uint8Array[]
  /** How long a nonce lives: between this and twice this, in seconds. Default 300. */
  readonly nonceWindowSeconds?: number
  /** How old a proof's `iat` may be, in seconds (§11.1). Default 60; 5 to 300. */
  readonly maxAgeSeconds?: number
  /** Proof algorithms accepted (asymmetric only). Default every one the broker accepts (`DPOP_ALGORITHMS`). */
  readonly algorithms?: readonly string[]
  /** Where proof `jti`s are remembered. Default one in memory (`replayCapacity` entries). */
  readonly replay?: DpopReplayStore
  /** The default store's capacity. Default 100 000. */
  readonly replayCapacity?: number
}

/** The `dpop` options, checked. */
export interface DpopPolicy {
  readonly required: boolean
  readonly baseUrl: string | undefined
  readonly nonces: DpopNonces | undefined
  readonly maxAgeSeconds: number
  readonly algorithms: readonly string[]
  readonly replay: DpopReplayStore
}

/** Checks `options` once; `TypeError` on a bad one. `now` is epoch seconds. */
export function dpopPolicy(options: DpopOptions, now: () => number): DpopPolicy {
  const maxAgeSeconds = options.maxAgeSeconds ?? 60
  if (!(Number.isInteger(maxAgeSeconds) && maxAgeSeconds >= 5 && maxAgeSeconds <= 300)) throw new TypeError('dpop.maxAgeSeconds must be an integer in 5..300')
  const algorithms = options.algorithms ?? DPOP_ALGORITHMS
  if (algorithms.length === 0 || algorithms.some((a) => !DPOP_ALGORITHMS.includes(a)))
    throw new TypeError(`dpop.algorithms must be some of ${DPOP_ALGORITHMS.join(' ')}`)
  let baseUrl: string | undefined
  if (options.baseUrl !== undefined) {
    const parsed = URL.canParse(options.baseUrl) ? new URL(options.baseUrl) : undefined
    if (
      parsed === undefined ||
      (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') ||
      parsed.search !== '' ||
      parsed.hash !== '' ||
      parsed.username !== ''
    )
      throw new TypeError('dpop.baseUrl must be an http(s) URL without query, fragment or user')
    baseUrl = parsed.href.replace(/\/+$/, '')
  }
  const nonces =
    options.nonceSecrets === undefined
      ? undefined
      : createDpopNonces({
          secrets: options.nonceSecrets,
          now,
          ...(options.nonceWindowSeconds === undefined ? {} : { windowSeconds: options.nonceWindowSeconds }),
        })
  const replay = options.replay ?? createMemoryDpopReplayStore({ now, ...(options.replayCapacity === undefined ? {} : { capacity: options.replayCapacity }) })
  return { required: options.required === true, baseUrl, nonces, maxAgeSeconds, algorithms, replay }
}

/**
 * The URL a proof's `htu` must name: `baseUrl` and the request's path when
 * set, else the request's URL as the framework built it; undefined when
 * there is none to be had (the proof is then refused).
 */
export function requestUrl(policy: DpopPolicy, url: string | undefined): string | undefined {
  if (url === undefined || !URL.canParse(url)) return undefined
  const parsed = new URL(url)
  // Concatenated, never resolved: a path of `//host/x` must not change the host.
  return policy.baseUrl === undefined ? parsed.href : `${policy.baseUrl}${parsed.pathname}`
}

/** Why a proof was refused: the code sent, the reason for logs and metrics, the failed check for logs only. */
export class DpopRefusal extends Error {
  override readonly name = 'DpopRefusal'
  constructor(
    readonly code: 'invalid_dpop_proof' | 'use_dpop_nonce' | 'temporarily_unavailable',
    readonly reason: VerifierReason,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`)
  }
}

/** A request's proof and what it must match. */
export interface ProofRequest {
  /** The `DPoP` header as received: one value, or several. */
  readonly header: string | readonly string[] | null | undefined
  readonly method: string | undefined
  readonly url: string | undefined
  /** The access token it comes with (`ath`). */
  readonly token: string
  /** The token's `cnf.jkt`. */
  readonly jkt: string
  /** Epoch seconds. */
  readonly now: number
  /** Namespaces the `jti` in the replay store: this resource server. */
  readonly audience: string
}

/**
 * Checks the proof of a DPoP-bound token's request (RFC 9449 §7.1): one
 * `DPoP` header, every check of §4.3 against the method and the URL, `ath`
 * the token's hash, the key the token's `cnf.jkt`, the nonce when nonces
 * are on, then its `jti` spent once (§11.1). Throws `DpopRefusal`.
 */
export async function checkProof(policy: DpopPolicy, request: ProofRequest): Promise<void> {
  let proof: string | undefined
  try {
    proof = dpopHeaderValue(request.header)
  } catch (err) {
    if (err instanceof DpopError) throw new DpopRefusal('invalid_dpop_proof', 'dpop_proof_missing', err.detail)
    throw err
  }
  if (proof === undefined) throw new DpopRefusal('invalid_dpop_proof', 'dpop_proof_missing', 'no DPoP header')
  const url = requestUrl(policy, request.url)
  if (url === undefined || request.method === undefined)
    throw new DpopRefusal('invalid_dpop_proof', 'dpop_proof_invalid', 'the request has no absolute URL or method to check htu and htm against')
  let verified: Awaited<ReturnType<typeof verifyDpopProof>>
  try {
    verified = await verifyDpopProof(proof, {
      method: request.method,
      url,
      now: request.now,
      maxAgeSeconds: policy.maxAgeSeconds,
      accessToken: request.token,
      boundJkt: request.jkt,
      algorithms: policy.algorithms,
      ...(policy.nonces === undefined ? {} : { nonces: policy.nonces }),
    })
  } catch (err) {
    if (!(err instanceof DpopError)) throw err
    if (err.code === 'use_dpop_nonce') throw new DpopRefusal('use_dpop_nonce', 'dpop_nonce_required', err.detail)
    throw new DpopRefusal('invalid_dpop_proof', err.detail === DPOP_KEY_MISMATCH ? 'dpop_key_mismatch' : 'dpop_proof_invalid', err.detail)
  }
  let fresh: boolean
  try {
    // RFC 9449 §11.1: per key, so that one client's jti cannot collide with another's.
    fresh = await policy.replay.spend(`dpop:${request.audience}:${verified.jkt}:${verified.jti}`, verified.rememberUntil)
  } catch (err) {
    throw new DpopRefusal('temporarily_unavailable', 'dpop_replay_unavailable', err instanceof Error ? err.message : 'replay store failed')
  }
  if (!fresh) throw new DpopRefusal('invalid_dpop_proof', 'dpop_replayed', 'jti seen before')
}
