import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { MANDATE_REQUIRED, mandateClaimsProblem } from '@mandate/verifier/claims'
import type { MandateClaims } from '../core/claims.js'
import { OAuthError, SUBJECT_TOKEN_UNACCEPTABLE } from '../core/errors.js'
import { UpstreamUnavailable } from './fetch-limited.js'
import { checkClaims, checkHeader, decodeJws, JwtError, MAX_JWT_LENGTH, normalizeTyp, verifySignature, type JwsHeader } from './jws.js'
import type { SigningKeys } from './keys.js'
import type { MandateSubject, SubjectVerifier, UserSubject, VerifiedSubject } from './port.js'
import { unverifiedIssuer, verifyDecodedJwt, type IssuerRegistry } from './upstream.js'

export interface SubjectVerifierOptions {
  /** This broker's issuer: tokens it minted are accepted as subjects for re-delegation only. */
  readonly selfIssuer: string
  readonly selfKeys: SigningKeys
  /** Issuers trusted for user subjects, and no other role. */
  readonly users: IssuerRegistry
  /** Epoch seconds. */
  readonly now: () => number
  readonly skew: number
  /** Seconds: a user token whose `exp` is further ahead than this (plus the skew) is refused. */
  readonly maxAge: number
  /**
   * Verified tokens kept until their `exp`, keyed by the token's SHA-256:
   * subject tokens, and this broker's own tokens wherever they are verified
   * (`verifyOwn`: forward auth, introspection, revocation). 0: no cache.
   */
  readonly cacheSize: number
}

const USER_REQUIRED = ['iss', 'sub', 'aud', 'exp', 'iat'] as const

/** A verified token: its subject, when it may first be accepted, and a check that the key its signature was verified with is still held. */
interface Verified {
  readonly subject: VerifiedSubject
  /** The later of its `nbf` and `iat` (RFC 7519 §4.1.5, §4.1.6): accepted from `notBefore - skew` on. */
  readonly notBefore: number
  readonly keyStillTrusted: () => boolean | Promise<boolean>
}

const expiryOf = (s: VerifiedSubject) => (s.kind === 'user' ? s.exp : s.claims.exp)
const notBeforeOf = (payload: Record<string, unknown>) =>
  Math.max(0, ...(['nbf', 'iat'] as const).map((n) => (typeof payload[n] === 'number' ? payload[n] : 0)))

/**
 * Verifies `subject_token`s (RFC 8693 §2.1), and this broker's own tokens
 * for the routes that take them (`verifyOwn`). A successfully verified
 * token is cached until its `exp` under the SHA-256 of its exact bytes
 * (one cache for both: the same token is often exchanged, introspected and
 * checked by forward auth), so a later use skips the signature check but
 * never the lifetime checks, with the skew of that use, nor the check that
 * the key it was verified with is still held (the broker's key set, or its
 * issuer's current one: else it is verified afresh). A failure is never
 * cached. Revocation is checked separately, on every use.
 */
