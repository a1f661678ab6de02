import { FEED_METADATA_MEMBER } from '@mandate/verifier/feed-wire'
import type { Context } from 'hono'
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../core/claims.js'
import { ASYMMETRIC_ALGORITHMS } from '../../tokens/jws.js'
import type { SigningKeys } from '../../tokens/keys.js'

/**
 * Client authentication at every OAuth endpoint: agents at all three,
 * resource servers at introspection. Workload identities (`actor_token`) and
 * admin keys have no RFC 8414 name and are documented instead.
 */
const AUTH_METHODS = ['private_key_jwt', 'client_secret_basic']

/** RFC 8414 §2 metadata, every endpoint that exists with its authentication; built once. */
export function metadataRoute(issuer: string, keys: SigningKeys) {
  const metadata = {
    issuer,
    token_endpoint: `${issuer}/oauth2/token`,
    jwks_uri: `${issuer}/.well-known/jwks.json`,
    // Token exchange is the only grant: there is no authorization endpoint, so no response type.
    grant_types_supported: [GRANT_TYPE_TOKEN_EXCHANGE],
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
    // Where resource servers follow the revocation list (@mandate/verifier discovers it here). No
    // registered member names such a feed; RFC 8414 §2 allows additional ones, and the `mandate_`
    // prefix keeps this one from ever colliding with a registered name.
    [FEED_METADATA_MEMBER]: `${issuer}/revocations/feed`,
  }
  return function oauthAuthorizationServer(c: Context): Response {
    return c.json(metadata, 200, { 'Cache-Control': 'public, max-age=300' })
  }
}

/** RFC 7517 JWK Set of the signing keys' public halves. */
export function jwksRoute(keys: SigningKeys) {
  return function jwks(c: Context): Response {
    return c.json(keys.jwks, 200, { 'Cache-Control': 'public, max-age=300', 'Content-Type': 'application/jwk-set+json' })
  }
}
