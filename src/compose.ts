import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import type { Hono } from 'hono'
import type { JSONWebKeySet } from 'jose'
import type { AuditLog } from './audit/port.js'
import type { RevocationStore } from './revocation/port.js'
import type { ReplayCache } from './tokens/port.js'
import { createMemoryAuditLog } from './audit/memory.js'
import type { Config, TrustedIssuerConfig } from './config/schema.js'
import type { Jti } from './core/claims.js'
import type { ExchangeDeps } from './core/exchange.js'
import { createApp, type AppEnv } from './http/app.js'
import { formatIssue, loadPolicies, createPolicyStore } from './policy/load.js'
import { watchPolicies } from './policy/watch.js'
import { createMemoryRevocationStore } from './revocation/memory.js'
import type { Logger } from './telemetry/log.js'
import { createClientAuthenticator } from './tokens/client-auth.js'
import { createDevUserIssuer } from './tokens/dev-issuer.js'
import { normalizeTyp } from './tokens/jws.js'
import { loadSigningKeys } from './tokens/keys.js'
import { createTokenMinter } from './tokens/mint.js'
import { createMemoryReplayCache } from './tokens/replay-memory.js'
import { createSubjectVerifier } from './tokens/subject.js'
import {
  createIssuerRegistry,
  createLocalKeyResolver,
  createRemoteKeyResolver,
  type JwksPolicy,
  type KeyResolver,
  type TrustedIssuer,
} from './tokens/upstream.js'

export interface Mandate {
  readonly app: Hono<AppEnv>
  readonly config: Config
  /** Agents loaded at start. */
  readonly agents: number
  close(): Promise<void>
}

export interface ComposeOptions {
  readonly dev: boolean
  readonly logger: Logger
  /** Epoch milliseconds; tests inject a clock. */
  readonly clock?: () => number
  /**
   * Issuers trusted for user subjects whose keys are held in memory rather
   * than fetched (tests). The dev user issuer is added here under `--dev`.
   */
  readonly localSubjectIssuers?: readonly LocalIssuer[]
  /** Same, for workload issuers. */
  readonly localWorkloadIssuers?: readonly LocalIssuer[]
  /** Adapters chosen by the caller instead of the embedded defaults (tests). */
  readonly audit?: AuditLog
  readonly revocations?: RevocationStore
  readonly replay?: ReplayCache
}

/** A trusted issuer with its public keys in hand. */
export interface LocalIssuer {
  readonly trusted: TrustedIssuer
  readonly jwks: JSONWebKeySet
}

/** Config form of a trusted issuer → the verifier's form, with its role's `typ` default. */
function trustedIssuer(t: TrustedIssuerConfig, brokerIssuer: string, defaultTyp: string | null): TrustedIssuer {
  const typ = t.typ === undefined ? defaultTyp : t.typ
  return {
    issuer: t.issuer,
    jwksUri: t.jwks_uri,
    algorithms: t.algorithms,
    audience: t.audience ?? brokerIssuer,
    typ: typ === null ? [undefined, 'jwt'] : [normalizeTyp(typ)],
  }
}

/**
 * The composition root: config in, running app out. The only module that
 * picks concrete adapters. Throws `TypeError` on a config that cannot run
 * (unreadable keys, bad policies at start).
 */
