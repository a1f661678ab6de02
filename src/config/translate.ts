/**
 * Config sections in the forms the modules take: each function reads one
 * part of a checked {@link Config} and returns what one module's factory
 * expects, so that no module reads the config file's shape.
 */
import { hostname } from 'node:os'
import { compileAuthentication } from '../policy/load.js'
import { ID_JAG_TYP } from '../tokens/id-jag.js'
import { normalizeTyp } from '../tokens/jws.js'
import type { ResourceServer } from '../tokens/port.js'
import type { SpiffeBundleLimits, SpiffeBundleSource } from '../tokens/spiffe-bundle.js'
import type { JwksPolicy, TrustedIssuer } from '../tokens/upstream.js'
import type { Config, IdJagIssuerConfig, ResourceServerConfig, SubjectIssuerConfig, TrustedIssuerConfig, WorkloadIssuerConfig } from './schema.js'

/** A trusted issuer → the verifier's form, with its role's `typ` default (`null`: no `typ`, or `jwt`). */
export function trustedIssuer(
  t: TrustedIssuerConfig | SubjectIssuerConfig | WorkloadIssuerConfig,
  brokerIssuer: string,
  defaultTyp: string | null,
): TrustedIssuer {
  const typ = t.typ === undefined ? defaultTyp : t.typ
  return {
    issuer: t.issuer,
    jwksUri: t.jwks_uri,
    algorithms: t.algorithms,
    audience: t.audience ?? brokerIssuer,
    typ: typ === null ? [undefined, 'jwt'] : [normalizeTyp(typ)],
    ...('accept_id_tokens' in t ? { acceptIdTokens: t.accept_id_tokens } : {}),
    ...('instance_claim' in t && t.instance_claim !== undefined ? { instanceClaim: t.instance_claim } : {}),
  }
}

/** An ID-JAG issuer → the verifier's form: `typ` exactly `oauth-id-jag+jwt` (RFC 8725 §3.11), `aud` this broker. */
export function idJagIssuer(t: IdJagIssuerConfig, brokerIssuer: string): TrustedIssuer {
  return {
    issuer: t.issuer,
    jwksUri: t.jwks_uri,
    algorithms: t.algorithms,
    audience: brokerIssuer,
    typ: [ID_JAG_TYP],
    maxLifetime: t.max_lifetime_seconds,
  }
}

/**
 * `trust.subjects` (access tokens: `at+jwt` by default), `trust.workloads` (any JWT) and `trust.id_jag`
 * (ID-JAGs only), as the verifiers take them.
 */
export function trustedIssuersOf(config: Config): {
  readonly subjects: TrustedIssuer[]
  readonly workloads: TrustedIssuer[]
  readonly idJag: TrustedIssuer[]
} {
  return {
    subjects: config.trust.subjects.map((t) => trustedIssuer(t, config.issuer, 'at+jwt')),
    workloads: config.trust.workloads.map((t) => trustedIssuer(t, config.issuer, null)),
    idJag: config.trust.id_jag.map((t) => idJagIssuer(t, config.issuer)),
  }
}

/** A resource server → the client authenticator's form, its keys imported (the schema checked they import). */
export function resourceServer(rs: ResourceServerConfig): ResourceServer {
  const { authentication, unusableKeys } = compileAuthentication(rs.authentication)
  if (unusableKeys.length > 0) throw new TypeError(`resource_servers: ${rs.id}: unusable public key`)
  return { id: rs.id, audiences: new Set(rs.audiences), authentication }
}

/** The `jwks` section, as the key resolvers take it. */
export function jwksPolicyOf(config: Config): JwksPolicy {
  return {
    timeoutMs: config.jwks.timeout_ms,
    maxBytes: config.jwks.max_bytes,
    maxKeys: config.jwks.max_keys,
    cooldownMs: config.jwks.cooldown_seconds * 1000,
    cacheMaxAgeMs: config.jwks.cache_max_age_seconds * 1000,
    staleMaxAgeMs: config.jwks.stale_max_age_seconds * 1000,
  }
}

/** `trust.spiffe`: each trust domain's bundle source, and the `jwks` bounds its reads keep. */
export function spiffeBundlesOf(config: Config): { sources: SpiffeBundleSource[]; limits: SpiffeBundleLimits } {
  return {
    sources: config.trust.spiffe.map((t) => ({ trustDomain: t.trust_domain, file: t.bundle_file, url: t.bundle_url, refreshSeconds: t.refresh_seconds })),
    limits: {
      timeoutMs: config.jwks.timeout_ms,
      maxBytes: config.jwks.max_bytes,
      maxKeys: config.jwks.max_keys,
      staleMaxAgeMs: config.jwks.stale_max_age_seconds * 1000,
    },
  }
}

/** The name this process's records and audit chain carry: `instance_id`, or host and pid. */
export function instanceIdOf(config: Config): string {
  return config.instance_id ?? `${hostname()}:${process.pid}`
}