export function createSubjectVerifier(options: SubjectVerifierOptions): SubjectVerifier {
  // Long, not split: `verify` and `verifyOwn` share one digest-keyed cache and its rules for a hit (expiry, skew, key still held).
  // Bounded by count and by bytes (each entry charged its token's length): never more than ~64 MiB.
  // Keyed by the digest, not the token: the cache holds no bearer token, and its keys are 43 bytes whatever the token's size.
  const cache = options.cacheSize > 0 ? new LRUCache<string, Verified>({ max: options.cacheSize, maxSize: 64 * 1024 * 1024 }) : undefined
  const unacceptable = (detail: string) => new OAuthError('invalid_request', SUBJECT_TOKEN_UNACCEPTABLE, { detail })
  const keyOf = (token: string) => createHash('sha256').update(token).digest('base64url')

  /**
   * Whether `hit`, the cached verification of the token whose digest is
   * `key`, still holds at `now` with `skew`: false when its key is no longer
   * held (dropped then). Throws `JwtError` when it is expired or not yet
   * valid, as a fresh verification would. Called on a hit only, so that a
   * miss costs no extra promise.
   */
  async function stillHolds(hit: Verified, key: string, now: number, skew: number): Promise<boolean> {
    if (now - skew >= expiryOf(hit.subject)) {
      cache?.delete(key)
      throw new JwtError('expired')
    }
    // Verified earlier under another use's skew: judged again under this one's.
    if (hit.notBefore > now + skew) throw new JwtError('not_yet_valid')
    if (await hit.keyStillTrusted()) return true
    // The key left the set since: the token is judged afresh against the current one.
    cache?.delete(key)
    return false
  }

  const remember = (key: string, token: string, verified: Verified) => cache?.set(key, verified, { size: token.length + 512 })

  async function verifiedOwn(decoded: ReturnType<typeof decodeJws>, now: number, skew: number): Promise<Verified> {
    const claims = await verifyOwnToken(decoded, options.selfIssuer, options.selfKeys, now, skew)
    const kid = decoded.header.kid as string // verifyOwnToken refuses a token without one
    const signingKey = options.selfKeys.byKid(kid)
    return {
      subject: { kind: 'mandate', claims },
      notBefore: notBeforeOf(decoded.payload),
      // The very key object: a reloaded keys file with new material under the same kid does not vouch for it.
      keyStillTrusted: () => options.selfKeys.byKid(kid) === signingKey,
    }
  }

  async function verifyUncached(token: string, now: number): Promise<Verified> {
    const decoded = decodeJws(token)
    const iss = unverifiedIssuer(decoded.payload)
    if (iss === options.selfIssuer) return verifiedOwn(decoded, now, options.skew)
    const trusted = options.users.get(iss)
    if (trusted === undefined) throw new JwtError('issuer_not_trusted_for_subjects')
    const { header, payload, key } = await verifyDecodedJwt(decoded, {
      issuer: trusted.issuer,
      keys: trusted.keys,
      now,
      skew: options.skew,
      required: USER_REQUIRED,
      maxExpiresIn: options.maxAge,
    })
    const kind = subjectTokenKind(header, payload)
    if (kind !== 'access' && !(kind === 'id' && trusted.issuer.acceptIdTokens === true)) throw new JwtError(`${kind}_token_refused`)
    return { subject: userSubject(iss, payload), notBefore: notBeforeOf(payload), keyStillTrusted: () => trusted.keys.holds(key) }
  }

  return {
    async verify(token) {
      const now = options.now()
      const key = keyOf(token)
      try {
        const hit = cache?.get(key)
        if (hit !== undefined && (await stillHolds(hit, key, now, options.skew))) return hit.subject
        const verified = await verifyUncached(token, now)
        remember(key, token, verified)
        return verified.subject
      } catch (err) {
        if (err instanceof JwtError) throw unacceptable(err.code)
        if (err instanceof UpstreamUnavailable) {
          throw new OAuthError('temporarily_unavailable', 'subject token issuer keys unavailable; try again', {
            detail: err.message,
            retryAfter: 5,
          })
        }
        throw err
      }
    },

    async verifyOwn(token) {
      // As a client sent it, with no skew: the broker's own clock judges its own tokens.
      const now = options.now()
      try {
        // Anything longer is no token of ours (decodeJws refuses it): not worth a digest.
        if (token.length > MAX_JWT_LENGTH) return undefined
        const key = keyOf(token)
        const hit = cache?.get(key)
        if (hit !== undefined && (await stillHolds(hit, key, now, 0))) return hit.subject.kind === 'mandate' ? hit.subject.claims : undefined
        const verified = await verifiedOwn(decodeJws(token), now, 0)
        remember(key, token, verified)
        return (verified.subject as MandateSubject).claims
      } catch (err) {
        if (err instanceof JwtError) return undefined
        throw err
      }
    },
  }
}

/** What kind of token a verified upstream JWT is, by what issuers put in it. */
export type SubjectTokenKind = 'access' | 'id' | 'refresh' | 'security_event' | 'unknown'

