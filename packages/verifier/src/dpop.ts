/**
 * DPoP proofs (RFC 9449): the checks of §4.3 and §7.1, shared by the broker's
 * token endpoint, this package's resource-server verification and the
 * broker's forward auth, so that every hop judges a proof the same way.
 * Replay of a proof's `jti` is the caller's to refuse (the broker in its
 * shared replay store, a resource server in its own memory): `verifyDpopProof`
 * answers the `jti` and until when it must be remembered.
 */
import { base64url, calculateJwkThumbprint, decodeProtectedHeader, errors, importJWK, jwtVerify, type CryptoKey, type JWK } from 'jose'
import { ASYMMETRIC_ALGORITHMS } from './claims.js'

/** RFC 9449 §7.1 and §12.2 error codes: the proof is bad, or the server wants its nonce in it. */
export type DpopErrorCode = 'invalid_dpop_proof' | 'use_dpop_nonce'

/**
 * A refused proof. `message` is safe to send (it never says which check
 * failed beyond what RFC 9449 says); `detail` names the check, for logs only.
 */
export class DpopError extends Error {
  override readonly name = 'DpopError'
  constructor(
    readonly code: DpopErrorCode,
    readonly detail: string,
  ) {
    super(code === 'use_dpop_nonce' ? 'a DPoP nonce from the server is required' : 'DPoP proof is invalid')
  }
}

/** The DPoP proof algorithms accepted: asymmetric only (RFC 9449 §4.3 item 5, RFC 8725 §3.1). */
export const DPOP_ALGORITHMS: readonly string[] = ASYMMETRIC_ALGORITHMS

/** Longest a proof may be: far above any real one, so hostile input is bounded before decoding. */
export const MAX_DPOP_PROOF_LENGTH = 8 * 1024

export interface DpopCheck {
  /** The request's method: `htm` must be it (RFC 9449 §4.3 item 8). */
  readonly method: string
  /** The request's URI: `htu` must be it without query and fragment (§4.3 item 9). */
  readonly url: string | URL
  /** Epoch seconds now. */
  readonly now: number
  /** How old an `iat` may be, in seconds (§4.3 item 11, §11.1). Default 60. */
  readonly maxAgeSeconds?: number
  /** How far in the future an `iat` may be (clock skew), in seconds. Default 5. */
  readonly clockSkewSeconds?: number
  /** The access token the proof comes with: `ath` must be its SHA-256 (§4.3 item 12, §7.1). */
  readonly accessToken?: string
  /** The token's `cnf.jkt`: the proof's key must be that key (§7.1). */
  readonly boundJkt?: string
  /** When given, the proof must carry a nonce it accepts (§8, §9); else `use_dpop_nonce`. */
  readonly nonces?: DpopNonces
  /** Default `DPOP_ALGORITHMS`. */
  readonly algorithms?: readonly string[]
}

/** A proof that passed every check of RFC 9449 §4.3 but the replay of its `jti`. */
export interface DpopProof {
  /** RFC 7638 SHA-256 thumbprint of the proof's key (base64url): what `cnf.jkt` binds (§6.1). */
  readonly jkt: string
  readonly jti: string
  readonly iat: number
  /** Epoch seconds until which `jti` must be remembered: after that, `iat` alone refuses the proof. */
  readonly rememberUntil: number
}

/**
 * The one `DPoP` header value of a request, or undefined when there is none.
 * Several `DPoP` fields arrive joined by commas, which no compact JWS holds:
 * refused (§4.3 item 1).
 */
export function dpopHeaderValue(header: string | readonly string[] | null | undefined): string | undefined {
  if (header === null || header === undefined) return undefined
  if (typeof header !== 'string') {
    if (header.length === 0) return undefined
    if (header.length > 1) throw new DpopError('invalid_dpop_proof', 'more than one DPoP header')
    return dpopHeaderValue(header[0])
  }
  if (header.includes(',')) throw new DpopError('invalid_dpop_proof', 'more than one DPoP header')
  return header.trim()
}

/** `htu` comparison (§4.3 item 9): scheme and host case-folded, default port dropped, no query, no fragment (RFC 3986 §6.2.2–6.2.3). */
export function normalizedHtu(url: string | URL): string | undefined {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return undefined
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') return undefined
  parsed.search = ''
  parsed.hash = ''
  parsed.username = ''
  parsed.password = ''
  return parsed.href
}

/** The last URL a check named, normalized: a server checks proofs for a few URLs, most often the same one again. */
let lastUrl: { readonly url: string | URL; readonly htu: string } | undefined

