/**
 * DPoP (RFC 9449): the client's one proof-of-possession key, the proofs it
 * signs with it, and the server nonces it has learned. Token requests get
 * their proofs from oauth4webapi's DPoP handle (which also learns the
 * broker's `DPoP-Nonce`); the proofs the handle does not make, a proof for
 * another party's request (the delegation proof, §4.2 with `ath`) and the
 * proofs of resource requests (§7.1), are signed here with the same key.
 */
import type { webcrypto } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import type { Clock } from './client.js'

/** `ClientOptions.dpop`: `true` for a key the client makes itself, or a key pair of the caller's. */
export type DpopOption = true | oauth.CryptoKeyPair

/** The client's DPoP key, ready to sign. */
export interface DpopKey {
  /** oauth4webapi's handle: proofs for the token endpoint, and the broker's nonces (RFC 9449 §8). */
  readonly handle: oauth.DPoPHandle
  readonly privateKey: oauth.CryptoKey
  /** The JWS `alg` the proofs carry. */
  readonly alg: string
  /** The public key as the proofs' `jwk` header holds it (RFC 9449 §4.2). */
  readonly jwk: webcrypto.JsonWebKey
  /** Its RFC 7638 SHA-256 thumbprint: the `cnf.jkt` of a token bound to it (§6.1). */
  readonly jkt: string
}

/** The client's key (made or checked once, on first use) and the nonces resource servers have sent. */
export interface DpopState {
  readonly key: Promise<DpopKey>
  /** RFC 9449 §9: the last `DPoP-Nonce` each resource server's origin sent; at most `MAX_NONCES`, oldest first out. */
  readonly nonces: Map<string, string>
}

const MAX_NONCES = 100

/** What oauth4webapi and the broker sign with: the JWS `alg` of a private key and the WebCrypto parameters to sign as it. */
function signing(key: oauth.CryptoKey): { alg: string; params: webcrypto.AlgorithmIdentifier | webcrypto.EcdsaParams | webcrypto.RsaPssParams } | undefined {
  const algorithm = key.algorithm as { name: string; namedCurve?: string; hash?: { name: string } }
  const bits = Number(algorithm.hash?.name.replace('SHA-', ''))
  switch (algorithm.name) {
    case 'ECDSA': {
      const size = { 'P-256': 256, 'P-384': 384, 'P-521': 512 }[algorithm.namedCurve ?? '']
      return size === undefined ? undefined : { alg: `ES${size}`, params: { name: 'ECDSA', hash: `SHA-${size}` } }
    }
    case 'RSASSA-PKCS1-v1_5':
      return [256, 384, 512].includes(bits) ? { alg: `RS${bits}`, params: { name: algorithm.name } } : undefined
    case 'RSA-PSS':
      return [256, 384, 512].includes(bits) ? { alg: `PS${bits}`, params: { name: algorithm.name, saltLength: bits / 8 } } : undefined
    case 'Ed25519':
      // oauth4webapi's name for it (RFC 9864); the broker takes it as it takes `EdDSA`.
      return { alg: 'Ed25519', params: { name: 'Ed25519' } }
    default:
      return undefined
  }
}

/**
 * The DPoP state of `option`, or undefined without one. `true` makes an
 * ES256 key pair whose private key cannot be exported; a given pair must be
 * a private key with the `sign` usage and its public key (`TypeError` at
 * once otherwise). Proofs take their `iat` from `clock`.
 */
export function dpopState(option: DpopOption | undefined, clock: Clock): DpopState | undefined {
  if (option === undefined) return undefined
  if (option !== true) {
    // Checked as a JavaScript caller may pass anything.
    const given: unknown = option
    const { privateKey, publicKey } = (given ?? {}) as Partial<oauth.CryptoKeyPair>
    if (
      !(privateKey instanceof globalThis.CryptoKey) ||
      privateKey.type !== 'private' ||
      !privateKey.usages.includes('sign') ||
      signing(privateKey) === undefined
    ) {
      throw new TypeError('dpop must be true or a CryptoKeyPair whose private key signs ES256/384/512, RS*, PS* or Ed25519 with the "sign" usage')
    }
    if (!(publicKey instanceof globalThis.CryptoKey) || publicKey.type !== 'public' || !publicKey.extractable) {
      throw new TypeError('dpop: the key pair needs its (extractable) public key')
    }
  }
  const key = readyKey(option, clock)
  // Surfaces on first use; not an unhandled rejection meanwhile.
  key.catch(() => {})
  return { key, nonces: new Map() }
}

