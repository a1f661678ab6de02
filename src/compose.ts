/**
 * The composition root: config in, running app out. The only module that
 * picks concrete adapters; what each part needs is built in its own module
 * (config/translate.ts reads the config, compose/storage.ts and
 * compose/propagation.ts pick the stores, tokens/trust.ts the issuers).
 * Throws `TypeError` on a config that cannot run (unreadable keys, bad
 * policies at start).
 */
import { join } from 'node:path'
import type { Hono } from 'hono'
import { createAuthFailureThrottle } from './admission/auth-failures.js'
import type { AdmissionStore } from './admission/port.js'
import { recordInForce } from './audit/in-force.js'
import type { AuditLog } from './audit/port.js'
import { openAnomalyMonitor } from './compose/anomaly.js'
import type { AnomalyMonitor } from './governance/anomaly-monitor.js'
import { openPropagation } from './compose/propagation.js'
import { createPropagationTracker } from './revocation/propagation.js'
import { openWebhookNotifier } from './compose/notifications.js'
import { openAgentLifecycle } from './compose/lifecycle.js'
import type { LifecycleService } from './audit/lifecycle-service.js'
import { openSetTransmitter } from './compose/ssf.js'
import { exchangeDeps } from './compose/exchange.js'
import { openCredentialLedger } from './compose/credentials.js'
import { openDurableStores } from './compose/storage.js'
import type { Config } from './config/schema.js'
import { instanceIdOf, jwksPolicyOf, trustedIssuersOf } from './config/translate.js'
import { Closers } from './core/async.js'
import { createApp } from './http/app.js'
import type { AppEnv } from './http/env.js'
import { clientAddressResolver } from './http/client-address.js'
import type { LoadShedding } from './http/shed.js'
import { MAX_TOKEN_TTL } from './policy/schema.js'
import { openPolicyDir } from './policy/watch.js'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { Revocation, RevocationLog } from './revocation/port.js'
import { createRevocationService, observeMirror, type RevocationService } from './revocation/service.js'
import { monitorEventLoopLag } from './telemetry/event-loop.js'
import type { Logger } from './telemetry/log.js'
import { startTelemetry, type TelemetryExporters } from './telemetry/otel.js'
import { createRefusals, type Refusals } from './telemetry/refusal-log.js'
import { openClientKeys, spiffeReadiness } from './compose/client-keys.js'
import { createDevUserIssuer } from './tokens/dev-issuer.js'
import { openSigningKeys } from './tokens/keys.js'
import type { TokenMinter } from './tokens/port.js'
import { buildIssuerTrust, type LocalIssuer } from './tokens/trust.js'
import { createIdJagVerifier } from './tokens/id-jag.js'
import { createApprovalStore } from './approvals/store.js'
import { cancelApprovalsOnKill } from './approvals/cancel-on-kill.js'
import type { ApprovalLinks } from './approvals/link.js'
import { approvalPagesOf } from './compose/approvals.js'
import { consoleOf } from './compose/console.js'

// Kept here for the CLI, which imports them from the composition root.
export { idJagIssuer, instanceIdOf, jwksPolicyOf, trustedIssuer } from './config/translate.js'
export type { LocalIssuer } from './tokens/trust.js'

