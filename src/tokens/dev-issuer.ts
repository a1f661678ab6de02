import { randomUUID } from 'node:crypto'
import type { JSONWebKeySet } from 'jose'
import { generateSigningJwk, signingKeysFromJwks } from './keys.js'
import { createJwtSigner } from './mint.js'
import type { TrustedIssuer } from './upstream.js'

/** Issuer identifier of the built-in dev user issuer; `.invalid` (RFC 2606) so it can never be a real host. */
export const DEV_USER_ISSUER = 'https://users.dev.mandate.invalid'

export interface DevUserIssuer {
  readonly trusted: TrustedIssuer
  readonly jwks: JSONWebKeySet
  /** A user access token (RFC 9068 shape) whose audience is the broker. */
  issue(sub: string, options: { scope?: string; groups?: readonly string[] }, now: number): Promise<string>
}

const USER_TOKEN_TTL = 3600

/**
 * A stand-in for the company IdP, for `--dev` only: its key lives in memory
 * and is trusted for user subjects through a local key set, never fetched.
 */
export async function createDevUserIssuer(brokerIssuer: string): Promise<DevUserIssuer> {
  const keys = await signingKeysFromJwks({ keys: [await generateSigningJwk()] })
  const signJwt = createJwtSigner(keys.current, 'at+jwt')
  return {
    trusted: { issuer: DEV_USER_ISSUER, jwksUri: undefined, algorithms: ['ES256'], audience: brokerIssuer, typ: ['at+jwt'] },
    jwks: { keys: [...keys.jwks.keys] },
    issue(sub, options, now) {
      const claims = {
        iss: DEV_USER_ISSUER,
        sub,
        aud: brokerIssuer,
        client_id: 'dev-login',
        iat: now,
        exp: now + USER_TOKEN_TTL,
        jti: randomUUID(),
        ...(options.scope === undefined ? {} : { scope: options.scope }),
        ...(options.groups === undefined ? {} : { groups: options.groups }),
      }
      return signJwt(claims)
    },
  }
}
