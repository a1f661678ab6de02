import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { ActClaim, MandateClaims } from '../core/claims.js'
import { OAuthError, SUBJECT_TOKEN_UNACCEPTABLE } from '../core/errors.js'
import { UpstreamUnavailable } from './fetch-limited.js'
import { checkClaims, checkHeader, decodeJws, JwtError, verifySignature } from './jws.js'
import type { SigningKeys } from './keys.js'
import type { SubjectVerifier, UserSubject, VerifiedSubject } from './port.js'
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
  /** Verified tokens kept until their `exp`, keyed by the token's SHA-256. */
  readonly cacheSize: number
}

const USER_REQUIRED = ['iss', 'sub', 'aud', 'exp', 'iat'] as const
/** Claims every Mandate access token carries (verifiers check presence before any value). */
export const MANDATE_REQUIRED = ['iss', 'sub', 'sub_id', 'aud', 'exp', 'iat', 'jti', 'client_id', 'act', 'scope'] as const
const MAX_ACT_DEPTH = 16

/**
 * Verifies `subject_token`s (DESIGN.md step 3). A successfully verified token
 * is cached until its `exp` under the SHA-256 of its exact bytes, so a second
 * exchange with the same user token skips the signature check but never the
 * expiry check; revocation is checked separately, on every exchange.
 */
export function createSubjectVerifier(options: SubjectVerifierOptions): SubjectVerifier {
  // Bounded by count and by bytes (each entry charged its token's length): never more than ~64 MiB.
  const cache =
    options.cacheSize > 0
      ? new LRUCache<string, VerifiedSubject>({ max: options.cacheSize, maxSize: 64 * 1024 * 1024 })
      : undefined
  const unacceptable = (detail: string) => new OAuthError('invalid_request', SUBJECT_TOKEN_UNACCEPTABLE, { detail })

  const expiryOf = (s: VerifiedSubject) => (s.kind === 'user' ? s.exp : s.claims.exp)

  async function verifyUncached(token: string, now: number): Promise<VerifiedSubject> {
    const decoded = decodeJws(token)
    const iss = unverifiedIssuer(decoded.payload)
    if (iss === options.selfIssuer) {
      return { kind: 'mandate', claims: await verifyOwnToken(decoded, options.selfIssuer, options.selfKeys, now, options.skew) }
    }
    const trusted = options.users.get(iss)
    if (trusted === undefined) throw new JwtError('issuer_not_trusted_for_subjects')
    const { payload } = await verifyDecodedJwt(decoded, {
      issuer: trusted.issuer,
      keys: trusted.keys,
      now,
      skew: options.skew,
      required: USER_REQUIRED,
    })
    // An ID token is no access token, whatever its typ says (OIDC Core §2).
    if ('nonce' in payload || 'at_hash' in payload) throw new JwtError('id_token_refused')
    return userSubject(iss, payload)
  }

  return {
    async verify(token) {
      const now = options.now()
      const cacheKey = createHash('sha256').update(token).digest('base64url')
      const hit = cache?.get(cacheKey)
      if (hit !== undefined) {
        if (now - options.skew >= expiryOf(hit)) {
          cache?.delete(cacheKey)
          throw unacceptable('expired')
        }
        return hit
      }
      try {
        const subject = await verifyUncached(token, now)
        cache?.set(cacheKey, subject, { size: token.length + 512 })
        return subject
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
  }
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
  if (Array.isArray(scp) && scp.every((s) => typeof s === 'string')) return new Set(scp as string[])
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

function isAct(value: unknown, depth: number): value is ActClaim {
  if (depth > MAX_ACT_DEPTH || typeof value !== 'object' || value === null) return false
  const { sub, act } = value as Record<string, unknown>
  return typeof sub === 'string' && (act === undefined || isAct(act, depth + 1))
}

/**
 * Shape checks on a token this broker signed, after its signature and
 * registered claims were checked; a mismatch means a bug or a forged key, so
 * it is refused. A `may_act` (tokens minted before it stopped being copied)
 * is accepted and never read. Throws `JwtError`.
 */
export function mandateClaims(payload: Record<string, unknown>): MandateClaims {
  const { aud, client_id, act, scope, chain, sub_id, sub } = payload
  if (typeof aud !== 'string' || typeof client_id !== 'string' || typeof scope !== 'string') {
    throw new JwtError('bad_mandate_claims')
  }
  const id = sub_id as Record<string, unknown> | null
  if (typeof id !== 'object' || id === null || id['format'] !== 'iss_sub' || typeof id['iss'] !== 'string' || id['sub'] !== sub) {
    throw new JwtError('bad_sub_id')
  }
  if (!isAct(act, 1)) throw new JwtError('bad_act')
  if (chain !== undefined && !(Array.isArray(chain) && chain.every((j) => typeof j === 'string'))) {
    throw new JwtError('bad_chain')
  }
  return payload as unknown as MandateClaims
}
