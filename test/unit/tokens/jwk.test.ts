/**
 * Which public keys Mandate verifies with: RSA 2048-4096 bits with e = 65537,
 * EC on P-256/P-384/P-521, Ed25519/Ed448; everything else refused with a
 * reason that holds no key material.
 */
import { generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { importPublicJwk, KeyRefused } from '../../../src/tokens/jwk.js'

const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' })
const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' })

/** The reason `jwk` is refused; fails when it is accepted. */
function refusal(jwk: unknown): string {
  try {
    importPublicJwk(jwk)
  } catch (err) {
    expect(err).toBeInstanceOf(KeyRefused)
    const reason = (err as Error).message
    // The reason never echoes key values.
    for (const v of Object.values((jwk ?? {}) as Record<string, unknown>)) {
      if (typeof v === 'string' && v.length > 8) expect(reason).not.toContain(v)
    }
    return reason
  }
  throw new Error('expected the key to be refused')
}

/** A syntactically fine RSA modulus of `bits` bits (top bit set, odd): createPublicKey does not test primality. */
const modulus = (bits: number) => {
  const n = Buffer.alloc(bits / 8, 0xa5)
  n[0] = 0xc5
  n[n.length - 1] = 0xa7
  return n.toString('base64url')
}

describe('importPublicJwk', () => {
  it.each([
    ['RSA 2048', rsa2048],
    ['RSA 3072', generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey.export({ format: 'jwk' })],
    ['RSA 4096 (largest accepted)', { kty: 'RSA', n: modulus(4096), e: 'AQAB' }],
    ['EC P-256', p256.publicKey.export({ format: 'jwk' })],
    ['EC P-384', generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' })],
    ['EC P-521', generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey.export({ format: 'jwk' })],
    ['Ed25519', generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' })],
    ['Ed448', generateKeyPairSync('ed448').publicKey.export({ format: 'jwk' })],
    ['with kid, alg and use', { ...p256.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256', use: 'sig' }],
  ])('accepts %s', (_name, jwk) => {
    expect(importPublicJwk(jwk).type).toBe('public')
  })

  it.each<[string, unknown, RegExp]>([
    ['RSA 1024', generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }), /1024 bits/],
    ['RSA 2040 (just under)', { kty: 'RSA', n: modulus(2040), e: 'AQAB' }, /2040 bits/],
    ['RSA 8192', { kty: 'RSA', n: modulus(8192), e: 'AQAB' }, /8192 bits/],
    ['RSA e = 3', { ...rsa2048, e: 'Aw' }, /exponent/],
    ['RSA e = 1', { ...rsa2048, e: 'AQ' }, /exponent/],
    ['RSA e = 65537 with a leading zero octet (not minimal)', { ...rsa2048, e: 'AAEAAQ' }, /exponent/],
    ['RSA e empty', { ...rsa2048, e: '' }, /malformed e/],
    ['RSA e missing', { kty: 'RSA', n: rsa2048.n }, /malformed e/],
    ['RSA n not base64url', { ...rsa2048, n: `${rsa2048.n!.slice(0, -2)}+/` }, /malformed n/],
    ['EC secp256k1', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ format: 'jwk' }), /curve/],
    ['EC point off the curve', { ...p256.publicKey.export({ format: 'jwk' }), y: p256.publicKey.export({ format: 'jwk' }).x }, /not a valid key/],
    ['EC without y', { kty: 'EC', crv: 'P-256', x: p256.publicKey.export({ format: 'jwk' }).x }, /malformed y/],
    ['X25519 (key agreement, not signatures)', generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }), /x25519/],
    ['a private EC key', p256.privateKey.export({ format: 'jwk' }), /private/],
    ['a symmetric key', { kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQ' }, /private or symmetric/],
    ['an unknown kty', { kty: 'DSA', y: 'AQAB' }, /kty/],
    ['no kty', { n: rsa2048.n, e: 'AQAB' }, /kty/],
    ['kty naming an Object.prototype member', { kty: 'constructor', n: rsa2048.n, e: 'AQAB' }, /kty/],
    ['kty __proto__', { kty: '__proto__' }, /kty/],
    ['not an object', 'AQAB', /object/],
    ['null', null, /object/],
    ['an array', [rsa2048], /object/],
  ])('refuses %s', (_name, jwk, reason) => {
    expect(refusal(jwk as JsonWebKey)).toMatch(reason)
  })
})