/** Whether a proof's `htu` names `url` (§4.3 item 9): the same text as its normalized form, or once normalized. */
function sameUri(htu: string, url: string | URL): boolean {
  if (lastUrl?.url !== url) {
    const normalized = normalizedHtu(url)
    if (normalized === undefined) throw new TypeError('DpopCheck.url must be an absolute http(s) URL')
    lastUrl = { url, htu: normalized }
  }
  return htu === lastUrl.htu || normalizedHtu(htu) === lastUrl.htu
}

/** base64url(SHA-256(ASCII(token))), the `ath` of a proof sent with `token` (§4.2). WebCrypto: this package runs beyond Node. */
export async function accessTokenHash(token: string): Promise<string> {
  return base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token))))
}

/** `DpopError.detail` when the proof's key is not the token's `cnf.jkt`: a stolen token, not a broken client (§7.1). */
export const DPOP_KEY_MISMATCH = 'key is not the one the token is bound to'

const B64URL_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

/**
 * Checks a DPoP proof (RFC 9449 §4.3; with an access token, §7.1 too):
 * `typ` `dpop+jwt`, an asymmetric `alg`, a public `jwk` that verifies the
 * signature, `jti`, `htm`, `htu`, `iat` within the window, `ath` and the
 * bound key when an access token comes with it, the nonce when one is
 * required. Throws `DpopError`; the caller refuses a replayed `jti`.
 */
export async function verifyDpopProof(proof: string, check: DpopCheck): Promise<DpopProof> {
  const fail = (detail: string): never => {
    throw new DpopError('invalid_dpop_proof', detail)
  }
  if (proof.length === 0 || proof.length > MAX_DPOP_PROOF_LENGTH || !B64URL_JWS.test(proof)) fail('not a compact JWS')
  let header: ReturnType<typeof decodeProtectedHeader>
  try {
    header = decodeProtectedHeader(proof)
  } catch {
    return fail('header is not JSON')
  }
  if (header.typ !== 'dpop+jwt') fail('typ is not dpop+jwt')
  const algorithms = check.algorithms ?? DPOP_ALGORITHMS
  if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) fail('alg not allowed')
  const jwk: unknown = header.jwk
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return fail('no jwk header')
  // §4.3 item 7: a private key in the header means the client has leaked it.
  if (['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'].some((member) => member in jwk)) fail('jwk holds a private key')
  const kty = (jwk as JWK).kty
  if (kty !== 'EC' && kty !== 'RSA' && kty !== 'OKP') fail('jwk of an unsupported key type')

  let payload: Record<string, unknown>
  let jkt: string
  try {
    const key = await proofKey(jwk, header.alg as string)
    jkt = key.jkt
    payload = (await jwtVerify(proof, key.key, { typ: 'dpop+jwt', algorithms: [...algorithms] })).payload
  } catch (err) {
    if (err instanceof errors.JOSEError) return fail(`key, signature or structure: ${err.code}`)
    // WebCrypto refuses a key that does not fit the alg (a P-256 jwk under ES384, say) with its own DataError or
    // NotSupportedError, and jose passes them on: the proof is as bad as with any other key fault (§4.3 item 6).
    if (err instanceof DOMException || err instanceof TypeError) return fail(`key: ${err.name}`)
    throw err
  }

  const { jti, htm, htu, iat } = payload
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) fail('jti missing or too long')
  if (htm !== check.method) fail('htm does not match the method')
  if (typeof htu !== 'string' || !sameUri(htu, check.url)) fail('htu does not match the URI')
  if (typeof iat !== 'number' || !Number.isFinite(iat)) fail('iat missing')
  const maxAge = check.maxAgeSeconds ?? 60
  const skew = check.clockSkewSeconds ?? 5
  if ((iat as number) > check.now + skew) fail('iat in the future')
  if ((iat as number) < check.now - maxAge) fail('iat too old')

  if (check.accessToken !== undefined) {
    if (payload['ath'] !== (await accessTokenHash(check.accessToken))) fail('ath does not match the access token')
  }
  if (check.boundJkt !== undefined && !sameText(jkt, check.boundJkt)) fail(DPOP_KEY_MISMATCH)

  // The nonce last: a proof bad in any other way is refused as such, not sent round for a nonce.
  if (check.nonces !== undefined) {
    const nonce = payload['nonce']
    if (typeof nonce !== 'string' || !(await check.nonces.accepts(nonce))) {
      throw new DpopError('use_dpop_nonce', nonce === undefined ? 'no nonce' : 'nonce unknown or expired')
    }
  }
  return { jkt, jti: jti as string, iat: iat as number, rememberUntil: Math.floor(iat as number) + maxAge + skew }
}

