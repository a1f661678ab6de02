/**
 * The keys clients authenticate with that no policy holds: the JWK sets
 * `private_key_jwt` agents publish at a `jwks_uri`, and the bundles of the
 * SPIFFE trust domains (`trust.spiffe`) whose JWT-SVIDs authenticate agents.
 */
import type { Closers } from '../core/async.js'
import type { Config } from '../config/schema.js'
import { jwksPolicyOf, spiffeBundlesOf } from '../config/translate.js'
import type { UpstreamKeysStatus } from '../http/routes/health.js'
import type { Logger } from '../telemetry/log.js'
import { createClientKeySets } from '../tokens/client-jwks.js'
import { createSpiffeBundles, type SpiffeBundles } from '../tokens/spiffe-bundle.js'
import type { KeyResolver } from '../tokens/upstream.js'

export interface ClientKeys {
  /** One resolver per `jwks_uri`, fetched on demand within the config's `jwks` bounds. */
  readonly clientKeySets: (jwksUri: string) => KeyResolver
  readonly spiffe: SpiffeBundles
}

/**
 * The client key sources. Each SPIFFE bundle is read once before the broker
 * serves (a failure is logged, and that trust domain's SVIDs are refused
 * until a read succeeds: fail closed), then kept fresh until close.
 */
export async function openClientKeys(config: Config, clock: () => number, log: Logger, closers: Closers): Promise<ClientKeys> {
  const { sources, limits } = spiffeBundlesOf(config)
  const spiffe = createSpiffeBundles(sources, limits, clock, log.child({ module: 'spiffe' }))
  await spiffe.refreshIfDue()
  closers.add(spiffe.keepFresh())
  return { clientKeySets: createClientKeySets(jwksPolicyOf(config), clock, log.child({ module: 'client-jwks' })), spiffe }
}

/**
 * The SPIFFE bundles as readiness lists upstream key sets: a trust domain
 * with no bundle that serves makes the broker not ready, as an issuer
 * without keys does, and says why.
 */
export function spiffeReadiness(keys: ClientKeys): UpstreamKeysStatus[] {
  return keys.spiffe.status().map((b) => ({
    issuer: `spiffe://${b.trustDomain}`,
    role: 'spiffe',
    state: b.usable ? (b.lastFailure === undefined ? 'fresh' : 'stale') : b.fetchedAt === undefined ? 'unavailable' : 'expired',
    usable: b.usable,
    ...(b.fetchedAt === undefined ? {} : { fetchedAt: b.fetchedAt }),
    ...(b.lastFailure === undefined ? {} : { lastFailure: b.lastFailure }),
  }))
}
