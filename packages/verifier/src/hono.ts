/**
 * The Hono adapter (`@mandate/verifier/hono`): a thin shell over
 * `verifier.authenticate`, so that it answers exactly what every other
 * adapter answers. `hono` is an optional peer dependency.
 */
import type { MiddlewareHandler } from 'hono'
import { parseScope } from './claims.js'
import type { RequiredScopes, VerifiedToken, Verifier } from './verifier.js'

/** What `mandateAuth` adds to the Hono context: `c.get('mandate')`. */
export interface MandateEnv {
  Variables: { mandate: VerifiedToken }
}

export type MandateAuthOptions = RequiredScopes

/**
 * Hono middleware for resource servers: verifies the request's bearer token
 * (or DPoP-bound token and proof, whose `htu` is the request's URL as the
 * server built it, unless the verifier's `dpop.baseUrl` is set) with
 * `verifier` and sets `c.get('mandate')` to its claims, or answers the
 * refusal `authenticate` built (RFC 6750 status, `WWW-Authenticate`, JSON
 * body). Options are checked once: `TypeError` on a malformed scope.
 */
export function mandateAuth(verifier: Verifier, options: MandateAuthOptions = {}): MiddlewareHandler<MandateEnv> {
  const scopes = [...(options.scopes ?? [])]
  for (const s of scopes) if (parseScope(s)?.length !== 1) throw new TypeError(`malformed scope: ${JSON.stringify(s)}`)
  const required = { scopes }
  return async function mandateAuthMiddleware(c, next) {
    const result = await verifier.authenticate(c.req.raw, required)
    if (!result.ok) return new Response(result.body, { status: result.status, headers: result.headers })
    // RFC 9449 §9: `DPoP-Nonce` on every answer when nonces are on.
    for (const [name, value] of Object.entries(result.headers)) c.header(name, value)
    c.set('mandate', result.token)
    return next()
  }
}

/**
 * Serves this resource's RFC 9728 metadata (§3: `GET` at the path §3.1 builds
 * from the resource, e.g. `/.well-known/oauth-protected-resource/api`), and
 * passes every other request on: `app.use(mandateResourceMetadata(verifier))`.
 * Throws `TypeError` when neither `resource` nor the verifier's `resource` is set.
 */
export function mandateResourceMetadata(
  verifier: Verifier,
  options: { readonly resource?: string; readonly scopesSupported?: readonly string[] } = {},
): MiddlewareHandler {
  const metadata = verifier.protectedResourceMetadata(options)
  const body = JSON.stringify(metadata.document)
  return async function mandateResourceMetadataMiddleware(c, next) {
    if (c.req.path !== metadata.path || (c.req.method !== 'GET' && c.req.method !== 'HEAD')) return next()
    return new Response(body, { status: 200, headers: { 'Content-Type': 'application/json', 'Cache-Control': 'max-age=300' } })
  }
}
