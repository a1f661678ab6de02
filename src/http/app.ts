/**
 * The HTTP surface: every route mounted, with the middleware before them.
 * Over 400 lines because the mount order is the matching order (Hono), and
 * the request log, error rendering and admin-listener split it depends on
 * are kept beside it; each route's own code lives in routes/.
 */
import { randomUUID } from 'node:crypto'
import { Hono, type Context, type ErrorHandler, type MiddlewareHandler, type NotFoundHandler } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { matchedRoutes } from 'hono/route'
import type { AgentId } from '../core/claims.js'
import { describeCause } from '../core/errors.js'
import type { ExchangeDeps } from '../core/exchange.js'
import type { Logger } from '../telemetry/log.js'
import { OTHER_AUDIENCE, UNAUTHENTICATED, type MandateMetrics } from '../telemetry/metrics.js'
import type { AuthFailureThrottle } from '../admission/auth-failures.js'
import { clientAuthAttempt, throttleClientAuth, type ClientAuthThrottle } from './auth-throttle.js'
import type { Tracing } from '../telemetry/tracing.js'
import type { DevUserIssuer } from '../tokens/dev-issuer.js'
import type { SigningKeys } from '../tokens/keys.js'
import type { ClientCredentials } from '../tokens/port.js'
import { AdminError, BearerError, renderError, RouteError, toOAuthError } from './oauth-errors.js'
import { devJwksDoc, devJwksRoute, devUserTokenDoc, devUserTokenRoute } from './routes/dev.js'
import { tokenRoute } from './routes/token.js'
import { bcAuthorizeRoute, cibaDeps, type ApprovalSettings } from './routes/bc-authorize.js'
import { mountAdminApprovals } from './routes/admin-approvals.js'
import { mountApprovalPages } from './routes/approval-pages.js'
import { mountConsole } from './routes/console/index.js'
import type { ConsoleSignIn } from './routes/console/sign-in.js'
import type { ConsoleSessions } from '../console/session.js'
import type { ConsoleLive } from '../console/live.js'
import { consoleCookieOf, consoleSessionAuth } from './console-auth.js'
import type { ApprovalLinks } from '../approvals/link.js'
import type { ApprovalSignIn } from '../approvals/sign-in.js'
import type { CibaDeps } from '../core/ciba.js'
import type { IdJagDeps } from '../core/id-jag.js'
import type { IdJagVerifier } from '../tokens/port.js'
import { PayloadTooLarge } from './form.js'
import { introspectRoute } from './routes/introspect.js'
import { mountForwardAuth } from './routes/forward-auth.js'
import type { TokenRoutesDeps } from './token-callers.js'
import { revokeRoute } from './routes/revoke.js'
import { mountAdminRevocations } from './routes/admin-revocations.js'
import { mountRevocationFeed } from './routes/revocation-feed.js'
import { mountRevocationPropagation } from './routes/admin-revocation-propagation.js'
import type { PropagationTracker } from '../revocation/propagation.js'
import type { SetDelivery } from '../ssf/delivery-of.js'
import type { Revocation } from '../revocation/port.js'
import { mountAdminAudit, recordAdminRead, type AuditQueries } from './routes/admin-audit.js'
import type { ExplainDeps } from '../core/explain.js'
import { mountAdminPolicy } from './routes/admin-policy.js'
import { mountAdminAgentPolicy } from './routes/admin-agent-policy.js'
import { mountAdminPolicyUnused } from './routes/admin-policy-unused.js'
import { mountAdminAgents, type AgentAttestations } from './routes/admin-agents.js'
import type { LifecycleReads } from '../core/lifecycle.js'
import type { UsageReads } from '../core/inventory.js'
import type { CredentialReads } from '../core/credential-age.js'
import type { AdminKey } from './admin-auth.js'
import type { RevocationService } from '../revocation/service.js'
import { jwksRoute, metadataRoute } from './routes/well-known.js'
import { shedLoad, type LoadShedding } from './shed.js'
import type { AdminListenerBindings, AppContext, AppEnv } from './env.js'
import type { Refusals } from '../telemetry/refusal-log.js'
import { mountHealth, type HealthDeps } from './routes/health.js'
import { mountSsf } from './routes/ssf.js'
import { mountAdminWebhooks, type WebhookStatuses } from './routes/admin-webhooks.js'
import type { SetPoller } from '../ssf/port.js'
import { bcAuthorizeSpec, described, introspectSpec, jwksDoc, metadataDoc, mountOpenApi, revokeSpec, tokenSpec } from './openapi.js'

