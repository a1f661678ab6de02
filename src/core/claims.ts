// The token's claims are the verifier package's: resource servers read exactly what the broker mints.
export {
  actorsOf,
  instancesOf,
  INSTANCE_ID,
  parseScope,
  type ActClaim,
  type ActorInstance,
  type AgentId,
  type Jti,
  type MandateClaims,
  type MayActClaim,
  type Subject,
  type SubjectIdentifier,
} from '@mandate/verifier/claims'
import { actorsOf } from '@mandate/verifier/claims'
import type { ActClaim, AgentId } from '@mandate/verifier/claims'

/** Agent ids: short slugs, so an agent can never pass for an issuer URL or a user (policies and the admin API check it). */
export const AGENT_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/
export const AGENT_ID_RULE = 'must be 1-63 of a-z 0-9 . _ - starting with a letter or digit'

/** RFC 8693 §3 token type identifiers Mandate speaks. */
export const TOKEN_TYPE = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  idToken: 'urn:ietf:params:oauth:token-type:id_token',
} as const

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
/** OpenID CIBA Core §10.1: an agent polls for the token a person approved. */
export const GRANT_TYPE_CIBA = 'urn:openid:params:grant-type:ciba'
/** RFC 7523 §2.1: a JWT as an authorization grant; Mandate takes only ID-JAGs (draft-ietf-oauth-identity-assertion-authz-grant). */
export const GRANT_TYPE_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
export const CLIENT_ASSERTION_TYPE_JWT = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
/** draft-ietf-oauth-spiffe-client-auth: the client assertion is a SPIFFE JWT-SVID. */
export const CLIENT_ASSERTION_TYPE_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'

/**
 * What identifies the newest hop's actor beyond its agent id (RFC 8693 §4.1
 * allows such members): the attested running copy that asked (`instance`)
 * and the DPoP key it proved (`jkt`). Absent members are left out of the claim.
 */
export interface ActHop {
  readonly instance?: string | undefined
  /** RFC 7638 thumbprint of the DPoP key the hop's token is bound to (RFC 9449 §6.1). */
  readonly jkt?: string | undefined
}

/**
 * Builds the nested `act` claim (RFC 8693 §4.1: newest actor outermost) from
 * actors listed newest first. The newest hop carries `newestHop`'s members;
 * when `olderAct` is given (the verified parent token's `act`), the older
 * hops are that claim as it was, so that each keeps the instance it had
 * (it must name exactly the older actors, else `TypeError`).
 */
export function actClaim(actorsNewestFirst: readonly AgentId[], newestHop: ActHop = {}, olderAct?: ActClaim): ActClaim {
  const [newest, ...older] = actorsNewestFirst
  if (newest === undefined) throw new TypeError('an act claim needs at least one actor')
  const hop: { sub: AgentId; instance?: string; jkt?: string } = { sub: newest }
  if (newestHop.instance !== undefined) hop.instance = newestHop.instance
  if (newestHop.jkt !== undefined) hop.jkt = newestHop.jkt
  if (olderAct !== undefined) {
    const named = actorsOf(olderAct)
    if (named.length !== older.length || named.some((a, i) => a !== older[i])) throw new TypeError('olderAct names other actors than the chain')
    return { ...hop, act: olderAct }
  }
  return older.length === 0 ? hop : { ...hop, act: actClaim(older) }
}
