/**
 * Verification of Identity Assertion JWT Authorization Grants (ID-JAG,
 * draft-ietf-oauth-identity-assertion-authz-grant) from issuers trusted for
 * that role alone (`trust.id_jag`). An ID-JAG is neither an access token nor
 * an ID token: it has its own `typ` (RFC 8725 §3.11), and no other kind of
 * JWT from the same issuer passes here, nor an ID-JAG anywhere else.
 */
import type { AgentId, Subject } from '../core/claims.js'
import { ASSERTION_UNACCEPTABLE, OAuthError } from '../core/errors.js'
import { UpstreamUnavailable } from './fetch-limited.js'
import { decodeJws, JwtError } from './jws.js'
import type { IdJagVerifier, VerifiedIdJag } from './port.js'
import { unverifiedIssuer, verifyDecodedJwt, type IssuerRegistry } from './upstream.js'

/** The ID-JAG's JWS `typ` (the draft's media type registration), compared normalized (RFC 7515 §4.1.9). */
export const ID_JAG_TYP = 'oauth-id-jag+jwt'

/** The draft's required claims, all checked present and well-typed before any is compared. */
const REQUIRED = ['iss', 'sub', 'aud', 'client_id', 'jti', 'exp', 'iat'] as const

export interface IdJagVerifierOptions {
  /** Issuers trusted for ID-JAGs, and no other role; each carries its `maxLifetime`. */
  readonly issuers: IssuerRegistry
  /** Epoch seconds. */
  readonly now: () => number
  readonly skew: number
}

/** The ID-JAG's `resource`: one absolute URI or a non-empty array of them (RFC 8707 §2); undefined when absent. */
function resourcesOf(payload: Record<string, unknown>): string[] | undefined {
  const r = payload['resource']
  if (r === undefined) return undefined
  const list = typeof r === 'string' ? [r] : r
  if (!Array.isArray(list) || list.length === 0 || !list.every((u) => typeof u === 'string' && URL.canParse(u))) throw new JwtError('bad_resource')
  return list as string[]
}

/** The ID-JAG's `scope` (RFC 6749 §3.3 syntax); undefined when absent. */
function scopesOf(payload: Record<string, unknown>): Set<string> | undefined {
  const s = payload['scope']
  if (s === undefined) return undefined
  if (typeof s !== 'string' || !/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/.test(s)) throw new JwtError('bad_scope')
  return new Set(s.split(' '))
}

/**
 * Checks, in order: compact JWS within limits; `iss` trusted for ID-JAGs;
 * header (`alg` allowed for the issuer, `typ` exactly `oauth-id-jag+jwt`, no
 * keys in the header); the signature with the issuer's keys; every required
 * claim present and well-typed; `aud` this broker; `exp` not past and no
 * further ahead than the issuer's `max_lifetime_seconds`, nor `exp − iat`
 * longer; `iat` not in the future (skew); `client_id` the authenticated
 * agent; then `resource` and `scope` well-formed.
 */
export function createIdJagVerifier(options: IdJagVerifierOptions): IdJagVerifier {
  async function check(assertion: string, agent: AgentId, now: number): Promise<VerifiedIdJag> {
    const decoded = decodeJws(assertion)
    const trusted = options.issuers.get(unverifiedIssuer(decoded.payload))
    if (trusted === undefined) throw new JwtError('issuer_not_trusted_for_id_jag')
    const maxLifetime = trusted.issuer.maxLifetime
    if (maxLifetime === undefined) throw new TypeError(`ID-JAG issuer ${trusted.issuer.issuer} has no max lifetime`)
    const { payload } = await verifyDecodedJwt(decoded, {
      issuer: trusted.issuer,
      keys: trusted.keys,
      now,
      skew: options.skew,
      required: REQUIRED,
      maxExpiresIn: maxLifetime,
    })
    const exp = payload['exp'] as number
    const iat = payload['iat'] as number
    if (exp - iat > maxLifetime) throw new JwtError('lifetime_too_long')
    const clientId = payload['client_id']
    if (typeof clientId !== 'string') throw new JwtError('bad_client_id')
    // The draft: the ID-JAG was issued to this client, and only it may redeem it.
    if (clientId !== agent) throw new JwtError('wrong_client_id')
    const iss = trusted.issuer.issuer
    const jti = payload['jti'] as string
    return {
      user: { kind: 'user', issuer: iss, sub: payload['sub'] as Subject, iat, exp, scopes: scopesOf(payload), claims: payload },
      resources: resourcesOf(payload),
      // `#` starts no agent id nor resource server id, and a configured issuer has no fragment: no client assertion's key.
      use: {
        key: `#id-jag:${iss}#${jti}`,
        earliestUse: Math.max(exp - maxLifetime, iat - options.skew) * 1000,
        expiresAt: (exp + options.skew) * 1000,
      },
    }
  }

  return {
    async verify(assertion, agent) {
      try {
        return await check(assertion, agent, options.now())
      } catch (err) {
        if (err instanceof JwtError) throw new OAuthError('invalid_grant', ASSERTION_UNACCEPTABLE, { detail: `id-jag ${err.code}` })
        if (err instanceof UpstreamUnavailable) {
          throw new OAuthError('temporarily_unavailable', 'assertion issuer keys unavailable; try again', { detail: err.message, retryAfter: 5 })
        }
        throw err
      }
    },
  }
}