// Kept for the CLI, which imports them from here.
export type { AdminListenerBindings, AppEnv } from './env.js'

export interface AppDeps {
  readonly exchange: ExchangeDeps
  /** The kill switch (the same object as `exchange.revocations`). */
  readonly revocations: RevocationService
  /** Issuers trusted for user subjects: a user kill names one (the only one by default). */
  readonly userIssuers: readonly string[]
  /** The subject verifier's clock rules, which `policy explain` applies to a described user token. */
  readonly subjectLifetime: ExplainDeps['subjectLifetime']
  readonly adminKeys: readonly AdminKey[]
  readonly keys: SigningKeys
  readonly logger: Logger
  readonly maxBodyBytes: number
  /** Present only under `--dev`: without it no dev route exists. */
  readonly devIssuer: DevUserIssuer | undefined
  /** Socket address of the caller, when served by @hono/node-server. */
  readonly clientAddress?: (c: import('hono').Context) => string | undefined
  /** Reads of the delegation log; without them /admin/audit does not exist (an in-memory log in tests). */
  readonly auditQueries?: AuditQueries
  /** Reads of the usage summaries; without them /admin/agents does not exist (no database). */
  readonly usageReads?: UsageReads
  /** Reads of the credential ledger, for the credentials of /admin/agents (absent: null there). */
  readonly credentialReads?: CredentialReads
  /** `governance.shrink_min_tokens`: fewest tokens in a window before GET /admin/policy/unused suggests a removal (default 100). */
  readonly shrinkMinTokens?: number
  /** Whether the delegation log can write, for /readyz. */
  readonly auditHealthy?: () => Promise<boolean>
  /** The rest of what /readyz reports: policy reloads, the keys file, issuers' key sets, the replay cache. */
  readonly readiness?: Pick<HealthDeps, 'keysFile' | 'policyReload' | 'upstream' | 'replayConnected'>
  /** A server span per request (health probes aside); absent when no traces are exported. */
  readonly tracing?: Tracing
  /** Token endpoint counters and latency; absent when no metrics are exported. */
  readonly metrics?: MandateMetrics
  /** Back-off after failed client authentication at /oauth2/token, /introspect, /revoke and /ssf/poll. */
  readonly authFailures: AuthFailureThrottle
  /** The configured resource servers' client ids: they key the back-off as agents' ids do. */
  readonly resourceServerIds: readonly string[]
  /** Where refusals are counted (outages and overload, rate limits, the back-off) instead of one log line each. */
  readonly refusals: Refusals
  /** Load shedding of the token and introspection endpoints; none without it. */
  readonly shedding?: LoadShedding
  /** GET /forward-auth and /forward-auth/ext-authz (`forward_auth.enabled`); absent: not served. */
  readonly forwardAuth?: boolean
  /**
   * The admin API has a listener of its own (`listen.admin_port`): it answers
   * only requests that came through that listener, which answers nothing else
   * but health. Without it, one listener serves every route.
   */
  readonly adminListener?: boolean
  /** Poll delivery of revocation SETs (RFC 8936); without it /ssf/poll and the SSF metadata do not exist. */
  readonly ssf?: SetPoller
  /** Where a revocation's SETs stand for each SSF receiver; absent without receivers. */
  readonly ssfDelivery?: (r: Revocation) => Promise<readonly SetDelivery[]>
  /** This instance's propagation notes: what its mirror applied and its feed streams were sent. */
  readonly propagation: PropagationTracker
  /** The webhooks' delivery state; absent: /admin/webhooks lists none. */
  readonly webhooks?: WebhookStatuses
  /** Attestations and lifecycle states for /admin/agents; absent: not shown, and no POST /admin/agents/{id}/attest. */
  readonly lifecycle?: LifecycleReads & AgentAttestations
  /** ID-JAG verification (`trust.id_jag`); absent: the JWT bearer grant is not served nor advertised. */
  readonly idJag?: IdJagVerifier
  /** Human approval (CIBA); absent (no database): no backchannel endpoint, no CIBA grant, no /admin/approvals. */
  readonly approvals?: ApprovalSettings
  /** The approver's sign-in pages (`approvals.sign_in`, with `approvals`); absent: no /approvals/* route. */
  readonly approvalPages?: { readonly links: ApprovalLinks; readonly signIn: ApprovalSignIn }
  /** The responder console (`console`); absent: no /console route, and the admin API takes admin keys only. */
  readonly console?: ConsoleSettings
}

