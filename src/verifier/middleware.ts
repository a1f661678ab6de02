import type { MiddlewareHandler } from 'hono'
import { parseScope } from '../core/claims.js'
import { bearerChallenge, VerifierError } from './errors.js'
import type { Verifier, VerifiedToken } from './verifier.js'

/** What `mandateAuth` adds to the Hono context: `c.get('mandate')`. */
export interface MandateEnv {
  Variables: { mandate: VerifiedToken }
}

export interface MandateAuthOptions {
  /** Scopes every request must carry (RFC 6749 §3.3 scope-tokens). */
  readonly scopes?: readonly string[]
}

/** RFC 6750 §2.1: `Bearer` and a b64token. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
const NO_STORE = { 'Cache-Control': 'no-store' } as const

/**
 * Hono middleware for resource servers: reads `Authorization: Bearer`
 * (RFC 6750 §2.1; never a query or form parameter), verifies the token with
 * `verifier`, and sets `c.get('mandate')` to its claims. Refusals answer the
 * status, an RFC 6750 §3 `WWW-Authenticate` challenge and
 * `{ error, error_description }`: no token at all → 401 with the bare
 * challenge and no error code (§3.1); a malformed header → 400
 * `invalid_request`; otherwise the `VerifierError`'s status and code (503
 * with `Retry-After`). Options are checked once: `TypeError` on a malformed
 * scope.
 */
export function mandateAuth(verifier: Verifier, options: MandateAuthOptions = {}): MiddlewareHandler<MandateEnv> {
  const scopes = [...(options.scopes ?? [])]
  for (const s of scopes) if (parseScope(s)?.length !== 1) throw new TypeError(`malformed scope: ${JSON.stringify(s)}`)
  const required = { scopes }
  const bare = bearerChallenge(verifier.realm)

  return async function mandateAuthMiddleware(c, next) {
    const authorization = c.req.header('authorization')
    // Credentials of another scheme are no bearer token at all (§3.1: no error code).
    if (authorization === undefined || !/^Bearer(\s|$)/i.test(authorization)) {
      return c.json({ error_description: 'a bearer token is required' }, 401, { ...NO_STORE, 'WWW-Authenticate': bare })
    }
    const match = BEARER.exec(authorization)
    let refusal: VerifierError | undefined
    if (match === null) {
      refusal = new VerifierError('invalid_request', 'malformed Authorization header', { realm: verifier.realm })
    } else {
      try {
        c.set('mandate', await verifier.verify(match[1]!, required))
      } catch (err) {
        if (!(err instanceof VerifierError)) throw err
        refusal = err
      }
    }
    if (refusal === undefined) return next()
    const headers: Record<string, string> = { ...NO_STORE, 'WWW-Authenticate': refusal.wwwAuthenticate }
    if (refusal.retryAfter !== undefined) headers['Retry-After'] = String(refusal.retryAfter)
    return c.json({ error: refusal.error, error_description: refusal.description }, refusal.status, headers)
  }
}