async function readyKey(option: DpopOption, clock: Clock): Promise<DpopKey> {
  const pair = option === true ? await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']) : option
  const handle = oauth.DPoP({}, pair, {
    // The client's clock, not the machine's, sets the proof's time (an injected clock in tests, a corrected one in production).
    [oauth.modifyAssertion]: (_header, payload) => {
      payload['iat'] = Math.floor(clock.now() / 1000)
    },
  })
  const { kty, crv, x, y, n, e } = await crypto.subtle.exportKey('jwk', pair.publicKey)
  // Public members only (RFC 9449 §4.2: the header must not hold a private key).
  const jwk = Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v !== undefined)) as webcrypto.JsonWebKey
  return { handle, privateKey: pair.privateKey, alg: signing(pair.privateKey)!.alg, jwk, jkt: await handle.calculateThumbprint() }
}

const base64url = (bytes: ArrayBuffer | Uint8Array): string => Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString('base64url')

/** What a proof is for: the request's method and URI, the access token it comes with, the server's nonce. */
export interface ProofClaims {
  readonly htm: string
  readonly url: string | URL
  readonly accessToken?: string
  readonly nonce?: string
}

/**
 * A DPoP proof JWT (RFC 9449 §4.2) signed with `key`: `typ` `dpop+jwt`, the
 * public key as `jwk`; `htu` the URI without query and fragment, a random
 * `jti`, `iat` now by `clock`, `ath` = base64url(SHA-256(token)) when it
 * comes with an access token, and the nonce when there is one.
 */
export async function signProof(key: DpopKey, claims: ProofClaims, clock: Clock): Promise<string> {
  const url = new URL(claims.url)
  const payload: Record<string, unknown> = {
    iat: Math.floor(clock.now() / 1000),
    jti: base64url(crypto.getRandomValues(new Uint8Array(32))),
    htm: claims.htm,
    htu: `${url.origin}${url.pathname}`,
  }
  if (claims.accessToken !== undefined) payload['ath'] = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(claims.accessToken)))
  if (claims.nonce !== undefined) payload['nonce'] = claims.nonce
  const header = { alg: key.alg, typ: 'dpop+jwt', jwk: key.jwk }
  const input = `${base64url(Buffer.from(JSON.stringify(header)))}.${base64url(Buffer.from(JSON.stringify(payload)))}`
  const signature = await crypto.subtle.sign(signing(key.privateKey)!.params, key.privateKey, new TextEncoder().encode(input))
  return `${input}.${base64url(signature)}`
}

/** Remembers the `DPoP-Nonce` a server sent (RFC 9449 §8.2, §9), by origin. */
export function rememberNonce(state: DpopState, url: string | URL, response: Response): void {
  const nonce = response.headers.get('dpop-nonce')
  // RFC 9449 §8.1: a nonce is NQCHAR (%x21 / %x23-5B / %x5D-7E); anything else is not sent back.
  if (nonce === null || !/^[\x21\x23-\x5B\x5D-\x7E]{1,1024}$/.test(nonce)) return
  const origin = new URL(url).origin
  state.nonces.delete(origin)
  if (state.nonces.size >= MAX_NONCES) state.nonces.delete(state.nonces.keys().next().value!)
  state.nonces.set(origin, nonce)
}

/** RFC 9449 §9: a 401 whose DPoP challenge says `error="use_dpop_nonce"`: send again with the nonce it carries. */
export function useDpopNonceChallenge(response: Response): boolean {
  if (response.status !== 401 || !response.headers.has('dpop-nonce')) return false
  const header = response.headers.get('www-authenticate')
  return header !== null && /(^|,)\s*DPoP\b[^]*?\berror\s*=\s*"?use_dpop_nonce"?/i.test(header)
}

/**
 * The `cnf.jkt` (RFC 9449 §6.1) a JWT access token names, read without
 * verifying it (only to tell whether a proof of this client's key should
 * come with it); undefined for anything else.
 */
export function boundJktOf(token: string): string | undefined {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1]!.length > 64 * 1024) return undefined
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { cnf?: { jkt?: unknown } } | null
    const jkt = claims?.cnf?.jkt
    return typeof jkt === 'string' ? jkt : undefined
  } catch {
    return undefined
  }
}