/** What the console needs beyond the app's own dependencies (compose/console.ts). */
export interface ConsoleSettings {
  readonly sessions: ConsoleSessions
  readonly signIn: ConsoleSignIn
  readonly live?: ConsoleLive | undefined
}

/** The admin API's paths (the kill switch, the delegation log's queries), and the console, which is its client. */
const isAdminPath = (path: string) => path === '/admin' || path.startsWith('/admin/') || path === '/console' || path.startsWith('/console/')

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/
/** W3C Trace Context `traceparent`, version 00: the trace id is the second field. */
const TRACEPARENT = /^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/

/** Liveness and readiness probes come every few seconds from the orchestrator: no spans for them. */
const UNTRACED_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz'])

/**
 * The pattern of the route that answers (`/admin/revocations/:id`), or
 * undefined when none matched: app-wide middleware is registered for every
 * method (`ALL`), a route for its own.
 */
function routeOf(c: Context): string | undefined {
  const routes = matchedRoutes(c)
  for (let i = routes.length - 1; i >= 0; i--) {
    const r = routes[i]!
    if (r.method !== 'ALL') return r.path
  }
  return undefined
}

/**
 * The methods the app's routes answer at `path`, asked of its own router so
 * that `Allow` never disagrees with the routing; HEAD wherever GET is, since
 * Hono answers HEAD with the GET route. `methods`: every method some route uses.
 */
function allowedMethods(app: Hono<AppEnv>, methods: readonly string[], path: string): string[] {
  const allowed = methods.filter((method) => app.router.match(method, path)[0].some(([[, route]]) => route.method === method))
  if (allowed.includes('GET')) allowed.push('HEAD')
  return allowed
}

/** The caller's trace id when its `traceparent` is well-formed (and not all zeros), else a new one. */
export function traceIdOf(traceparent: string | undefined): string {
  const id = traceparent === undefined ? undefined : TRACEPARENT.exec(traceparent.trim())?.[1]
  // A v4 UUID's hex digits: 122 random bits from node's buffered entropy, not a fresh randomBytes call per request.
  return id !== undefined && id !== '0'.repeat(32) ? id : randomUUID().replaceAll('-', '')
}