// Maps, not object literals: a claim value such as "constructor" must find nothing.
/** Header `typ`s (normalized) of JWTs that are never access tokens, whatever the issuer's `typ` rule admits. */
const NON_ACCESS_TYP: ReadonlyMap<string, SubjectTokenKind> = new Map([
  ['secevent+jwt', 'security_event'], // RFC 8417 §2.3
  ['logout+jwt', 'security_event'], // OpenID Connect Back-Channel Logout 1.0 §2.4
  ['refresh+jwt', 'refresh'],
  // An authorization grant (draft-ietf-oauth-identity-assertion-authz-grant), redeemed only by the JWT bearer grant.
  ['oauth-id-jag+jwt', 'unknown'],
])
/** Payload claims some issuers name a token's kind with: Keycloak `typ`, Cognito `token_use`, ForgeRock `tokenName`, `token_type`. */
const KIND_CLAIMS = ['typ', 'token_use', 'tokenName', 'token_type'] as const
const KIND_VALUES: ReadonlyMap<string, SubjectTokenKind> = new Map([
  ['bearer', 'access'],
  ['access', 'access'],
  ['access_token', 'access'],
  ['at+jwt', 'access'],
  ['application/at+jwt', 'access'],
  ['id', 'id'],
  ['id_token', 'id'],
  ['refresh', 'refresh'],
  ['refresh_token', 'refresh'],
  ['offline', 'refresh'],
  ['logout', 'security_event'],
])
/** Claims only ID tokens carry (OIDC Core §2, §3.1.3.6, §3.3.2.11; FAPI 1.0 Advanced: `s_hash`). */
const ID_TOKEN_CLAIMS = ['nonce', 'at_hash', 'c_hash', 's_hash'] as const
/** When signals disagree, the kind furthest from an access token wins. */
const PRECEDENCE: readonly SubjectTokenKind[] = ['security_event', 'refresh', 'unknown', 'id', 'access']

/**
 * Classifies an upstream JWT (RFC 8725 §3.11, §3.12: kinds of JWT must not
 * be mistaken for one another): a Security Event Token has `events` (RFC
 * 8417 §2.2; logout tokens are SETs), an ID token has `nonce`, `at_hash`,
 * `c_hash` or `s_hash`, and a kind-naming claim or header `typ` says what it
 * says; a kind-naming claim with a value not known here is `unknown`.
 */
export function subjectTokenKind(header: JwsHeader, payload: Record<string, unknown>): SubjectTokenKind {
  const kinds = new Set<SubjectTokenKind>(['access'])
  const typ = typeof header.typ === 'string' ? NON_ACCESS_TYP.get(normalizeTyp(header.typ)) : undefined
  if (typ !== undefined) kinds.add(typ)
  if ('events' in payload) kinds.add('security_event')
  for (const name of ID_TOKEN_CLAIMS) if (name in payload) kinds.add('id')
  for (const name of KIND_CLAIMS) {
    const value = payload[name]
    if (value !== undefined) kinds.add((typeof value === 'string' ? KIND_VALUES.get(value.toLowerCase()) : undefined) ?? 'unknown')
  }
  return PRECEDENCE.find((k) => kinds.has(k)) ?? 'access'
}

/**
 * Verifies a token this broker minted: ES256 with one of its keys, `typ`
 * at+jwt, every Mandate claim present and well-formed, within its lifetime.
 * Throws `JwtError`.
 */
export async function verifyOwnToken(
  decoded: ReturnType<typeof decodeJws>,
  issuer: string,
  keys: SigningKeys,
  now: number,
  skew: number,
): Promise<MandateClaims> {
  const { header, payload } = decoded
  checkHeader(header, { algorithms: ['ES256'], typ: ['at+jwt'] })
  const key = header.kid === undefined ? undefined : keys.byKid(header.kid)
  if (key === undefined) throw new JwtError('unknown_kid')
  if (!(await verifySignature(header.alg, key.publicKey, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
  checkClaims(payload, { issuer, audience: undefined, now, skew, required: MANDATE_REQUIRED })
  return mandateClaims(payload)
}

function scopesOf(payload: Record<string, unknown>): Set<string> | undefined {
  const { scope, scp } = payload
  if (typeof scope === 'string') return new Set(scope.split(' ').filter((s) => s !== ''))
  if (Array.isArray(scp) && scp.every((s) => typeof s === 'string')) return new Set(scp)
  if (scope !== undefined || scp !== undefined) throw new JwtError('bad_scope')
  return undefined
}

function userSubject(issuer: string, payload: Record<string, unknown>): UserSubject {
  return {
    kind: 'user',
    issuer,
    sub: payload['sub'] as UserSubject['sub'],
    iat: payload['iat'] as number,
    exp: payload['exp'] as number,
    scopes: scopesOf(payload),
    claims: payload,
  }
}

/**
 * Shape checks on a token this broker signed, after its signature and
 * registered claims were checked; a mismatch means a bug or a forged key, so
 * it is refused. A `may_act` (tokens minted before it stopped being copied)
 * is accepted and never read. Throws `JwtError`.
 */
export function mandateClaims(payload: Record<string, unknown>): MandateClaims {
  const problem = mandateClaimsProblem(payload)
  if (problem !== undefined) throw new JwtError(problem)
  return payload as unknown as MandateClaims
}
