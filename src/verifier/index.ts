/**
 * Mandate's verifier for resource servers (`mandate/verifier`): verify a
 * Mandate access token locally, against the broker's JWKS and a live mirror
 * of its revocation list, with a framework-free `verify` or the Hono
 * middleware `mandateAuth`. Refusals are RFC 6750 errors.
 *
 * ```ts
 * const verifier = createVerifier({
 *   issuer: 'https://mandate.example.com',
 *   audience: 'https://api.example.com',
 *   revocations: {
 *     feed: {
 *       url: 'https://mandate.example.com/revocations/feed',
 *       client: { id: 'rs/api', secret: process.env.MANDATE_RS_SECRET! },   // resource_servers in the broker's config
 *     },
 *   },
 * })
 * await verifier.ready()
 * app.use('/tickets/*', mandateAuth(verifier, { scopes: ['tickets:read'] }))
 * ```
 */
export { createVerifier } from './verifier.js'
export type { FeedClient, RevocationSourceOptions, VerifiedToken, Verifier, VerifierOptions } from './verifier.js'
export { mandateAuth } from './middleware.js'
export type { MandateAuthOptions, MandateEnv } from './middleware.js'
export { VerifierError } from './errors.js'
export type { VerifierErrorCode } from './errors.js'
export { actorsOf } from '../core/claims.js'
export type { ActClaim, AgentId, Jti, MandateClaims, MayActClaim, Subject, SubjectIdentifier } from '../core/claims.js'
