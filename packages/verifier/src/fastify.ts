/**
 * The Fastify adapter (`@mandate/verifier/fastify`, Fastify 5): a thin shell
 * over `verifier.authenticate`, so that it answers exactly what every other
 * adapter answers. `fastify` is an optional peer dependency, imported for
 * types only.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { parseScope } from './claims.js'
import { authorizationOf, headerSource } from './node-headers.js'
import type { RequiredScopes, VerifiedToken, Verifier } from './verifier.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified token's claims, set by `mandateAuth`. */
    mandate?: VerifiedToken
  }
}

export type MandateAuthOptions = RequiredScopes

/** A Fastify hook: `onRequest` (before the body is read, the cheapest place to refuse) or `preHandler`. */
export type MandateHook = (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>

/**
 * A Fastify hook for resource servers: verifies the request's bearer token
 * (or DPoP-bound token and proof, whose `htu` is `request.protocol`,
 * `request.host` and `request.url` unless the verifier's `dpop.baseUrl` is
 * set) with `verifier` and sets `request.mandate` to its claims, or answers the
 * refusal `authenticate` built (RFC 6750 status, `WWW-Authenticate` with
 * `resource_metadata` when the verifier has a `resource`, JSON body,
 * `Cache-Control: no-store`). Use it as a route's `onRequest` or
 * `preHandler`, or `app.addHook('onRequest', …)`. Options are checked once:
 * `TypeError` on a malformed scope.
 */
export function mandateAuth(verifier: Verifier, options: MandateAuthOptions = {}): MandateHook {
  const scopes = [...(options.scopes ?? [])]
  for (const s of scopes) if (parseScope(s)?.length !== 1) throw new TypeError(`malformed scope: ${JSON.stringify(s)}`)
  const required = { scopes }
  return async function mandateAuthHook(request, reply) {
    const source = headerSource({
      authorization: authorizationOf(request.headers.authorization, request.raw.rawHeaders),
      dpop: request.headers['dpop'],
      method: request.method,
      path: request.url,
      protocol: request.protocol,
      host: request.host === '' ? undefined : request.host,
    })
    const result = await verifier.authenticate(source, required)
    if (!result.ok) return reply.code(result.status).headers(result.headers).send(result.body)
    // RFC 9449 §9: `DPoP-Nonce` on every answer when nonces are on.
    reply.headers(result.headers)
    request.mandate = result.token
    return undefined
  }
}

/**
 * Registers `GET` of this resource's RFC 9728 metadata (§3) at the path §3.1
 * builds from the resource (e.g. `/.well-known/oauth-protected-resource/api`):
 * `mandateResourceMetadata(app, verifier)`. Throws `TypeError` when neither
 * `resource` nor the verifier's `resource` is set.
 */
export function mandateResourceMetadata(
  app: FastifyInstance,
  verifier: Verifier,
  options: { readonly resource?: string; readonly scopesSupported?: readonly string[] } = {},
): void {
  const metadata = verifier.protectedResourceMetadata(options)
  const body = JSON.stringify(metadata.document)
  app.get(metadata.path, (_request, reply) => reply.code(200).headers({ 'Content-Type': 'application/json', 'Cache-Control': 'max-age=300' }).send(body))
}