export interface Mandate {
  readonly app: Hono<AppEnv>
  readonly config: Config
  /** Agents loaded at start. */
  readonly agents: number
  readonly revocations: RevocationService
  /** The delegation log this broker writes; what runs beside it appends through it, so that its records wake delivery as the broker's own do. */
  readonly audit: AuditLog
  /** Where shared state lives, for the startup log line. */
  readonly storage: { readonly database: 'postgres' | 'pglite' | 'memory'; readonly redis: boolean }
  /** Refusals, logged as one line per interval (the HTTP server counts its dropped connections in `unavailable`). */
  readonly refusals: Refusals
  /** The agents' lifecycle: attestations, and the sweep that records transitions (tests run it at will). */
  readonly lifecycle: LifecycleService
  /** The anomaly monitor, when the SQL delegation log runs (tests wait on `settled()`). */
  readonly anomalies: AnomalyMonitor | undefined
  /** Signed links to the approver's sign-in page (`approvals.sign_in`), for the approval notification; absent: no links. */
  readonly approvalLinks: ApprovalLinks | undefined
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

export async function composeMandate(config: Config, options: ComposeOptions): Promise<Mandate> {
  // Long, not split: it reads top to bottom in the order things open (and, reversed, close); split further, that order would scatter.
  const clock = options.clock ?? Date.now
  // Nothing is accepted before this: where an embedded broker's replay memory begins.
  const startedAt = clock()
  const nowSeconds = () => Math.floor(clock() / 1000)
  const log = options.logger
  const pollMs = options.filePollMs === undefined ? {} : { pollMs: options.filePollMs }
  const instance = instanceIdOf(config)
  // Closed in reverse: telemetry last, so that what the others record while they stop is exported too.
  const closers = new Closers()
  try {
    // Undefined when nothing is exported: then no span, attribute or metric call is made anywhere.
    const telemetry = await startTelemetry(config.telemetry, {
      instance,
      logger: log,
      ...(options.telemetry === undefined ? {} : { exporters: options.telemetry }),
    })
    closers.add(async () => telemetry?.shutdown())
    const tracing = telemetry?.tracing
    const metrics = telemetry?.metrics

    const keys = await openSigningKeys(config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json'), {
      generateIfMissing: config.signing.generate_if_missing,
      clock,
      logger: log,
      ...pollMs,
    })
    closers.add(() => keys.close())
    const policyLog = log.child({ module: 'policy' })
    const policies = await openPolicyDir(config.policies_dir, policyLog, { ...pollMs, anomalyRules: config.governance.anomalies.rules })
    closers.add(() => policies.store.close())

    const stores = await openDurableStores(
      config,
      { instance, clock, keys, logger: log, metrics, revocationLog: options.revocationLog, audit: options.audit },
      closers,
    )
    const { audit } = stores
    // What is in force from now on, in the delegation log: each policy file (by hash) and the signing key.
    await recordInForce({ audit, policies, keys, lastRecordedKid: stores.lastRecordedKid, now: nowSeconds, logger: log })

    // Observed: the broker's /revocations/feed streams what it applies.
    const mirror = observeMirror(createRevocationMirror(nowSeconds))
    const shared = await openPropagation(
      config,
      { mirror, revocationLog: stores.revocationLog, clock, startedAt, logger: log, dev: options.dev, admission: options.admission },
      closers,
    )
    const revocations = createRevocationService({
      log: stores.revocationLog,
      mirror,
      feed: shared.feed,
      now: nowSeconds,
      // The longest any token can live (the policy schema's cap), plus skew.
      tokenEntryTtl: MAX_TOKEN_TTL + config.limits.clock_skew_seconds,
      ...(metrics === undefined ? {} : { onRecorded: (r: Revocation, action: 'created' | 'lifted') => metrics.revocation(r.target.kind, action) }),
    })
    metrics?.watchMirrorLag(() => revocations.lag())
    // Where each kill has reached (GET /admin/revocations/{id}/propagation): noted off the token path, as the mirror applies.
    const propagation = createPropagationTracker({
      instance,
      store: shared.propagationNotes,
      subscribe: (listener, o) => revocations.subscribe(listener, o),
      records: () => revocations.records(),
      clock,
      logger: log.child({ module: 'propagation' }),
    })
    closers.add(() => propagation.close())
    // Runs first on close: open revocation feed streams end before their sources do.
    closers.add(async () => revocations.endSubscriptions())

    // Anomaly rules, evaluated from the log's committed groups and the usage summaries, off the token path.
    const anomalies = openAnomalyMonitor(
      config,
      { sqlAudit: stores.sqlAudit, database: stores.database, policies: policies.store, revocations, now: nowSeconds, logger: log },
      closers,
    )

    // Revocations as Security Event Tokens, read from the durable log (none without receivers).
    const transmitter = await openSetTransmitter(config, { database: stores.database, keys, revocations, instance, clock, logger: log, metrics }, closers)
    // Human approval needs the database: the requests outlive any one instance.
    const approvals = stores.database === undefined ? undefined : createApprovalStore(stores.database.db)
    if (approvals !== undefined) {
      const stop = cancelApprovalsOnKill({ revocations, approvals, audit, now: nowSeconds, logger: log })
      closers.add(async () => stop())
    }
    const approvalPages = approvals === undefined ? undefined : await approvalPagesOf(config, keys, nowSeconds)
    const consoleSettings = await consoleOf(config, { dev: options.dev, keys, now: nowSeconds, revocations, sqlAudit: stores.sqlAudit }, closers)

    const webhooks = await openWebhookNotifier(
      config,
      { database: stores.database, revocations, audit: stores.sqlAudit, instance, clock, logger: log, approvalLinks: approvalPages?.links },
      closers,
    )

    const lifecycle = await openAgentLifecycle(
      config,
      {
        database: stores.database,
        audit,
        policies: policies.store,
        usage: stores.usageReads,
        now: nowSeconds,
        pollMs: options.filePollMs ?? 5000,
        logger: log,
      },
      closers,
    )

    const devIssuer = options.dev ? await createDevUserIssuer(config.issuer) : undefined
    const trust = buildIssuerTrust({
      ...trustedIssuersOf(config),
      localSubjects: [...(options.localSubjectIssuers ?? []), ...(devIssuer === undefined ? [] : [devIssuer])],
      localWorkloads: options.localWorkloadIssuers ?? [],
      jwksPolicy: jwksPolicyOf(config),
      clock,
      logger: log.child({ module: 'jwks' }),
    })
    const credentials = await openCredentialLedger(config, stores.database, log, closers)
    const clientKeys = await openClientKeys(config, clock, log, closers)
    const exchange = exchangeDeps(config, {
      credentials,
      clientKeys,
      keys,
      policies: policies.store,
      trust,
      admission: shared.admission,
      revocations,
      audit,
      now: nowSeconds,
      minter: options.minter,
      tracing,
      lifecycle,
    })

    // Refusals are counted and logged once per interval, never a line each.
    const refusals = createRefusals(log)
    closers.add(async () => refusals.close())
    const eventLoopLag = options.loadSignals?.eventLoopLag ?? startEventLoopMonitor(closers)
    closers.add(trust.keepFresh())

    const app = createApp({
      exchange,
      refusals,
      shedding: sheddingOf(config, {
        eventLoopLag,
        auditPending: options.loadSignals?.auditPending ?? (stores.sqlAudit === undefined ? () => 0 : stores.sqlAudit.pending.bind(stores.sqlAudit)),
        onShed: (reason) => {
          refusals.unavailable.count(`overloaded: ${reason}`)
          metrics?.requestShed(reason)
        },
      }),
      revocations,
      propagation,
      ...(trust.idJagServed ? { idJag: createIdJagVerifier({ issuers: trust.idJag, now: nowSeconds, skew: config.limits.clock_skew_seconds }) } : {}),
      userIssuers: trust.userIssuers,
      subjectLifetime: { skew: config.limits.clock_skew_seconds, maxAge: config.limits.subject_token_max_age_seconds },
      adminKeys: config.admin.keys.map((k) => ({
        name: k.name,
        sha256: Buffer.from(k.sha256, 'hex'),
        roles: new Set(k.roles),
        approver:
          k.approver === undefined
            ? undefined
            : {
                iss: k.approver.issuer,
                sub: k.approver.sub,
                names: [k.name, ...(k.approver.email === undefined ? [] : [k.approver.email])],
                groups: k.approver.groups,
                label: `${k.name} (${k.approver.sub} of ${k.approver.issuer})`,
              },
      })),
      keys,
      logger: log,
      maxBodyBytes: config.limits.max_body_bytes,
      devIssuer,
      ...(tracing === undefined ? {} : { tracing }),
      ...(metrics === undefined ? {} : { metrics }),
      ...(stores.auditQueries === undefined ? {} : { auditQueries: stores.auditQueries }),
      ...(stores.usageReads === undefined ? {} : { usageReads: stores.usageReads }),
      ...(credentials.reads === undefined ? {} : { credentialReads: credentials.reads }),
      shrinkMinTokens: config.governance.shrink_min_tokens,
      ...(stores.sqlAudit === undefined ? {} : { auditHealthy: stores.sqlAudit.probe.bind(stores.sqlAudit) }),
      readiness: {
        policyReload: () => policies.store.status(),
        keysFile: () => keys.status(),
        upstream: () => [...trust.status(), ...spiffeReadiness(clientKeys)],
        replayConnected: shared.admissionConnected,
      },
      clientAddress: clientAddressResolver(config.listen.trusted_proxies ?? []),
      authFailures: createAuthFailureThrottle(clock),
      resourceServerIds: config.resource_servers.map((rs) => rs.id),
      adminListener: config.listen.admin_port !== undefined,
      ...(transmitter === undefined ? {} : { ssf: transmitter, ssfDelivery: (r: Revocation) => transmitter.deliveryOf(r) }),
      ...(webhooks === undefined ? {} : { webhooks }),
      forwardAuth: config.forward_auth.enabled,
      lifecycle,
      ...(approvals === undefined
        ? {}
        : { approvals: { store: approvals, maxPending: config.approvals.max_pending_per_agent, pollInterval: config.approvals.poll_interval } }),
      ...(approvalPages === undefined ? {} : { approvalPages }),
      ...(consoleSettings === undefined ? {} : { console: consoleSettings }),
    })
    return {
      app,
      config,
      agents: policies.initial.length,
      revocations,
      audit,
      storage: { database: stores.engine, redis: shared.feed !== undefined },
      refusals,
      lifecycle,
      anomalies,
      approvalLinks: approvalPages?.links,
      close: () => closers.closeAll(),
    }
  } catch (err) {
    await closers.closeAll()
    throw err
  }
}

/** The measured event-loop lag, for load shedding; stopped at close. */
function startEventLoopMonitor(closers: Closers): () => number {
  const monitor = monitorEventLoopLag()
  closers.add(() => monitor.stop())
  return () => monitor.current()
}

/** The `overload` section with the signals it is measured against. */
function sheddingOf(config: Config, signals: Pick<LoadShedding, 'eventLoopLag' | 'auditPending' | 'onShed'>): LoadShedding {
  return {
    ...signals,
    maxConcurrent: config.overload.max_concurrent_requests,
    maxEventLoopLagMs: config.overload.max_event_loop_lag_ms,
    // A full group being written and a full one waiting: more means the database is not keeping up.
    maxAuditPending: config.overload.max_audit_pending ?? 2 * config.audit.group_max_records,
    retryAfterSeconds: config.overload.retry_after_seconds,
  }
}