/** The HTTP surface. Thin: parse, call the use-case, render. */
export function createApp(deps: AppDeps): Hono<AppEnv> {
  // Long, not split: the order routes and middleware are mounted in is Hono's order of matching them, read here in one place.
  const { issuer } = deps.exchange
  const log = deps.logger.child({ module: 'http' })
  const { tracing } = deps
  const app = new Hono<AppEnv>()

  app.use(requestLog(log, tracing, deps.clientAddress))
  if (deps.adminListener === true) app.use(listenerSplit)
  app.onError(errorHandler(log, deps.refusals))
  app.notFound(notFoundHandler(app))

  const limit = bodyLimit({ maxSize: deps.maxBodyBytes, onError: tooLarge })

  const clientAddress = (c: Context) => deps.clientAddress?.(c)
  const onAuditError = (err: unknown) =>
    log.error({ error: 'audit_unavailable', cause: describeCause(err) }, 'audit record lost for an action that took effect')
  const tokenDeps: TokenRoutesDeps = {
    // The exchange's verifier, so that every route shares its cache of verified tokens.
    verify: (token) => deps.exchange.subjects.verifyOwn(token),
    clients: deps.exchange.clients,
    policies: deps.exchange.policies,
    revocations: deps.revocations,
    adminKeys: deps.adminKeys,
    now: deps.exchange.now,
    onAuditError,
    maxBodyBytes: deps.maxBodyBytes,
  }

  const throttle = clientAuthThrottle(deps)
  const ciba = deps.approvals === undefined ? undefined : cibaDeps(deps.exchange, deps.approvals)
  mountOAuthEndpoints(app, deps, tokenDeps, throttle, ciba)
  app.use('/admin/*', limit)
  const consoleCookie = consoleCookieOf(issuer)
  if (deps.console !== undefined) app.use('/admin/*', consoleSessionAuth(deps.console.sessions, consoleCookie))
  mountAdminRevocations(app, {
    keys: deps.adminKeys,
    revocations: deps.revocations,
    policies: deps.exchange.policies,
    userIssuers: deps.userIssuers,
    audit: deps.exchange.audit,
    now: deps.exchange.now,
    clientAddress,
    onAuditError,
  })
  mountAdminPolicy(app, { ...deps.exchange, keys: deps.adminKeys, userIssuers: deps.userIssuers, subjectLifetime: deps.subjectLifetime })
  mountAdminAgentPolicy(app, { keys: deps.adminKeys, audit: deps.exchange.audit, policies: deps.exchange.policies, now: deps.exchange.now })
  const resourceServers = async (credentials: ClientCredentials) => {
    const caller = await deps.exchange.clients.authenticateCaller(credentials, undefined)
    await deps.exchange.clients.spend(caller)
    return caller
  }
  mountRevocationFeed(app, {
    keys: deps.adminKeys,
    resourceServers,
    maxBodyBytes: deps.maxBodyBytes,
    revocations: deps.revocations,
    recordOpen: (c) => recordAdminRead(c, deps.exchange.audit, 'admin.feed.opened', deps.exchange.now()),
    propagation: deps.propagation,
    clock: deps.propagation.clock,
  })
  mountRevocationPropagation(app, {
    keys: deps.adminKeys,
    revocations: deps.revocations,
    propagation: deps.propagation,
    ssfDelivery: deps.ssfDelivery,
    audit: deps.exchange.audit,
    now: deps.exchange.now,
  })
  if (deps.ssf !== undefined) {
    mountSsf(app, {
      issuer,
      poller: deps.ssf,
      authenticate: resourceServers,
      throttle: (c) => clientAuthAttempt(throttle, 'ssf_poll', c),
      maxBodyBytes: deps.maxBodyBytes,
      onFailure: (err) => log.warn({ error: 'temporarily_unavailable', cause: describeCause(err) }, 'SET poll failed'),
    })
  }
  mountAdminWebhooks(app, { keys: deps.adminKeys, webhooks: deps.webhooks })
  if (deps.auditQueries !== undefined) {
    mountAdminAudit(app, { keys: deps.adminKeys, audit: deps.exchange.audit, queries: deps.auditQueries, now: deps.exchange.now })
  }
  if (deps.usageReads !== undefined) {
    const { audit, now, policies } = deps.exchange
    mountAdminAgents(app, {
      keys: deps.adminKeys,
      audit,
      usage: deps.usageReads,
      policies,
      revocations: deps.revocations,
      now,
      lifecycle: deps.lifecycle,
      credentials: deps.credentialReads,
    })
    mountAdminPolicyUnused(app, { keys: deps.adminKeys, audit, usage: deps.usageReads, policies, now, minTokens: deps.shrinkMinTokens ?? 100 })
  }
  if (deps.approvals !== undefined) mountAdminApprovals(app, { ...deps.exchange, keys: deps.adminKeys, approvals: deps.approvals.store, logger: log })
  if (deps.approvals !== undefined && deps.approvalPages !== undefined) {
    app.use('/approvals/*', limit)
    mountApprovalPages(app, {
      ...deps.exchange,
      ...deps.approvalPages,
      approvals: deps.approvals.store,
      keys: deps.keys,
      logger: log,
      refusals: deps.refusals,
      maxBodyBytes: deps.maxBodyBytes,
    })
  }
  if (deps.console !== undefined) {
    app.use('/console/*', limit)
    mountConsole(app, {
      ...deps.console,
      issuer,
      cookie: consoleCookie,
      keys: deps.keys,
      now: deps.exchange.now,
      logger: log,
    })
  }
  app.get(
    '/.well-known/oauth-authorization-server',
    metadataDoc,
    metadataRoute(
      issuer,
      deps.keys,
      deps.approvals === undefined ? undefined : deps.exchange.policies,
      deps.idJag !== undefined,
      deps.exchange.dpop?.algorithms,
    ),
  )
  app.get('/.well-known/jwks.json', jwksDoc, jwksRoute(deps.keys))
  mountHealth(app, {
    revocations: deps.revocations,
    keys: deps.keys,
    policies: deps.exchange.policies,
    auditHealthy: deps.auditHealthy,
    ...deps.readiness,
  })

  if (deps.devIssuer !== undefined) {
    app.post('/dev/users/:sub/token', devUserTokenDoc, limit, devUserTokenRoute(deps.devIssuer, deps.exchange.now))
    app.get('/dev/jwks.json', devJwksDoc, devJwksRoute(deps.devIssuer))
  }
  // Last: it describes the routes registered above.
  mountOpenApi(app, { issuer })
  return app
}

