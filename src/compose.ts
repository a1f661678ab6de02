import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import type { Hono } from 'hono'
import type { JSONWebKeySet } from 'jose'
import type { AuditLog } from './audit/port.js'
import type { ResourceServer, TokenMinter } from './tokens/port.js'
import type { AdmissionStore } from './admission/port.js'
import { createMemoryAdmissionStore } from './admission/memory.js'
import { createRedisAdmissionStore } from './admission/redis.js'
import { createAuthFailureThrottle } from './admission/auth-failures.js'
import { clientAddressResolver } from './http/client-address.js'
import { CHECKPOINT_TYP, createCheckpointWriter } from './audit/checkpoint.js'
import { createSqlAuditLog, lastKeyRotation, type SqlAuditLog } from './audit/sql.js'
import { delegationTree, queryAudit } from './audit/query.js'
import { hostname } from 'node:os'
import type { AgentPolicy } from './policy/port.js'
import { createJwtSigner } from './tokens/mint.js'
import type { Config, ResourceServerConfig, SubjectIssuerConfig, TrustedIssuerConfig } from './config/schema.js'
import type { AgentId, Jti } from './core/claims.js'
import type { ExchangeDeps } from './core/exchange.js'
import { createApp, type AppEnv } from './http/app.js'
import { compileAuthentication, formatIssue, loadPolicies, createPolicyStore } from './policy/load.js'
import { watchPolicies } from './policy/watch.js'
import { Redis } from 'ioredis'
import { MAX_TOKEN_TTL } from './policy/schema.js'
import { createSqlRevocationLog } from './revocation/log-sql.js'
import { createRevocationMirror } from './revocation/mirror.js'
import type { Revocation, RevocationFeed, RevocationLog } from './revocation/port.js'
import { createRedisRevocationFeed, redisReconnectDelay } from './revocation/redis.js'
import { createRevocationService, observeMirror, type RevocationService } from './revocation/service.js'
import { openDatabase } from './storage/database.js'
import type { Logger } from './telemetry/log.js'
import { startTelemetry, type TelemetryExporters } from './telemetry/otel.js'
import { monitorEventLoopLag } from './telemetry/event-loop.js'
import { createRefusals, type Refusals } from './telemetry/refusal-log.js'
import { createClientAuthenticator } from './tokens/client-auth.js'
import { createDevUserIssuer } from './tokens/dev-issuer.js'
import { normalizeTyp } from './tokens/jws.js'
import { openSigningKeys, type SigningKey } from './tokens/keys.js'
import { createTokenMinter } from './tokens/mint.js'
import { createSubjectVerifier } from './tokens/subject.js'
import {
  createIssuerRegistry,
  createLocalKeyResolver,
  createRemoteKeyResolver,
  keepKeySetsFresh,
  type JwksPolicy,
  type KeyResolver,
  type TrustedIssuer,
} from './tokens/upstream.js'

export interface Mandate {
  readonly app: Hono<AppEnv>
  readonly config: Config
  /** Agents loaded at start. */
  readonly agents: number
  readonly revocations: RevocationService
  /** Where shared state lives, for the startup log line. */
  readonly storage: { readonly database: 'postgres' | 'pglite' | 'memory'; readonly redis: boolean }
  /** Refusals, logged as one line per interval (the HTTP server counts its dropped connections in `unavailable`). */
  readonly refusals: Refusals
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
  /** How often the keys file and the policies directory are stat-polled for a change, in ms (default 5000; tests). */
  readonly filePollMs?: number
  /** Signs the issued tokens instead of the configured key (tests: a signer that fails). */
  readonly minter?: TokenMinter
  /** Durable revocation log instead of PostgreSQL/PGlite (tests). */
  readonly revocationLog?: RevocationLog
  /** Spent assertions and rate limits instead of Redis or process memory (tests). */
  readonly admission?: AdmissionStore
  /**
   * Span and metric exporters instead of the configured OTLP ones (tests: the
   * SDK's in-memory exporters). Either one turns its signal on.
   */
  readonly telemetry?: TelemetryExporters
  /** Load-shedding signals instead of the measured ones (tests: a lag or a backlog set by hand). */
  readonly loadSignals?: { readonly eventLoopLag?: () => number; readonly auditPending?: () => number }
}

