/**
 * The Express adapter (`@mandate/verifier/express`, Express 5): a thin shell
 * over `verifier.authenticate`, so that it answers exactly what every other
 * adapter answers. `express` is an optional peer dependency, imported for
 * types only.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { parseScope } from './claims.js'
import { authorizationOf, headerSource } from './node-headers.js'
import type { ProtectedResourceMetadata } from './resource-metadata.js'
import type { RequiredScopes, VerifiedToken, Verifier } from './verifier.js'

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace -- Express types its request through this global namespace
  namespace Express {
    interface Request {
      /** The verified token's claims, set by `mandateAuth`. */
      mandate?: VerifiedToken
    }
  }
}

export type MandateAuthOptions = RequiredScopes

function checkedScopes(options: RequiredScopes): { scopes: string[] } {
  const scopes = [...(options.scopes ?? [])]
  for (const s of scopes) if (parseScope(s)?.length !== 1) throw new TypeError(`malformed scope: ${JSON.stringify(s)}`)
  return { scopes }
}

/**
 * Express middleware for resource servers: verifies the request's bearer
 * token (or DPoP-bound token and proof, whose `htu` is `req.protocol`, the
 * `Host` and `req.originalUrl` unless the verifier's `dpop.baseUrl` is set)
 * with `verifier` and sets `req.mandate` to its claims, or answers the
 * refusal `authenticate` built (RFC 6750 status, `WWW-Authenticate` with
 * `resource_metadata` when the verifier has a `resource`, JSON body,
 * `Cache-Control: no-store`). Options are checked once: `TypeError` on a
 * malformed scope. A failure of the verifier itself (a bug) goes to `next(err)`.
 */
export function mandateAuth(verifier: Verifier, options: MandateAuthOptions = {}): RequestHandler {
  const required = checkedScopes(options)
  return function mandateAuthMiddleware(req: Request, res: Response, next: NextFunction): void {
    const source = headerSource({
      authorization: authorizationOf(req.headers.authorization, req.rawHeaders),
      dpop: req.headers['dpop'],
      method: req.method,
      path: req.originalUrl,
      protocol: req.protocol,
      host: req.get('host'),
    })
    verifier.authenticate(source, required).then((result) => {
      if (!result.ok) {
        res.status(result.status).set(result.headers).end(result.body)
        return
      }
      // RFC 9449 §9: `DPoP-Nonce` on every answer when nonces are on.
      res.set(result.headers)
      req.mandate = result.token
      next()
    }, next)
  }
}

/**
 * Serves this resource's RFC 9728 metadata (§3: `GET` at the path §3.1
 * builds from the resource, e.g. `/.well-known/oauth-protected-resource/api`),
 * and passes every other request on: `app.use(mandateResourceMetadata(verifier))`.
 * Throws `TypeError` when neither `resource` nor the verifier's `resource` is set.
 */
export function mandateResourceMetadata(
  verifier: Verifier,
  options: { readonly resource?: string; readonly scopesSupported?: readonly string[] } = {},
): RequestHandler {
  const metadata: ProtectedResourceMetadata = verifier.protectedResourceMetadata(options)
  const body = JSON.stringify(metadata.document)
  return function mandateResourceMetadataHandler(req: Request, res: Response, next: NextFunction): void {
    if (req.path !== metadata.path || (req.method !== 'GET' && req.method !== 'HEAD')) {
      next()
      return
    }
    res.status(200).set({ 'Content-Type': 'application/json', 'Cache-Control': 'max-age=300' }).end(body)
  }
}