/** The failed-authentication back-off of every endpoint where a client (agent or resource server) authenticates. */
function clientAuthThrottle(deps: AppDeps): ClientAuthThrottle {
  const resourceServerIds: ReadonlySet<string> = new Set(deps.resourceServerIds)
  return {
    failures: deps.authFailures,
    known: (id) => resourceServerIds.has(id) || deps.exchange.policies.get(id as AgentId) !== undefined,
    onThrottled(endpoint) {
      deps.refusals.throttled.count('back_off', endpoint)
      deps.metrics?.clientAuthThrottled(endpoint)
      // Still a token request answered without a token.
      if (endpoint === 'token') deps.metrics?.tokenDenied(UNAUTHENTICATED, OTHER_AUDIENCE, 'rate_limited')
    },
  }
}

/** The JWT bearer grant's dependencies: the exchange's, and the ID-JAG verifier when one is configured. */
function idJagDeps(deps: AppDeps): IdJagDeps | undefined {
  return deps.idJag === undefined ? undefined : { ...deps.exchange, idJag: deps.idJag }
}

/**
 * RFC 6749 token, RFC 7662 introspection, RFC 7009 revocation, with the
 * client-authentication back-off and load shedding in front of them; and
 * forward auth, which checks the same tokens for proxies.
 */
function mountOAuthEndpoints(app: Hono<AppEnv>, deps: AppDeps, tokenDeps: TokenRoutesDeps, throttle: ClientAuthThrottle, ciba: CibaDeps | undefined): void {
  if (deps.shedding !== undefined) {
    // Before the routes: a shed request is answered before its body is read.
    const shed = shedLoad(deps.shedding)
    app.use('/oauth2/token', shed)
    app.use('/oauth2/introspect', shed)
  }
  // /oauth2/* cap their bodies in readForm (on Node without building a web body stream).
  app.post(
    '/oauth2/token',
    described(
      tokenSpec,
      throttleClientAuth(throttle, 'token', tokenRoute(deps.exchange, deps.maxBodyBytes, deps.refusals.rateLimited, deps.metrics, ciba, idJagDeps(deps))),
    ),
  )
  if (ciba !== undefined) {
    if (deps.shedding !== undefined) app.use('/oauth2/bc-authorize', shedLoad(deps.shedding))
    app.post('/oauth2/bc-authorize', described(bcAuthorizeSpec, throttleClientAuth(throttle, 'token', bcAuthorizeRoute(ciba, deps.maxBodyBytes))))
  }
  app.post('/oauth2/introspect', described(introspectSpec, throttleClientAuth(throttle, 'introspect', introspectRoute(tokenDeps))))
  app.post(
    '/oauth2/revoke',
    described(revokeSpec, throttleClientAuth(throttle, 'revoke', revokeRoute({ ...tokenDeps, service: deps.revocations, audit: deps.exchange.audit }))),
  )
  if (deps.forwardAuth === true) {
    // A shedding instance of its own (its own concurrency count, no audit backlog: it writes nothing), so that a flood of
    // proxy checks is refused before its signatures are checked, yet never crowds out token requests.
    const shed = deps.shedding === undefined ? undefined : shedLoad({ ...deps.shedding, auditPending: () => 0 })
    mountForwardAuth(
      app,
      {
        verify: tokenDeps.verify,
        revocations: deps.revocations,
        admission: deps.exchange.admission,
        now: deps.exchange.now,
        ...(deps.exchange.dpop === undefined ? {} : { dpopAlgorithms: deps.exchange.dpop.algorithms }),
        ...(deps.metrics === undefined ? {} : { metrics: deps.metrics }),
      },
      shed,
    )
  }
}