/** A trusted issuer with its public keys in hand. */
export interface LocalIssuer {
  readonly trusted: TrustedIssuer
  readonly jwks: JSONWebKeySet
}

/** Config form of a trusted issuer → the verifier's form, with its role's `typ` default. */
export function trustedIssuer(t: TrustedIssuerConfig | SubjectIssuerConfig, brokerIssuer: string, defaultTyp: string | null): TrustedIssuer {
  const typ = t.typ === undefined ? defaultTyp : t.typ
  return {
    issuer: t.issuer,
    jwksUri: t.jwks_uri,
    algorithms: t.algorithms,
    audience: t.audience ?? brokerIssuer,
    typ: typ === null ? [undefined, 'jwt'] : [normalizeTyp(typ)],
    ...('accept_id_tokens' in t ? { acceptIdTokens: t.accept_id_tokens } : {}),
  }
}

/** Config form of a resource server → the authenticator's form, its keys imported (the schema checked they import). */
function resourceServer(rs: ResourceServerConfig): ResourceServer {
  const { authentication, unusableKeys } = compileAuthentication(rs.authentication)
  if (unusableKeys.length > 0) throw new TypeError(`resource_servers: ${rs.id}: unusable public key`)
  return { id: rs.id, audiences: new Set(rs.audiences), authentication }
}

/** The `jwks` section of the config, as the key resolvers take it. */
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

/** The name this process's records and audit chain carry: `instance_id`, or host and pid. */
export function instanceIdOf(config: Config): string {
  return config.instance_id ?? `${hostname()}:${process.pid}`
}

/**
 * The composition root: config in, running app out. The only module that
 * picks concrete adapters. Throws `TypeError` on a config that cannot run
 * (unreadable keys, bad policies at start).
 */

