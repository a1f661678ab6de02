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
 * with `verifier` and sets `c.get('mandate')` to its claims, or answers the
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
    c.set('mandate', result.token)
    return next()
  }
}
