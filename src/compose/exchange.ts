/**
 * What the token exchange runs on, as the config sets it: the client
 * authenticator, the subject verifier, the DPoP proof checks, and the stores
 * the composition root opened.
 */
import { randomUUID } from 'node:crypto'
import type { AdmissionStore } from '../admission/port.js'
import type { AuditLog } from '../audit/port.js'
import type { Config } from '../config/schema.js'
import { resourceServer } from '../config/translate.js'
import type { Jti } from '../core/claims.js'
import type { CredentialAgeRule } from '../core/credential-age.js'
import type { ExchangeDeps } from '../core/exchange.js'
import type { RevocationService } from '../revocation/service.js'
import type { Tracing } from '../telemetry/tracing.js'
import { createClientAuthenticator } from '../tokens/client-auth.js'
import type { CredentialLedger } from '../tokens/credential-ledger.js'
import { createDpopProofVerifier, signingKeyNonces } from '../tokens/dpop.js'
import type { SigningKeyRing } from '../tokens/keys.js'
import { createTokenMinter } from '../tokens/mint.js'
import type { TokenMinter } from '../tokens/port.js'
import { createSubjectVerifier } from '../tokens/subject.js'
import type { IssuerTrust } from '../tokens/trust.js'
import type { ClientKeys } from './client-keys.js'

/** What the token exchange runs on: the client authenticator and subject verifier as the config sets them, and the stores. */
export function exchangeDeps(
  config: Config,
  d: {
    readonly credentials: { readonly ledger: CredentialLedger; readonly rule: CredentialAgeRule }
    readonly clientKeys: ClientKeys
    readonly keys: SigningKeyRing
    readonly policies: ExchangeDeps['policies']
    readonly trust: IssuerTrust
    readonly admission: AdmissionStore
    readonly revocations: RevocationService
    readonly audit: AuditLog
    /** Epoch seconds. */
    readonly now: () => number
    /** Instead of the configured key (tests). */
    readonly minter: TokenMinter | undefined
    readonly tracing: Tracing | undefined
    readonly lifecycle: NonNullable<ExchangeDeps['lifecycle']>
  },
): ExchangeDeps {
  const skew = config.limits.clock_skew_seconds
  return {
    issuer: config.issuer,
    policies: d.policies,
    clients: createClientAuthenticator({
      issuer: config.issuer,
      admission: d.admission,
      workloads: d.trust.workloads,
      now: d.now,
      skew,
      assertionMaxLifetime: config.limits.client_assertion_max_lifetime_seconds,
      workloadTokenMaxLifetime: config.limits.workload_token_max_lifetime_seconds,
      resourceServers: config.resource_servers.map(resourceServer),
      ...d.clientKeys,
      ledger: d.credentials.ledger,
      credentialAge: d.credentials.rule,
    }),
    subjects: createSubjectVerifier({
      selfIssuer: config.issuer,
      selfKeys: d.keys,
      users: d.trust.users,
      now: d.now,
      skew,
      maxAge: config.limits.subject_token_max_age_seconds,
      cacheSize: config.limits.subject_cache_entries,
    }),
    revocations: d.revocations,
    minter: d.minter ?? createTokenMinter(d.keys),
    audit: d.audit,
    admission: d.admission,
    now: d.now,
    newJti: () => randomUUID() as Jti,
    lifecycle: d.lifecycle,
    dpop: createDpopProofVerifier({
      tokenEndpoint: `${config.issuer}/oauth2/token`,
      now: d.now,
      maxAgeSeconds: config.dpop.max_age_seconds,
      clockSkewSeconds: config.dpop.clock_skew_seconds,
      algorithms: config.dpop.algorithms,
      ...(config.dpop.nonces ? { nonces: signingKeyNonces(d.keys, config.dpop.nonce_window_seconds, d.now) } : {}),
    }),
    dpopRequired: config.dpop.required,
    ...(d.tracing === undefined ? {} : { step: d.tracing.step.bind(d.tracing) }),
  }
}