export async function composeMandate(config: Config, options: ComposeOptions): Promise<Mandate> {
  const clock = options.clock ?? Date.now
  // Nothing is accepted before this: where an embedded broker's replay memory begins.
  const startedAt = clock()
  const nowSeconds = () => Math.floor(clock() / 1000)
  const log = options.logger

  // Set once the audit log is open: a rotation's switch to the new key is recorded.
  let onKeySwitch: (key: SigningKey, previous: SigningKey) => void = () => {}
  const keys = await openSigningKeys(config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json'), {
    generateIfMissing: config.signing.generate_if_missing,
    clock,
    logger: log,
    onSwitch: (key, previous) => onKeySwitch(key, previous),
    ...(options.filePollMs === undefined ? {} : { pollMs: options.filePollMs }),
  })

  const loaded = await loadPolicies(config.policies_dir)
  if (!loaded.ok) {
    throw new TypeError(`policies in ${config.policies_dir} are invalid: ${loaded.issues.map(formatIssue).join('; ')}`)
  }
  const policyLog = log.child({ module: 'policy' })
  // Set once the audit log is open: every reload is recorded, file by file.
  let onPoliciesLoaded: (set: readonly AgentPolicy[]) => void = () => {}
  const policies = watchPolicies(config.policies_dir, createPolicyStore(loaded.policies), {
    onLoaded: (agents, set) => {
      policyLog.info({ agents, dir: config.policies_dir }, 'policies reloaded')
      onPoliciesLoaded(set)
    },
    onRejected: (issues) =>
      policyLog.error({ issues: issues.map(formatIssue), dir: config.policies_dir }, 'policy change rejected; last good set stays in force'),
  }, options.filePollMs === undefined ? {} : { pollMs: options.filePollMs })
  policyLog.info({ agents: loaded.policies.length, dir: config.policies_dir }, 'policies loaded')

  const jwksPolicy = jwksPolicyOf(config)
  const devIssuer = options.dev ? await createDevUserIssuer(config.issuer) : undefined
  const localSubjects = [...(options.localSubjectIssuers ?? []), ...(devIssuer === undefined ? [] : [devIssuer])]
  const localWorkloads = options.localWorkloadIssuers ?? []
  const local = new Map([...localSubjects, ...localWorkloads].map((l) => [l.trusted.issuer, l.jwks]))
  const jwksLog = log.child({ module: 'jwks' })
  // Every issuer's resolver, for readiness and the background refresh.
  const keySets: { readonly issuer: string; readonly role: 'subjects' | 'workloads'; readonly keys: KeyResolver }[] = []
  const resolverFor = (role: 'subjects' | 'workloads') => (t: TrustedIssuer): KeyResolver => {
    const jwks = local.get(t.issuer)
    const keys = jwks === undefined ? createRemoteKeyResolver(t, jwksPolicy, clock, jwksLog) : createLocalKeyResolver(jwks)
    keySets.push({ issuer: t.issuer, role, keys })
    return keys
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
  const instance = instanceIdOf(config)
  // Undefined when nothing is exported: then no span, attribute or metric call is made anywhere.
  const telemetry = startTelemetry(config.telemetry, {
    instance,
    logger: log,
    ...(options.telemetry === undefined ? {} : { exporters: options.telemetry }),
  })
  const tracing = telemetry?.tracing
  const metrics = telemetry?.metrics
  // Closed last (closers run in reverse): what the others record while they stop is exported too.
  const closers: (() => Promise<void>)[] = [async () => telemetry?.shutdown(), async () => policies.close()]
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined)
  }

  try {
    // Durable revocation list and delegation log: PostgreSQL when DATABASE_URL is set, PGlite under data_dir otherwise.
    let database: Mandate['storage']['database'] = 'memory'
    const sqlDb =
      options.revocationLog !== undefined && options.audit !== undefined
        ? undefined
        : await openDatabase(config.storage.database_url, { dataDir: config.data_dir })
    if (sqlDb !== undefined) {
      closers.push(() => sqlDb.close())
      await sqlDb.migrate()
      database = sqlDb.engine
    }
    const revocationLog = options.revocationLog ?? createSqlRevocationLog(sqlDb!.db)

    let sqlAudit: SqlAuditLog | undefined
    if (options.audit === undefined) {
      const signCheckpoint = createJwtSigner(() => keys.current, CHECKPOINT_TYP)
      sqlAudit = createSqlAuditLog({
        database: sqlDb!,
        chains: sqlDb!.engine === 'postgres' ? config.audit.chains : 1,
        instance,
        clock,
        groupMaxRecords: config.audit.group_max_records,
        groupMaxWaitMs: config.audit.group_max_wait_ms,
        writeTimeoutMs: config.audit.write_timeout_ms,
        checkpoints: {
          writer: createCheckpointWriter({
            dir: config.audit.checkpoint_dir ?? join(config.data_dir, 'checkpoints'),
            issuer: config.issuer,
            sign: signCheckpoint,
          }),
          everyRecords: config.audit.checkpoint_every_records,
          intervalMs: config.audit.checkpoint_interval_ms,
        },
        logger: log.child({ module: 'audit' }),
        ...(metrics === undefined ? {} : { onGroup: metrics.auditGroup.bind(metrics) }),
      })
      // Runs before the database closes: queued groups are written, then a last checkpoint.
      closers.push(() => sqlAudit!.close())
    }
    const audit: AuditLog = options.audit ?? sqlAudit!

    // What is in force from now on: each policy file (by hash) and the signing key.
    const inForce = new Map<AgentId, AgentPolicy>()
    const recordPolicies = async (set: readonly AgentPolicy[]) => {
      const at = nowSeconds()
      const seen = new Set<AgentId>()
      const writes: Promise<unknown>[] = []
      for (const p of set) {
        seen.add(p.agent)
        const before = inForce.get(p.agent)
        if (before?.sourceHash === p.sourceHash && before.source === p.source) continue
        inForce.set(p.agent, p)
        writes.push(audit.append({ type: 'policy.loaded', at, agent: p.agent, source: p.source, sha256: p.sourceHash }))
      }
      for (const [agent, p] of inForce) {
        if (seen.has(agent)) continue
        inForce.delete(agent)
        writes.push(audit.append({ type: 'policy.unloaded', at, agent, source: p.source, sha256: p.sourceHash }))
      }
      await Promise.all(writes)
    }
    await recordPolicies(loaded.policies)
    onPoliciesLoaded = (set) =>
      void recordPolicies(set).catch((err: unknown) =>
        policyLog.error({ error: 'audit_unavailable', code: (err as { code?: string }).code }, 'policy reload not recorded in the audit log'),
      )
    if (sqlDb !== undefined && sqlAudit !== undefined) {
      const previousKid = await lastKeyRotation(sqlDb.db)
      if (previousKid !== keys.current.kid) {
        await audit.append({ type: 'key.rotated', at: nowSeconds(), kid: keys.current.kid, previousKid })
      }
    }
    onKeySwitch = (key, previous) =>
      void audit
        .append({ type: 'key.rotated', at: nowSeconds(), kid: key.kid, previousKid: previous.kid })
        .catch((err: unknown) => log.error({ module: 'keys', kid: key.kid, code: (err as { code?: string }).code }, 'key rotation not recorded in the audit log'))
    closers.push(async () => keys.close())

    // Propagation: Redis when REDIS_URL is set; one process needs none.
    // Observed: the broker's /revocations/feed streams what it applies.
    const mirror = observeMirror(createRevocationMirror(nowSeconds))
    let feed: RevocationFeed | undefined
    let admission = options.admission
    /** Set when the admission store is the Redis one: whether its connection is up. */
    let admissionConnected: (() => boolean) | undefined
    if (config.storage.redis_url !== undefined) {
      const redis = new Redis(config.storage.redis_url, {
        lazyConnect: false,
        maxRetriesPerRequest: 1,
        enableOfflineQueue: false,
        connectTimeout: 2000,
        commandTimeout: 2000,
        // The admission commands run on this connection: it must be back as soon as Redis is.
        retryStrategy: redisReconnectDelay,
        // The admission commands of one event-loop turn go out in one write and Redis answers them
        // in one read: one syscall each way for many exchanges, not one per exchange.
        enableAutoPipelining: true,
      })
      redis.on('error', () => undefined) // reported through freshness and failed calls, not per retry
      closers.push(async () => redis.disconnect())
      await waitReady(redis)
      feed = await createRedisRevocationFeed({
        redis,
        prefix: config.storage.key_prefix,
        mirror,
        log: revocationLog,
        now: clock,
        staleAfterMs: config.revocation.max_staleness_ms,
        blockMs: Math.min(250, Math.floor(config.revocation.max_staleness_ms / 4)),
        logger: log.child({ module: 'revocation' }),
      })
      closers.push(() => feed!.close())
      if (admission === undefined) {
        admission = await createRedisAdmissionStore(redis, config.storage.key_prefix, clock)
        admissionConnected = () => redis.status === 'ready'
      }
    } else {
      mirror.replaceAll(await revocationLog.listRelevant(nowSeconds()))
      if (!options.dev) {
        log.warn(
          { replay_cache: 'memory', rate_limits: 'memory', revocation_feed: 'none' },
          'REDIS_URL is not set: revocations, client-assertion replays and rate limits are tracked in this process only; run a single instance',
        )
      }
    }
    // Embedded: the process's memory, which began at the start (an assertion from before a restart is refused).
    admission ??= createMemoryAdmissionStore(clock, startedAt)
    const revocations = createRevocationService({
      log: revocationLog,
      mirror,
      feed,
      now: nowSeconds,
      // The longest any token can live (the policy schema's cap), plus skew.
      tokenEntryTtl: MAX_TOKEN_TTL + skew,
      ...(metrics === undefined ? {} : { onRecorded: (r: Revocation, action: 'created' | 'lifted') => metrics.revocation(r.target.kind, action) }),
    })
    metrics?.watchMirrorLag(() => revocations.lag())
    // Runs first on close: open revocation feed streams end before their sources do.
    closers.push(async () => revocations.endSubscriptions())

  const userRegistry = createIssuerRegistry(subjectIssuers, resolverFor('subjects'))
  const workloadRegistry = createIssuerRegistry(workloadIssuers, resolverFor('workloads'))
  const exchange: ExchangeDeps = {
    issuer: config.issuer,
    policies,
    clients: createClientAuthenticator({
      issuer: config.issuer,
      admission,
      workloads: workloadRegistry,
      now: nowSeconds,
      skew,
      assertionMaxLifetime: config.limits.client_assertion_max_lifetime_seconds,
      workloadTokenMaxLifetime: config.limits.workload_token_max_lifetime_seconds,
      resourceServers: config.resource_servers.map(resourceServer),
    }),
    subjects: createSubjectVerifier({
      selfIssuer: config.issuer,
      selfKeys: keys,
      users: userRegistry,
      now: nowSeconds,
      skew,
      maxAge: config.limits.subject_token_max_age_seconds,
      cacheSize: config.limits.subject_cache_entries,
    }),
    revocations,
    minter: options.minter ?? createTokenMinter(keys),
    audit,
    admission,
    now: nowSeconds,
    newJti: () => randomUUID() as Jti,
    ...(tracing === undefined ? {} : { step: tracing.step.bind(tracing) }),
  }

  // Refusals are counted and logged once per interval, never a line each.
  const refusals = createRefusals(log)
  closers.push(async () => refusals.close())
  const eventLoop = options.loadSignals?.eventLoopLag === undefined ? monitorEventLoopLag() : undefined
  closers.push(async () => eventLoop?.stop())
  const stopKeyRefresh = keepKeySetsFresh(keySets.map((k) => k.keys))
  closers.push(async () => stopKeyRefresh())

  const app = createApp({
    exchange,
    refusals,
    shedding: {
      eventLoopLag: options.loadSignals?.eventLoopLag ?? (() => eventLoop!.current()),
      auditPending: options.loadSignals?.auditPending ?? (sqlAudit === undefined ? () => 0 : () => sqlAudit.pending()),
      maxConcurrent: config.overload.max_concurrent_requests,
      maxEventLoopLagMs: config.overload.max_event_loop_lag_ms,
      // A full group being written and a full one waiting: more means the database is not keeping up.
      maxAuditPending: config.overload.max_audit_pending ?? 2 * config.audit.group_max_records,
      retryAfterSeconds: config.overload.retry_after_seconds,
      onShed: (reason) => {
        refusals.unavailable.count(`overloaded: ${reason}`)
        metrics?.requestShed(reason)
      },
    },
    revocations,
    userIssuers: subjectIssuers.map((t) => t.issuer),
    adminKeys: config.admin.keys.map((k) => ({ name: k.name, sha256: Buffer.from(k.sha256, 'hex'), roles: new Set(k.roles) })),
    keys,
    logger: log,
    maxBodyBytes: config.limits.max_body_bytes,
    devIssuer,
    ...(tracing === undefined ? {} : { tracing }),
    ...(metrics === undefined ? {} : { metrics }),
    ...(sqlDb === undefined ? {} : { auditQueries: { page: (r) => queryAudit(sqlDb.db, r), tree: (jti) => delegationTree(sqlDb.db, jti) } }),
    ...(sqlAudit === undefined ? {} : { auditHealthy: () => sqlAudit.probe() }),
    readiness: {
      policyReload: () => policies.status(),
      keysFile: () => keys.status(),
      upstream: () => keySets.map((k) => ({ issuer: k.issuer, role: k.role, ...k.keys.status() })),
      replayConnected: admissionConnected,
    },
    clientAddress: clientAddressResolver(config.listen.trusted_proxies ?? []),
    authFailures: createAuthFailureThrottle(clock),
    adminListener: config.listen.admin_port !== undefined,
  })
  return {
    app,
    config,
    agents: loaded.policies.length,
    revocations,
    storage: { database, redis: feed !== undefined },
    refusals,
    close: closeAll,
  }
  } catch (err) {
    await closeAll()
    throw err
  }
}

/** Resolves once ioredis is connected; rejects (fail closed at start) after its connect timeout. */
function waitReady(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new TypeError('cannot reach Redis (REDIS_URL) within 5 s')), 5000)
    redis.once('ready', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}
