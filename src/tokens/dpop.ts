/**
 * DPoP proofs at the token endpoint (RFC 9449 §4.3, §5): the checks are
 * `@mandate/verifier/dpop`'s, so that the broker and every resource server
 * judge a proof alike; here they get the token endpoint's URI, the config's
 * window and algorithms, and nonces keyed by the signing keys.
 */
import { hkdfSync } from 'node:crypto'
import { createDpopNonces, DpopError, verifyDpopProof, type DpopNonces } from '@mandate/verifier/dpop'
import { proofUse } from '../core/dpop.js'
import { DPOP_PROOF_INVALID, OAuthError } from '../core/errors.js'
import type { SigningKeys } from './keys.js'
import type { CheckedProof, DpopProofVerifier } from './port.js'

export interface DpopProofVerifierOptions {
  /** The token endpoint's URI, as the metadata names it: every proof's `htu`. */
  readonly tokenEndpoint: string
  /** Epoch seconds. */
  readonly now: () => number
  readonly maxAgeSeconds: number
  readonly clockSkewSeconds: number
  readonly algorithms: readonly string[]
  /** Present when proofs must carry a nonce the broker gave. */
  readonly nonces?: DpopNonces
}

/**
 * The broker's nonces: keyed by every signing key (HKDF of its private
 * scalar), made with the current one and accepted under any, so instances
 * sharing the keys file accept each other's nonces and a key rotation
 * invalidates none still in their window. Read at each call: a rotated
 * ring is picked up as it is.
 */
export function signingKeyNonces(keys: SigningKeys, windowSeconds: number, now: () => number): DpopNonces {
  const secretOf = new WeakMap<object, Uint8Array>()
  const secret = (key: SigningKeys['current']): Uint8Array => {
    let s = secretOf.get(key)
    if (s === undefined) {
      const d = (key.privateKey.export({ format: 'jwk' }) as { d: string }).d
      s = new Uint8Array(hkdfSync('sha256', Buffer.from(d, 'base64url'), 'mandate-dpop-nonce', `mandate dpop nonce ${key.kid}`, 32))
      secretOf.set(key, s)
    }
    return s
  }
  const nonces = () => createDpopNonces({ secrets: [secret(keys.current), ...keys.all.filter((k) => k !== keys.current).map(secret)], windowSeconds, now })
  let cached: { current: SigningKeys['current']; all: SigningKeys['all']; nonces: DpopNonces } | undefined
  const current = (): DpopNonces => {
    if (cached?.current !== keys.current || cached.all !== keys.all) cached = { current: keys.current, all: keys.all, nonces: nonces() }
    return cached.nonces
  }
  return { current: () => current().current(), accepts: (nonce) => current().accepts(nonce) }
}

export function createDpopProofVerifier(options: DpopProofVerifierOptions): DpopProofVerifier {
  const { tokenEndpoint, now, nonces } = options
  return {
    algorithms: options.algorithms,
    nonce: () => nonces?.current(),
    async check(proof, accessToken): Promise<CheckedProof> {
      try {
        const checked = await verifyDpopProof(proof, {
          method: 'POST',
          url: tokenEndpoint,
          now: now(),
          maxAgeSeconds: options.maxAgeSeconds,
          clockSkewSeconds: options.clockSkewSeconds,
          algorithms: options.algorithms,
          ...(accessToken === undefined ? {} : { accessToken }),
          ...(nonces === undefined ? {} : { nonces }),
        })
        return {
          jkt: checked.jkt,
          use: proofUse(`#dpop:${checked.jkt}#${checked.jti}`, checked, options.clockSkewSeconds),
        }
      } catch (err) {
        if (!(err instanceof DpopError)) throw err
        throw err.code === 'use_dpop_nonce'
          ? new OAuthError('use_dpop_nonce', 'a DPoP nonce from the server is required: retry with the nonce in DPoP-Nonce', { detail: `dpop: ${err.detail}` })
          : new OAuthError('invalid_dpop_proof', DPOP_PROOF_INVALID, { detail: `dpop: ${err.detail}` })
      }
    },
  }
}
