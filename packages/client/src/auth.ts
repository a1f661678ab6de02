/**
 * How the agent authenticates at the broker's token endpoint: one of the
 * three methods Mandate accepts (RFC 7523 `private_key_jwt`, RFC 6749
 * §2.3.1 `client_secret_basic`, or a workload identity token sent as
 * RFC 8693 `actor_token`). Each is a value made once and used for every
 * request.
 */
import type { webcrypto } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import * as oauth from 'oauth4webapi'
import { MandateClientError } from './errors.js'

/** JWS algorithms a private key may sign client assertions with. */
export type AssertionAlgorithm = 'ES256' | 'ES384' | 'ES512' | 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'EdDSA' | 'Ed25519'

/** Applies the method to one token request; `now` is epoch seconds of the client's clock. */
export type ApplyAuth = (now: number, signal: AbortSignal | undefined) => Promise<oauth.ClientAuth>

/** Where a `ClientAuth` keeps how it is applied: not part of the public API. */
export const APPLY: unique symbol = Symbol('mandate.client.auth.apply')

/** A client authentication method, from `privateKeyJwt`, `clientSecret` or `workloadIdentity`. */
export interface ClientAuth {
  readonly method: 'private_key_jwt' | 'client_secret_basic' | 'workload_identity'
  /** @internal */
  readonly [APPLY]: ApplyAuth
}

export interface PrivateKeyJwtOptions {
  /** The assertion's `alg`; by default the one the key implies (a JWK's `alg`, its curve, or its CryptoKey algorithm). Needed for an RSA JWK without `alg`. */
  readonly alg?: AssertionAlgorithm
  /** The assertion's `kid`: which key of the agent's policy signed it (default: the JWK's `kid`, else none). */
  readonly kid?: string
}

/** A private JSON Web Key (RFC 7517), as `mandate keys` or any JOSE library writes one. */
export type PrivateJwk = webcrypto.JsonWebKey & { readonly kid?: string }

/** Seconds an assertion is valid: the broker refuses one valid for more than 300 s; one minute covers a slow request. */
const ASSERTION_LIFETIME = 60

const SUBTLE_PARAMS: Record<AssertionAlgorithm, webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams | webcrypto.Algorithm> = {
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  ES384: { name: 'ECDSA', namedCurve: 'P-384' },
  ES512: { name: 'ECDSA', namedCurve: 'P-521' },
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  RS384: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-384' },
  RS512: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-512' },
  PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
  PS384: { name: 'RSA-PSS', hash: 'SHA-384' },
  PS512: { name: 'RSA-PSS', hash: 'SHA-512' },
  EdDSA: { name: 'Ed25519' },
  Ed25519: { name: 'Ed25519' },
}
const CURVE_ALG: Record<string, AssertionAlgorithm> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512', Ed25519: 'EdDSA' }

/** The JWS `alg` a CryptoKey signs with, as oauth4webapi will put it in the header; undefined for one it cannot sign with. */
function algorithmOf(key: oauth.CryptoKey): AssertionAlgorithm | undefined {
  const algorithm = key.algorithm as { name: string; namedCurve?: string; hash?: { name: string } }
  const bits = algorithm.hash?.name.replace('SHA-', '') ?? ''
  switch (algorithm.name) {
    case 'ECDSA':
      return CURVE_ALG[algorithm.namedCurve ?? '']
    case 'RSASSA-PKCS1-v1_5':
      return `RS${bits}` in SUBTLE_PARAMS ? (`RS${bits}` as AssertionAlgorithm) : undefined
    case 'RSA-PSS':
      return `PS${bits}` in SUBTLE_PARAMS ? (`PS${bits}` as AssertionAlgorithm) : undefined
    case 'Ed25519':
      return 'EdDSA'
    default:
      return undefined
  }
}

function sameAlgorithm(a: AssertionAlgorithm, b: AssertionAlgorithm): boolean {
  const norm = (x: AssertionAlgorithm) => (x === 'Ed25519' ? 'EdDSA' : x)
  return norm(a) === norm(b)
}

async function importJwk(jwk: PrivateJwk, alg: AssertionAlgorithm | undefined): Promise<oauth.CryptoKey> {
  if (typeof jwk.d !== 'string') throw new TypeError('privateKeyJwt: the JWK is not a private key (no "d")')
  const chosen = alg ?? (jwk.alg as AssertionAlgorithm | undefined) ?? CURVE_ALG[jwk.crv ?? '']
  if (chosen === undefined || !(chosen in SUBTLE_PARAMS)) throw new TypeError("privateKeyJwt: cannot tell the JWK's algorithm; pass { alg }")
  // The key is imported for this one use: not extractable, sign only.
  const { alg: _ignored, key_ops: _ops, ...rest } = jwk
  return crypto.subtle.importKey('jwk', rest, SUBTLE_PARAMS[chosen], false, ['sign'])
}

