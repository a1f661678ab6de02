import type { MiddlewareHandler } from 'hono'
import { OAuthError } from '../core/errors.js'
import type { AppEnv, ShedReason } from './env.js'
import { renderError } from './oauth-errors.js'

export interface LoadShedding {
  /** Milliseconds the event loop runs behind (telemetry/event-loop.ts). */
  readonly eventLoopLag: () => number
  /** Delegation log records appended and not yet committed (0 without a durable log). */
  readonly auditPending: () => number
  /** Requests of the shed routes being handled at once, beyond which one more is shed. */
  readonly maxConcurrent: number
  readonly maxEventLoopLagMs: number
  readonly maxAuditPending: number
  readonly retryAfterSeconds: number
  /** Told of every request shed (metrics and the aggregated log hang here). Must not throw. */
  readonly onShed: (reason: ShedReason) => void
}

/** What a shed request is told, whatever the reason (the reason is for metrics and logs). */
export const OVERLOADED = 'the broker is overloaded; try again'

/**
 * Load shedding for endpoints whose work is mostly crypto and that a client
 * simply retries. A request is answered 503 `temporarily_unavailable` (RFC
 * 6749 §5.2) with `Retry-After` (RFC 9110 §10.2.3) at once, before its body
 * is read or any signature checked, while `maxConcurrent` requests of these
 * routes are already being handled (the work queued on the loop and the
 * thread pool stays bounded, whatever the arrival rate), or the event loop
 * runs more than `maxEventLoopLagMs` behind while at least a quarter of
 * `maxConcurrent` are being handled, or the delegation log has more than
 * `maxAuditPending` records waiting for their commit. An overload then costs
 * little more than the answers. A lagging loop with few of these requests in
 * flight is not theirs to relieve (an instance warming up, a pause, a host
 * short of CPU): shedding them would refuse clients and change nothing. Mount it only on such routes, and on
 * every route that counts towards `maxConcurrent` with the same instance:
 * the kill switch (admin API, /oauth2/revoke), the revocation feed and the
 * health probes must keep answering under any load.
 */
export function shedLoad(options: LoadShedding): MiddlewareHandler<AppEnv> {
  const refusal = new OAuthError('temporarily_unavailable', OVERLOADED, { retryAfter: options.retryAfterSeconds })
  const busy = Math.floor(options.maxConcurrent / 4)
  let inFlight = 0
  return async function shed(c, next) {
    const reason: ShedReason | undefined =
      inFlight >= options.maxConcurrent
        ? 'concurrency'
        : inFlight >= busy && options.eventLoopLag() > options.maxEventLoopLagMs
          ? 'event_loop_lag'
          : options.auditPending() > options.maxAuditPending
            ? 'audit_backlog'
            : undefined
    if (reason !== undefined) {
      options.onShed(reason)
      c.set('shed', reason)
      c.set('error', refusal.code)
      return renderError(c, refusal)
    }
    inFlight++
    try {
      await next()
    } finally {
      inFlight--
    }
  }
}