/** One line per request: who, what, how it ended. Never a credential. With tracing on, its span. */
function requestLog(log: Logger, tracing: Tracing | undefined, clientAddress: AppDeps['clientAddress']): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now()
    const offered = c.req.header('x-request-id')
    const requestId = offered !== undefined && REQUEST_ID.test(offered) ? offered : randomUUID()
    c.set('requestId', requestId)
    const span =
      tracing === undefined || UNTRACED_PATHS.has(c.req.path)
        ? undefined
        : tracing.startRequest(
            c.req.method,
            routeOf(c),
            c.req.path,
            c.req.url.startsWith('https:') ? 'https' : 'http',
            c.req.header('traceparent'),
            c.req.header('tracestate'),
          )
    c.set('traceId', span?.traceId ?? traceIdOf(c.req.header('traceparent')))
    c.set('clientAddress', clientAddress?.(c))
    // Set before the response exists: Hono merges it into the one the route renders. Set after, it would
    // rebuild that response as a full WHATWG Response, off @hono/node-server's fast path.
    c.header('X-Request-Id', requestId)
    if (span === undefined) await next()
    else await span.run(next)
    const status = c.res.status
    span?.end(status, c.get('error'), c.get('agent'), c.get('jti'))
    const line = {
      request_id: requestId,
      trace_id: c.get('traceId'),
      method: c.req.method,
      path: c.req.path,
      status,
      ms: Math.round((performance.now() - started) * 100) / 100,
      agent: c.get('agent'),
      resource_server: c.get('resourceServer'),
      admin_key: c.get('adminKey'),
      jti: c.get('jti'),
      error: c.get('error'),
      shed: c.get('shed'),
    }
    // A 503 is an outage or an overload, not a bug: counted in the refusal log, not an error line each.
    if (status >= 500 && status !== 503) log.error(line, 'request')
    else log.info(line, 'request')
  }
}

/** With an admin listener: health on both listeners (each has its probe); every other route on one of them only. */
const listenerSplit: MiddlewareHandler<AppEnv> = async (c, next) => {
  const path = c.req.path
  if (UNTRACED_PATHS.has(path)) return next()
  const viaAdmin = (c.env as Partial<AdminListenerBindings> | undefined)?.listener === 'admin'
  if (isAdminPath(path) === viaAdmin) return next()
  return renderError(c, new RouteError(404, 'not_found', 'no such route on this port'))
}

/** A body over the limit: 413, from the body limit or a form reader. */
function tooLarge(c: AppContext): Response {
  c.set('error', 'invalid_request')
  return renderError(c, new RouteError(413, 'invalid_request', 'request body too large'))
}

/** Whatever a route threw, logged by its kind (never a stack or a secret value), outages counted, then rendered. */
function errorHandler(log: Logger, refusals: Refusals): ErrorHandler<AppEnv> {
  return (err, c) => {
    if (err instanceof PayloadTooLarge) return tooLarge(c)
    if (err instanceof BearerError) {
      c.set('error', err.code)
      if (err.detail !== undefined) log.debug({ request_id: c.get('requestId'), error: err.code, detail: err.detail }, 'bearer token refused')
      return renderError(c, err)
    }
    if (err instanceof AdminError) {
      c.set('error', err.code)
      if (err.code === 'temporarily_unavailable') refusals.unavailable.count(err.description)
      if (err.detail !== undefined) log.debug({ request_id: c.get('requestId'), error: err.code, detail: err.detail }, 'admin request refused')
      return renderError(c, err)
    }
    const error = toOAuthError(err)
    c.set('error', error.code)
    if (error.code === 'server_error') {
      log.error({ request_id: c.get('requestId'), error: error.code, detail: error.detail, cause: describeCause(error.cause) }, 'request failed')
    } else if (error.code === 'temporarily_unavailable') {
      // Descriptions are fixed texts: a bounded set of causes.
      refusals.unavailable.count(error.description)
      log.debug({ request_id: c.get('requestId'), error: error.code, detail: error.detail, cause: describeCause(error.cause) }, 'request failed')
    } else if (error.detail !== undefined) {
      log.debug({ request_id: c.get('requestId'), error: error.code, detail: error.detail }, 'request refused')
    }
    return renderError(c, error)
  }
}

/** No route matched: 405 with Allow where another method would be answered (RFC 9110 §15.5.6), else 404. */
function notFoundHandler(app: Hono<AppEnv>): NotFoundHandler<AppEnv> {
  // Read at the first miss, once every route is registered; middleware is registered as `ALL`.
  let routeMethods: readonly string[] | undefined
  return (c) => {
    routeMethods ??= [...new Set(app.routes.map((r) => r.method).filter((m) => m !== 'ALL'))]
    const allow = allowedMethods(app, routeMethods, c.req.path)
    if (allow.length === 0) return renderError(c, new RouteError(404, 'not_found', 'no such route'))
    c.set('error', 'method_not_allowed')
    return renderError(c, new RouteError(405, 'method_not_allowed', 'method not allowed on this route', allow))
  }
}
