import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { calculateJwkThumbprint, type JWK } from 'jose'

/**
 * Mandate signs with ES256: the fastest signature on this hardware through
 * node:crypto (about 1.35x EdDSA for signing, 1.6x for verifying) and the
 * JOSE algorithm every resource-server library supports.
 */
export const SIGNING_ALG = 'ES256'

export interface SigningKey {
  readonly kid: string
  readonly alg: typeof SIGNING_ALG
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  readonly publicJwk: JWK
}

/** The broker's signing keys: one signs, all verify and are published. */
export interface SigningKeys {
  readonly current: SigningKey
  readonly all: readonly SigningKey[]
  /** RFC 7517 JWK Set of the public keys, as served at /.well-known/jwks.json. */
  readonly jwks: { readonly keys: readonly JWK[] }
  byKid(kid: string): SigningKey | undefined
}

async function toSigningKey(privateJwk: JWK): Promise<SigningKey> {
  if (privateJwk.kty !== 'EC' || privateJwk.crv !== 'P-256' || typeof privateJwk.d !== 'string') {
    throw new TypeError('signing keys must be EC P-256 private JWKs (ES256)')
  }
  const privateKey = createPrivateKey({ key: privateJwk as import('node:crypto').JsonWebKey, format: 'jwk' })
  const publicKey = createPublicKey(privateKey)
  const { kty, crv, x, y } = privateJwk
  const thumbprint = await calculateJwkThumbprint({ kty, crv, x, y } as JWK)
  const kid = privateJwk.kid ?? thumbprint
  const publicJwk: JWK = { kty, crv, x, y, kid, alg: SIGNING_ALG, use: 'sig' } as JWK
  return { kid, alg: SIGNING_ALG, privateKey, publicKey, publicJwk }
}

/** Builds the key set from private JWKs; the first key signs. */
export async function signingKeysFromJwks(jwks: { keys: readonly JWK[] }): Promise<SigningKeys> {
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) throw new TypeError('signing key set is empty')
  const all = await Promise.all(jwks.keys.map(toSigningKey))
  const current = all[0] as SigningKey
  const byKid = new Map(all.map((k) => [k.kid, k]))
  if (byKid.size !== all.length) throw new TypeError('signing keys must have distinct kids')
  return { current, all, jwks: { keys: all.map((k) => k.publicJwk) }, byKid: (kid) => byKid.get(kid) }
}

/** A new ES256 private JWK with its RFC 7638 thumbprint as `kid`. */
export async function generateSigningJwk(): Promise<JWK> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = privateKey.export({ format: 'jwk' }) as JWK
  const kid = await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK)
  return { ...jwk, kid, alg: SIGNING_ALG, use: 'sig' }
}

/**
 * Loads the private JWK set from `file`. When the file does not exist and
 * `generateIfMissing` is set (embedded default), creates it once, readable by
 * this user only.
 */
export async function loadSigningKeys(file: string, generateIfMissing: boolean): Promise<SigningKeys> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !generateIfMissing) {
      throw new TypeError(`cannot read signing keys from ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
    }
    const jwks = { keys: [await generateSigningJwk()] }
    await mkdir(dirname(file), { recursive: true, mode: 0o700 })
    await writeFile(file, JSON.stringify(jwks, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
    return signingKeysFromJwks(jwks)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new TypeError(`signing keys in ${file} are not JSON`)
  }
  return signingKeysFromJwks(parsed as { keys: JWK[] })
}