export async function composeMandate(config: Config, options: ComposeOptions): Promise<Mandate> {
  const clock = options.clock ?? Date.now
  const nowSeconds = () => Math.floor(clock() / 1000)
  const log = options.logger

  const keys = await loadSigningKeys(
    config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json'),
    config.signing.generate_if_missing,
  )

  const loaded = await loadPolicies(config.policies_dir)
  if (!loaded.ok) {
    throw new TypeError(`policies in ${config.policies_dir} are invalid: ${loaded.issues.map(formatIssue).join('; ')}`)
  }
  const policyLog = log.child({ module: 'policy' })
  const policies = watchPolicies(config.policies_dir, createPolicyStore(loaded.policies), {
    onLoaded: (agents) => policyLog.info({ agents, dir: config.policies_dir }, 'policies reloaded'),
    onRejected: (issues) =>
      policyLog.error({ issues: issues.map(formatIssue), dir: config.policies_dir }, 'policy change rejected; last good set stays in force'),
  })
  policyLog.info({ agents: loaded.policies.length, dir: config.policies_dir }, 'policies loaded')
  if (!options.dev && options.audit === undefined) {
    log.warn(
      { audit: 'memory', revocation: 'memory', replay_cache: 'memory' },
      'this version keeps the audit log, the revocation list and the assertion replay cache in process memory: run one instance, and do not rely on the audit log surviving a restart',
    )
  }

  const jwksPolicy: JwksPolicy = {
    timeoutMs: config.jwks.timeout_ms,
    maxBytes: config.jwks.max_bytes,
    maxKeys: config.jwks.max_keys,
    cooldownMs: config.jwks.cooldown_seconds * 1000,
    cacheMaxAgeMs: config.jwks.cache_max_age_seconds * 1000,
    staleMaxAgeMs: config.jwks.stale_max_age_seconds * 1000,
  }
  const devIssuer = options.dev ? await createDevUserIssuer(config.issuer) : undefined
  const localSubjects = [...(options.localSubjectIssuers ?? []), ...(devIssuer === undefined ? [] : [devIssuer])]
  const localWorkloads = options.localWorkloadIssuers ?? []
  const local = new Map([...localSubjects, ...localWorkloads].map((l) => [l.trusted.issuer, l.jwks]))
  const resolverFor = (t: TrustedIssuer): KeyResolver => {
    const jwks = local.get(t.issuer)
    return jwks === undefined ? createRemoteKeyResolver(t, jwksPolicy, clock) : createLocalKeyResolver(jwks)
  }
  const subjectIssuers = [
    ...config.trust.subjects.map((t) => trustedIssuer(t, config.issuer, 'at+jwt')),
    ...localSubjects.map((l) => l.trusted),
  ]
  const workloadIssuers = [
    ...config.trust.workloads.map((t) => trustedIssuer(t, config.issuer, null)),
    ...localWorkloads.map((l) => l.trusted),
  ]

  const skew = config.limits.clock_skew_seconds
  const exchange: ExchangeDeps = {
    issuer: config.issuer,
    policies,
    clients: createClientAuthenticator({
      issuer: config.issuer,
      replay: options.replay ?? createMemoryReplayCache(nowSeconds),
      workloads: createIssuerRegistry(workloadIssuers, resolverFor),
      now: nowSeconds,
      skew,
      assertionMaxLifetime: config.limits.client_assertion_max_lifetime_seconds,
      workloadTokenMaxLifetime: config.limits.workload_token_max_lifetime_seconds,
    }),
    subjects: createSubjectVerifier({
      selfIssuer: config.issuer,
      selfKeys: keys,
      users: createIssuerRegistry(subjectIssuers, resolverFor),
      now: nowSeconds,
      skew,
      cacheSize: config.limits.subject_cache_entries,
    }),
    revocations: options.revocations ?? createMemoryRevocationStore(),
    minter: createTokenMinter(keys),
    audit: options.audit ?? createMemoryAuditLog(),
    now: nowSeconds,
    newJti: () => randomUUID() as Jti,
  }

  const app = createApp({
    exchange,
    keys,
    logger: log,
    maxBodyBytes: config.limits.max_body_bytes,
    devIssuer,
    clientAddress: (c) => {
      const incoming = (c.env as { incoming?: import('node:http').IncomingMessage } | undefined)?.incoming
      return incoming?.socket.remoteAddress
    },
  })
  return {
    app,
    config,
    agents: loaded.policies.length,
    close: async () => policies.close(),
  }
}
