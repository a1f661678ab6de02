import { FEED_METADATA_MEMBER } from '@mandate/verifier/feed-wire'
import type { Context } from 'hono'
import { GRANT_TYPE_CIBA, GRANT_TYPE_JWT_BEARER, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../core/claims.js'
import type { PolicyStore } from '../../policy/port.js'
import { ASYMMETRIC_ALGORITHMS } from '../../tokens/jws.js'
import type { SigningKeys } from '../../tokens/keys.js'

/**
 * Client authentication at every OAuth endpoint: agents at all three,
 * resource servers at introspection. `spiffe_jwt` is a SPIFFE JWT-SVID as the
 * client assertion, the name draft-ietf-oauth-spiffe-client-auth gives it.
 * Workload identities (`actor_token`) and admin keys have no RFC 8414 name and
 * are documented instead.
 */
const AUTH_METHODS = ['private_key_jwt', 'client_secret_basic', 'spiffe_jwt']

/**
 * RFC 8414 §2 metadata, every endpoint that exists with its authentication; built once, but for the
 * RFC 9396 types the policies declare, which follow a reload. `approvals`: the policies, when human
 * approval (OpenID CIBA, poll mode) is served; `jwtBearer`: whether ID-JAGs are redeemed (an issuer is
 * trusted for them); `dpopAlgorithms`: the DPoP proof algorithms, when proofs are taken.
 */
export function metadataRoute(issuer: string, keys: SigningKeys, approvals?: PolicyStore, jwtBearer = false, dpopAlgorithms?: readonly string[]) {
  const metadata = {
    issuer,
    token_endpoint: `${issuer}/oauth2/token`,
    jwks_uri: `${issuer}/.well-known/jwks.json`,
    // Token exchange (and polling for an approved token): there is no authorization endpoint, so no response type.
    grant_types_supported: [GRANT_TYPE_TOKEN_EXCHANGE, ...(approvals === undefined ? [] : [GRANT_TYPE_CIBA]), ...(jwtBearer ? [GRANT_TYPE_JWT_BEARER] : [])],
    response_types_supported: [],
    token_endpoint_auth_methods_supported: AUTH_METHODS,
    token_endpoint_auth_signing_alg_values_supported: [...ASYMMETRIC_ALGORITHMS],
    revocation_endpoint: `${issuer}/oauth2/revoke`,
    revocation_endpoint_auth_methods_supported: AUTH_METHODS,
    revocation_endpoint_auth_signing_alg_values_supported: [...ASYMMETRIC_ALGORITHMS],
    introspection_endpoint: `${issuer}/oauth2/introspect`,
    introspection_endpoint_auth_methods_supported: AUTH_METHODS,
    introspection_endpoint_auth_signing_alg_values_supported: [...ASYMMETRIC_ALGORITHMS],
    // Mandate names the token types it exchanges; RFC 8693 defines no metadata for them.
    subject_token_types_supported: [TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt],
    actor_token_types_supported: [TOKEN_TYPE.jwt, TOKEN_TYPE.accessToken],
    issued_token_types_supported: [TOKEN_TYPE.accessToken],
    access_token_signing_alg_values_supported: [keys.current.alg],
    // RFC 9449 §5.1: the token endpoint takes DPoP proofs signed with these.
    ...(dpopAlgorithms === undefined ? {} : { dpop_signing_alg_values_supported: [...dpopAlgorithms] }),
    // Where resource servers follow the revocation list (@mandate/verifier discovers it here). No
    // registered member names such a feed; RFC 8414 §2 allows additional ones, and the `mandate_`
    // prefix keeps this one from ever colliding with a registered name.
    [FEED_METADATA_MEMBER]: `${issuer}/revocations/feed`,
    // OpenID CIBA Core §4: poll mode only (the agent polls; Mandate calls no client back).
    ...(approvals === undefined
      ? {}
      : { backchannel_authentication_endpoint: `${issuer}/oauth2/bc-authorize`, backchannel_token_delivery_modes_supported: ['poll'] }),
  }
  return function oauthAuthorizationServer(c: Context): Response {
    if (approvals === undefined) return c.json(metadata, 200, { 'Cache-Control': 'public, max-age=300' })
    // RFC 9396 §10: the types some grant declares.
    const types = new Set<string>()
    for (const p of approvals.snapshot().agents()) for (const g of p.grants.values()) for (const t of g.detailTypes?.keys() ?? []) types.add(t)
    return c.json({ ...metadata, authorization_details_types_supported: [...types].sort() }, 200, { 'Cache-Control': 'public, max-age=300' })
  }
}

/** RFC 7517 JWK Set of the signing keys' public halves. */
export function jwksRoute(keys: SigningKeys) {
  return function jwks(c: Context): Response {
    return c.json(keys.jwks, 200, { 'Cache-Control': 'public, max-age=300', 'Content-Type': 'application/jwk-set+json' })
  }
}
