import { sign } from 'node:crypto'
import { promisify } from 'node:util'
import type { MandateClaims } from '../core/claims.js'
import type { SigningKey, SigningKeys } from './keys.js'
import type { TokenMinter } from './port.js'

/**
 * Returns a function that signs claims as a compact JWS through a one-shot
 * node:crypto call on a key imported at start. `key` is a key, or a function
 * read at every signature (the key ring's `current`, which a rotation moves);
 * each key's header is encoded once. Signing runs on libuv's thread pool,
 * off the event loop.
 */
export function createJwtSigner(key: SigningKey | (() => SigningKey), typ: string): (claims: object) => Promise<string> {
  const keyOf = typeof key === 'function' ? key : () => key
  let last: { key: SigningKey; header: string; options: { key: SigningKey['privateKey']; dsaEncoding: 'ieee-p1363' } } | undefined
  return async (claims) => {
    const k = keyOf()
    if (last?.key !== k) {
      last = {
        key: k,
        header: Buffer.from(JSON.stringify({ alg: k.alg, typ, kid: k.kid })).toString('base64url'),
        options: { key: k.privateKey, dsaEncoding: 'ieee-p1363' },
      }
    }
    const { header, options } = last
    const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`
    const signature = await signAsync('sha256', Buffer.from(input), options)
    return `${input}.${signature.toString('base64url')}`
  }
}

const signAsync = promisify(sign)

/** Signs RFC 9068 JWT access tokens (`typ: at+jwt`) with the key current at each signature. */
export function createTokenMinter(keys: SigningKeys): TokenMinter {
  const signJwt = createJwtSigner(() => keys.current, 'at+jwt')
  return { mint: (claims: MandateClaims) => signJwt(claims) }
}
