/**
 * How a resource server proves who it is to the broker: the identity its
 * `resource_servers` entry in the broker's config holds. Never an admin key:
 * a resource server needs the revocation list, not the delegation log.
 */
import { SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose'
import { ASYMMETRIC_ALGORITHMS, type AsymmetricAlgorithm } from './claims.js'
import type { FeedRequest } from './feed.js'

/**
 * A resource server's credentials: `clientSecret` (HTTP Basic, RFC 6749
 * §2.3.1) or `privateKey` and its `alg` (a client assertion, RFC 7523,
 * signed afresh for every connection, `aud` the broker's issuer, 60 s).
 * `clientId` is its `rs/…` id.
 */
export type Credentials =
  | { readonly clientId: string; readonly clientSecret: string }
  | { readonly clientId: string; readonly privateKey: CryptoKey | KeyObject | JWK; readonly alg: AsymmetricAlgorithm; readonly kid?: string }

const CLIENT_ASSERTION_TYPE_JWT = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
/** Seconds a client assertion is valid: one connection's worth. */
const ASSERTION_LIFETIME = 60

/** RFC 6749 §2.3.1: the id and the secret are form-urlencoded, then Basic-encoded. */
export function basicAuthorization(id: string, secret: string): string {
  const encode = (v: string) => new URLSearchParams({ v }).toString().slice(2)
  // Form-urlencoding leaves only ASCII, which btoa takes as is.
  return `Basic ${btoa(`${encode(id)}:${encode(secret)}`)}`
}

/**
 * Checks `credentials` (a `TypeError` naming the field when malformed) and
 * returns what opens one connection: a GET with Basic, or a POST whose form
 * body carries a fresh client assertion (RFC 7521 §4.2).
 */
export function credentialRequest(credentials: Credentials, issuer: string, clock: () => number): () => Promise<FeedRequest> {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- a public API: JavaScript callers are not type-checked
  if (typeof credentials !== 'object' || credentials === null)
    throw new TypeError('credentials are required: { clientId, clientSecret } or { clientId, privateKey, alg }')
  if ('adminKey' in credentials) throw new TypeError('credentials: an admin key is not a resource server identity; use the resource_servers entry')
  const { clientId } = credentials
  if (typeof clientId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(clientId)) throw new TypeError('credentials.clientId is malformed')
  if ('clientSecret' in credentials) {
    const secret = credentials.clientSecret
    if (typeof secret !== 'string' || secret === '' || secret.length > 512) throw new TypeError('credentials.clientSecret is malformed')
    const authorization = basicAuthorization(clientId, secret)
    return () => Promise.resolve({ method: 'GET', headers: { authorization } })
  }
  const { privateKey, alg, kid } = credentials
  if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)) throw new TypeError('credentials.alg must be an asymmetric JWS algorithm')
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- a public API: JavaScript callers are not type-checked
  if (typeof privateKey !== 'object' || privateKey === null) throw new TypeError('credentials need clientSecret or privateKey')
  if (kid !== undefined && (typeof kid !== 'string' || kid === '')) throw new TypeError('credentials.kid is malformed')
  return async () => {
    const now = Math.floor(clock() / 1000)
    // RFC 7523 §3 with its update: aud is the issuer identifier alone; a jti the broker spends once.
    const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: issuer, jti: crypto.randomUUID(), iat: now, exp: now + ASSERTION_LIFETIME })
      .setProtectedHeader({ alg, typ: 'client-authentication+jwt', ...(kid === undefined ? {} : { kid }) })
      .sign(privateKey)
    const body = new URLSearchParams({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: assertion })
    return { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: body.toString() }
  }
}
