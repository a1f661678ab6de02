import { sign } from 'node:crypto'
import { promisify } from 'node:util'
import type { MandateClaims } from '../core/claims.js'
import type { SigningKey, SigningKeys } from './keys.js'
import type { TokenMinter } from './port.js'

/**
 * Returns a function that signs claims as a compact JWS with `key`, through
 * a one-shot node:crypto call on the key imported at start. The header is
 * encoded once. Signing runs on libuv's thread pool, off the event loop.
 */
export function createJwtSigner(key: SigningKey, typ: string): (claims: object) => Promise<string> {
  const header = Buffer.from(JSON.stringify({ alg: key.alg, typ, kid: key.kid })).toString('base64url')
  const options = { key: key.privateKey, dsaEncoding: 'ieee-p1363' } as const
  return async (claims) => {
    const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`
    const signature = await signAsync('sha256', Buffer.from(input), options)
    return `${input}.${signature.toString('base64url')}`
  }
}

const signAsync = promisify(sign)

/** Signs RFC 9068 JWT access tokens (`typ: at+jwt`) with the current key. */
export function createTokenMinter(keys: SigningKeys): TokenMinter {
  const signJwt = createJwtSigner(keys.current, 'at+jwt')
  return { mint: (claims: MandateClaims) => signJwt(claims) }
}
