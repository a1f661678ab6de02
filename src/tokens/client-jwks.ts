import type { Logger } from '../telemetry/log.js'
import { createRemoteKeyResolver, type JwksPolicy, type KeyResolver } from './upstream.js'

/**
 * The key sets `private_key_jwt` agents publish at their `jwks_uri`, one
 * resolver per URI, each with an issuer's bounds (`JwksPolicy`: timeout,
 * size, key count, cache age, cooldown between fetches, stale serving).
 * Policies name the URIs, so the map holds no more than the policies do
 * (plus URIs a reload dropped, until the process restarts).
 */
export function createClientKeySets(policy: JwksPolicy, clock: () => number, logger?: Logger): (jwksUri: string) => KeyResolver {
  const resolvers = new Map<string, KeyResolver>()
  return (jwksUri) => {
    let resolver = resolvers.get(jwksUri)
    if (resolver === undefined) {
      // The URI is given, so no discovery runs; it stands in for the issuer in the resolver's log lines.
      resolver = createRemoteKeyResolver({ issuer: jwksUri, jwksUri, algorithms: [], audience: '', typ: [] }, policy, clock, logger)
      resolvers.set(jwksUri, resolver)
    }
    return resolver
  }
}
