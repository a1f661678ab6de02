/**
 * Reading and making the JWTs tests pass around: the `jti` of a token the
 * broker issued, a user's access token as an identity provider would issue
 * it (RFC 9068), and a client assertion (RFC 7523). One builder, so that a
 * test names only the claims it is about.
 */
import { randomUUID, type KeyObject } from 'node:crypto'
import { CompactSign, decodeJwt, SignJWT, type CryptoKey, type JWTPayload } from 'jose'

/** The payload of a compact JWS, not verified (the tests read tokens they were just given). */
export function payloadOf(token: string): JWTPayload {
  return decodeJwt(token)
}

/** The `jti` of a compact JWS, not verified; throws when it has none. */
export function jtiOf(token: string): string {
  const { jti } = decodeJwt(token)
  if (typeof jti !== 'string') throw new Error('token without jti')
  return jti
}

/** A private key and how to use it. */
export interface TestSigner {
  readonly privateKey: CryptoKey | KeyObject | Uint8Array
  readonly alg: string
  /** Put in the protected header when given. */
  readonly kid?: string
}

export interface SignOptions {
  /** The header's `typ`; none when absent or null. */
  readonly typ?: string | null
  /** Merged over `{ alg, kid, typ }`: a test may replace any of them. */
  readonly header?: Record<string, unknown>
}

/** Signs `claims` exactly as given (no defaults). */
export function signToken(signer: TestSigner, claims: JWTPayload, options: SignOptions = {}): Promise<string> {
  const header = {
    alg: signer.alg,
    ...(signer.kid === undefined ? {} : { kid: signer.kid }),
    ...(options.typ === undefined || options.typ === null ? {} : { typ: options.typ }),
    ...options.header,
  }
  return new SignJWT(claims).setProtectedHeader(header).sign(signer.privateKey)
}

export interface TimedOptions extends SignOptions {
  /** Epoch seconds of `iat`; default now. */
  readonly now?: number
  /** Seconds from `iat` to `exp`. */
  readonly lifetime?: number
}

const nowSeconds = () => Math.floor(Date.now() / 1000)

/**
 * A user's access token from an identity provider (RFC 9068: `typ` at+jwt):
 * `scope` read, issued now, 600 s long. `claims` go over those defaults.
 */
export function userAccessToken(signer: TestSigner, claims: JWTPayload, options: TimedOptions = {}): Promise<string> {
  const iat = options.now ?? nowSeconds()
  return signToken(signer, { scope: 'read', iat, exp: iat + (options.lifetime ?? 600), ...claims }, { typ: 'at+jwt', ...options })
}

/**
 * An RFC 7523 client assertion (§3): `iss` = `sub` = the client, `aud` the
 * broker, a fresh `jti`, issued now, 60 s long, no `typ`. `claims` go over
 * those defaults.
 */
export function clientAssertion(signer: TestSigner, claims: JWTPayload & { readonly client: string }, options: TimedOptions = {}): Promise<string> {
  const iat = options.now ?? nowSeconds()
  const { client, ...rest } = claims
  return signToken(signer, { iss: client, sub: client, jti: randomUUID(), iat, exp: iat + (options.lifetime ?? 60), ...rest }, options)
}

/** What the test broker's issuer, user and audience are (test/support/broker.ts), for `brokerToken`. */
export interface BrokerNames {
  readonly issuer: string
  readonly userIssuer: string
  readonly audience: string
}

/**
 * A token as the test broker mints one (RFC 9068, `typ` at+jwt), signed with
 * the broker's own key: alice of the user issuer, held by `secret-agent`,
 * scope `read`, 300 s from `now`. `claims` go over those defaults (an
 * undefined one is dropped when serialized), `header` over the header; `raw`
 * may rewrite the JSON text before it is signed. Resource-server tests use it
 * for tokens no exchange would give (a `cnf` of any key, a bad claim).
 */
export function brokerToken(
  names: BrokerNames,
  key: { readonly kid: string; readonly privateKey: KeyObject },
  now: number,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
  raw?: (json: string) => string,
): Promise<string> {
  const payload = {
    iss: names.issuer,
    sub: 'alice',
    sub_id: { format: 'iss_sub', iss: names.userIssuer, sub: 'alice' },
    aud: names.audience,
    client_id: 'secret-agent',
    act: { sub: 'secret-agent' },
    scope: 'read',
    iat: now,
    nbf: now,
    exp: now + 300,
    jti: randomUUID(),
    ...claims,
  }
  const json = JSON.stringify(payload)
  return new CompactSign(new TextEncoder().encode(raw === undefined ? json : raw(json)))
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: key.kid, ...header })
    .sign(key.privateKey)
}