/**
 * `private_key_jwt` (RFC 7523 §2.2, RFC 7521 §4.2): each request carries a
 * fresh assertion signed with `key`, `iss` = `sub` = the client id, `aud` the
 * broker's issuer identifier, a random `jti`, valid 60 s. `key` is a private
 * CryptoKey (with the `sign` usage) or a private JWK. Throws `TypeError` at
 * once for a public key or a key that does not match `alg`.
 */
export function privateKeyJwt(key: oauth.CryptoKey | PrivateJwk, options: PrivateKeyJwtOptions = {}): ClientAuth {
  let ready: Promise<oauth.CryptoKey>
  let kid = options.kid
  // The `alg` the agent's policy names for the key. Ed25519 signs the same under `EdDSA` (RFC 8037) and `Ed25519` (RFC 9864),
  // and the broker matches the header's name to the policy's: oauth4webapi writes `Ed25519`, so a key declared `EdDSA` says so.
  let headerAlg = options.alg
  if (key instanceof globalThis.CryptoKey) {
    if (key.type !== 'private' || !key.usages.includes('sign')) throw new TypeError('privateKeyJwt: the key must be a private key with the "sign" usage')
    const implied = algorithmOf(key)
    if (implied === undefined) throw new TypeError('privateKeyJwt: the key cannot sign JWS (ECDSA, RSA or Ed25519 only)')
    if (options.alg !== undefined && !sameAlgorithm(options.alg, implied)) throw new TypeError(`privateKeyJwt: the key signs ${implied}, not ${options.alg}`)
    ready = Promise.resolve(key)
  } else {
    const jwk = key
    kid ??= jwk.kid
    headerAlg ??= jwk.alg as AssertionAlgorithm | undefined
    ready = importJwk(jwk, options.alg)
    // Surfaces on first use; not an unhandled rejection meanwhile.
    ready.catch(() => {})
  }
  return {
    method: 'private_key_jwt',
    [APPLY]: async (now) => {
      const privateKey = await ready
      return oauth.PrivateKeyJwt(kid === undefined ? { key: privateKey } : { key: privateKey, kid }, {
        // The client's clock, not the machine's, sets the assertion's times (an injected clock in tests, a corrected one in production).
        [oauth.modifyAssertion]: (header, payload) => {
          if (headerAlg !== undefined) header['alg'] = headerAlg
          payload['iat'] = now
          payload['nbf'] = now
          payload['exp'] = now + ASSERTION_LIFETIME
        },
      })
    },
  }
}

/**
 * `client_secret_basic` (RFC 6749 §2.3.1): the client id and `secret` in an
 * `Authorization: Basic` header, each form-urlencoded first. The secret is
 * what `mandate policy secret` printed.
 */
export function clientSecret(secret: string): ClientAuth {
  if (typeof secret !== 'string' || secret === '') throw new TypeError('clientSecret: the secret must be a non-empty string')
  const auth = oauth.ClientSecretBasic(secret)
  return { method: 'client_secret_basic', [APPLY]: () => Promise.resolve(auth) }
}

/** Where a workload identity token comes from: a file path (a projected service-account token), or a function that returns the token. */
export type WorkloadTokenSource = string | URL | ((signal: AbortSignal | undefined) => string | Promise<string>)

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
/** A workload token is a few KiB; anything much larger is the wrong file. */
const MAX_WORKLOAD_TOKEN = 64 * 1024
/** RFC 8693 §3: the workload token is a JWT. */
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt'

/**
 * A workload identity (a Kubernetes projected service-account token, a
 * SPIFFE JWT-SVID, a cloud instance identity token) as the agent's whole
 * client authentication: the broker takes it as RFC 8693 `actor_token`
 * (`actor_token_type` …:jwt) from an issuer in its `trust.workloads`, and
 * finds the agent whose policy names the token's `sub`. No static secret.
 *
 * The file is read again for every request (never cached), so a token the
 * platform rotated in place is used as soon as it is written. A token that
 * is not a compact JWS is refused before anything is sent
 * (`MandateClientError` `invalid_client`, without the token's text).
 */
export function workloadIdentity(source: WorkloadTokenSource): ClientAuth {
  const read =
    typeof source === 'function'
      ? source
      : (signal: AbortSignal | undefined) => readFile(source, { encoding: 'utf8', ...(signal === undefined ? {} : { signal }) })
  return {
    method: 'workload_identity',
    [APPLY]: async (_now, signal) => {
      const token = (await read(signal)).trim()
      if (token.length > MAX_WORKLOAD_TOKEN || !COMPACT_JWS.test(token)) {
        throw new MandateClientError('invalid_client', 'the workload identity token is not a compact JWT')
      }
      return (_as, client, body) => {
        body.set('client_id', client.client_id)
        body.set('actor_token', token)
        body.set('actor_token_type', JWT_TOKEN_TYPE)
      }
    },
  }
}
