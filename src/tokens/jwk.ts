import { createPublicKey, type KeyObject } from 'node:crypto'

/**
 * The public keys Mandate verifies with, wherever they come from (an
 * issuer's JWKS, an agent's policy file): RSA of 2048 to 4096 bits with the
 * public exponent 65537, EC on P-256, P-384 or P-521, and Ed25519 or Ed448.
 * Anything else is refused with a reason that names no key material.
 */
export class KeyRefused extends Error {
  override readonly name = 'KeyRefused'
}

/** Members only a private or symmetric JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']
/** Members holding key values, each a base64url string (RFC 7518 §6.2.1, §6.3.1; RFC 8037 §2). */
const VALUE_MEMBERS: ReadonlyMap<unknown, readonly string[]> = new Map([
  ['RSA', ['n', 'e']],
  ['EC', ['x', 'y']],
  ['OKP', ['x']],
])
const B64URL = /^[A-Za-z0-9_-]+$/
const CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1'])
const MIN_RSA_BITS = 2048
const MAX_RSA_BITS = 4096

/** Why `key` is not one Mandate verifies with, or undefined when it is. */
function keyWeakness(key: KeyObject): string | undefined {
  if (key.type !== 'public') return 'not a public key'
  const details = key.asymmetricKeyDetails
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss': {
      const bits = details?.modulusLength ?? 0
      if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) return `RSA modulus of ${bits} bits (${MIN_RSA_BITS}-${MAX_RSA_BITS} accepted)`
      // A small exponent (3, or 1) is the classic weak RSA key; 65537 is what every issuer uses.
      if (details?.publicExponent !== 65537n) return 'RSA public exponent is not 65537'
      return undefined
    }
    case 'ec':
      return CURVES.has(details?.namedCurve ?? '') ? undefined : 'EC curve is not P-256, P-384 or P-521'
    case 'ed25519':
    case 'ed448':
      return undefined
    default:
      return `${key.asymmetricKeyType ?? 'unknown'} keys do not sign JWTs here`
  }
}

/**
 * Imports a public JWK with node:crypto and checks it: no private members,
 * well-formed values, then `keyWeakness`. Throws `KeyRefused`.
 */
export function importPublicJwk(jwk: unknown): KeyObject {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new KeyRefused('not a JSON object')
  const members = jwk as Record<string, unknown>
  if (PRIVATE_MEMBERS.some((m) => m in members)) throw new KeyRefused('holds private or symmetric key members')
  const values = VALUE_MEMBERS.get(members['kty'])
  if (values === undefined) throw new KeyRefused('kty is not RSA, EC or OKP')
  // node:crypto decodes base64url leniently; a value it would silently reinterpret is malformed.
  for (const m of values) if (typeof members[m] !== 'string' || !B64URL.test(members[m])) throw new KeyRefused(`malformed ${m}`)
  // RFC 7518 §2 Base64urlUInt: minimal octets, so 65537 has one spelling.
  if (members['kty'] === 'RSA' && members['e'] !== 'AQAB') throw new KeyRefused('RSA public exponent is not 65537')
  let key: KeyObject
  try {
    key = createPublicKey({ key: members, format: 'jwk' })
  } catch {
    throw new KeyRefused('not a valid key (bad curve point or members)')
  }
  const weakness = keyWeakness(key)
  if (weakness !== undefined) throw new KeyRefused(weakness)
  return key
}