/** Compares in time independent of where the texts differ (they are public thumbprints and MACs of equal length). */
/**
 * A client signs every proof with the same key (RFC 9449 §2): its public key
 * is imported, and its thumbprint taken, once. Keyed by the algorithm and
 * the members RFC 7638 §3.2 hashes, in its order; at most `MAX_PROOF_KEYS`,
 * the oldest dropped first.
 */
const MAX_PROOF_KEYS = 4_096
const proofKeys = new Map<string, Promise<{ readonly key: CryptoKey | Uint8Array; readonly jkt: string }>>()

function proofKey(jwk: JWK, alg: string): Promise<{ readonly key: CryptoKey | Uint8Array; readonly jkt: string }> {
  // kty is one of EC, RSA, OKP here: these members are the whole public key.
  const members = jwk.kty === 'EC' ? [jwk.crv, jwk.kty, jwk.x, jwk.y] : jwk.kty === 'RSA' ? [jwk.e, jwk.kty, jwk.n] : [jwk.crv, jwk.kty, jwk.x]
  const id = `${alg}|${members.map((m) => (typeof m === 'string' ? m : '')).join('|')}`
  let entry = proofKeys.get(id)
  if (entry === undefined) {
    entry = Promise.all([importJWK(jwk, alg), calculateJwkThumbprint(jwk, 'sha256')]).then(([key, jkt]) => ({ key, jkt }))
    // A key that does not import is not remembered.
    entry.catch(() => proofKeys.delete(id))
    if (proofKeys.size >= MAX_PROOF_KEYS) proofKeys.delete(proofKeys.keys().next().value!)
    proofKeys.set(id, entry)
  }
  return entry
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}

/**
 * Server-provided nonces (RFC 9449 §8, §9) without server state: a nonce
 * names a time window and carries an HMAC of it, so every instance holding
 * the same secret accepts every other's. One is good for the window it was
 * made in and the next: between `windowSeconds` and twice that.
 */
export interface DpopNonces {
  /** The nonce to send now in `DPoP-Nonce`. */
  current(): Promise<string>
  accepts(nonce: string): Promise<boolean>
}

export interface DpopNonceOptions {
  /** At least 32 bytes. Instances that accept each other's nonces share it. */
  readonly secrets: readonly Uint8Array[]
  /** Default 300. */
  readonly windowSeconds?: number
  /** Epoch seconds. Default the system clock. */
  readonly now?: () => number
}

/** The nonces of `secrets`: made with the first, accepted under any (so a secret can be rotated). */
export function createDpopNonces(options: DpopNonceOptions): DpopNonces {
  const { secrets } = options
  if (secrets.length === 0 || secrets.some((s) => s.byteLength < 32)) throw new TypeError('DPoP nonce secrets must be at least 32 bytes each')
  const windowSeconds = options.windowSeconds ?? 300
  if (!(Number.isInteger(windowSeconds) && windowSeconds >= 10)) throw new TypeError('windowSeconds must be an integer of at least 10')
  const now = options.now ?? (() => Date.now() / 1000)
  const keys = secrets.map((s) => crypto.subtle.importKey('raw', new Uint8Array(s), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']))
  const mac = async (key: Promise<CryptoKey>, window: number): Promise<string> =>
    base64url.encode(new Uint8Array(await crypto.subtle.sign('HMAC', await key, new TextEncoder().encode(`mandate-dpop-nonce:${window}`)))).slice(0, 22)
  const windowOf = (): number => Math.floor(now() / windowSeconds)
  // The current window's nonce, made once per window.
  let cached: { window: number; nonce: Promise<string> } | undefined
  return {
    current() {
      const window = windowOf()
      if (cached?.window !== window) cached = { window, nonce: mac(keys[0]!, window).then((m) => `${window.toString(36)}.${m}`) }
      return cached.nonce
    },
    async accepts(nonce) {
      const m = /^([0-9a-z]{1,12})\.([A-Za-z0-9_-]{22})$/.exec(nonce)
      if (m === null) return false
      const window = parseInt(m[1]!, 36)
      const current = windowOf()
      if (window !== current && window !== current - 1) return false
      for (const key of keys) if (sameText(await mac(key, window), m[2]!)) return true
      return false
    },
  }
}
