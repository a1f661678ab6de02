import { generateKeyPairSync, sign } from 'node:crypto'
import type { AssertionUse } from '../admission/port.js'
import { lifetimeProblem, numericDateProblem } from '../core/lifetime.js'
import { parseSpiffeId } from '../core/spiffe-id.js'
import type { AgentPolicy, PolicyStore } from '../policy/port.js'
import { ASYMMETRIC_ALGORITHMS, checkHeader, decodeJws, JwtError, verifySignature } from './jws.js'
import type { SpiffeBundles } from './spiffe-bundle.js'

export interface SvidRules {
  readonly bundles: SpiffeBundles
  /** The `aud` values that name this broker: its issuer and its token endpoint (draft-ietf-oauth-spiffe-client-auth §4.1). */
  readonly audiences: readonly string[]
  /** Epoch seconds. */
  readonly now: number
  readonly skew: number
  /** Longest an SVID may still be valid when presented, seconds. */
  readonly maxLifetime: number
}

/** SPIFFE JWT-SVID §2.2: `typ`, when present, is `JWT` or `JOSE`. */
const SVID_TYP = [undefined, 'jwt', 'jose']

/**
 * Verifies a JWT-SVID presented as client authentication
 * (draft-ietf-oauth-spiffe-client-auth §4.1, SPIFFE JWT-SVID §3, §4) and
 * finds the agent its SPIFFE ID names. Checks, in order: the header
 * (RFC 8725 §3.1: an asymmetric `alg` only, no key in the header), `sub` a
 * SPIFFE ID, a `jwt-svid` key of its trust domain's bundle under `kid`, an
 * agent whose policy names the ID (and `clientId`, when given, is that
 * agent), the signature, then `aud`, `exp` (required) and a bounded
 * lifetime. `iss` and `iat` are optional (JWT-SVID §3): neither is required.
 * One signature verification runs whatever fails before it, so timing does
 * not tell an unknown ID from a known one. Throws `JwtError`, its code the
 * check that failed (for the log only).
 *
 * Replay: JWT-SVIDs are bearer tokens a SPIFFE agent caches and hands out
 * again until they near expiry, and most carry no `jti`. One with a `jti`
 * has it spent like any client assertion's (RFC 7523 §3 item 7); one
 * without is bounded by its short lifetime only.
 */
export function createSvidVerifier(): (
  assertion: string,
  clientId: string | undefined,
  policies: PolicyStore,
  rules: SvidRules,
) => Promise<{ policy: AgentPolicy; assertion: AssertionUse | undefined; spiffeId: string }> {
  const dummy = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const dummySignature = sign('sha256', Buffer.from('x'), { key: dummy.privateKey, dsaEncoding: 'ieee-p1363' })
  return async (assertion, clientId, policies, rules) => {
    const decoded = decodeJws(assertion)
    const { header, payload } = decoded
    let failure: string | undefined
    let key = dummy.publicKey
    let policy: AgentPolicy | undefined
    let spiffeId = ''
    try {
      checkHeader(header, { algorithms: ASYMMETRIC_ALGORITHMS, typ: SVID_TYP })
      const sub = payload['sub']
      const id = typeof sub === 'string' ? parseSpiffeId(sub) : undefined
      if (id === undefined) throw new JwtError(sub === undefined ? 'missing_sub' : 'sub_not_a_spiffe_id')
      spiffeId = id.id
      key = rules.bundles.key(id.trustDomain, header)
      policy = policies.bySpiffeId(id.id)
      if (policy === undefined) throw new JwtError('no_agent_for_spiffe_id')
      if (clientId !== undefined && clientId !== policy.agent) throw new JwtError('client_id_mismatch')
    } catch (err) {
      if (!(err instanceof JwtError)) throw err
      failure = err.code
    }
    if (failure !== undefined || policy === undefined) {
      await verifySignature('ES256', dummy.publicKey, decoded.signingInput, dummySignature)
      throw new JwtError(failure ?? 'no_agent_for_spiffe_id')
    }
    if (!(await verifySignature(header.alg, key, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
    return { policy, assertion: checkSvidClaims(payload, policy, rules), spiffeId }
  }
}

/** The claims of a JWT-SVID whose signature held; the `jti` to spend, when it has one. */
function checkSvidClaims(payload: Record<string, unknown>, policy: AgentPolicy, rules: SvidRules): AssertionUse | undefined {
  for (const name of ['aud', 'exp'] as const) if (payload[name] === undefined) throw new JwtError(`missing_${name}`)
  const badDate = numericDateProblem(payload)
  if (badDate !== undefined) throw new JwtError(badDate)
  const aud = payload['aud']
  // JWT-SVID §3: `aud` is a string or an array of them; one must name this broker.
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.every((a) => typeof a === 'string') ? aud : undefined
  if (auds === undefined || auds.length === 0) throw new JwtError('bad_aud')
  if (!auds.some((a) => rules.audiences.includes(a))) throw new JwtError('wrong_aud')
  const late = lifetimeProblem(payload, { now: rules.now, skew: rules.skew })
  if (late !== undefined) throw new JwtError(late)
  const exp = payload['exp'] as number
  if (exp - rules.now > rules.maxLifetime) throw new JwtError('svid_lifetime_too_long')
  const jti = payload['jti']
  if (jti === undefined) return undefined
  if (typeof jti !== 'string' || jti === '') throw new JwtError('bad_jti')
  // As for the agent's client assertions (tokens/client-auth.ts), in their namespace of jtis: no earlier
  // acceptance than exp minus the longest lifetime, nor than iat minus the skew when there is an iat.
  const iat = payload['iat'] as number | undefined
  const earliestUse = Math.max(exp - rules.maxLifetime, iat === undefined ? -Infinity : iat - rules.skew)
  return { key: `${policy.agent}:${jti}`, earliestUse: earliestUse * 1000, expiresAt: (exp + rules.skew) * 1000 }
}
