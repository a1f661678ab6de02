/**
 * The broker's metrics. Every label value comes from a bounded set the
 * broker defines, never from what a client sent: an agent is named only once
 * it authenticated (its policy's id), an audience only when the agent's
 * policy grants it. Anything else is `unauthenticated` or `other`, so that
 * nobody can grow the number of series by making up names.
 *
 * Durations are in seconds (OpenTelemetry semantic conventions).
 */
import type { Meter } from '@opentelemetry/api'

/** Agent label of a request that did not authenticate. */
export const UNAUTHENTICATED = 'unauthenticated'
/** Audience label of an audience the agent's policy does not grant (or no single audience). */
export const OTHER_AUDIENCE = 'other'

/** The endpoints whose client authentication is throttled. */
export type ThrottledEndpoint = 'token' | 'introspect' | 'revoke' | 'ssf_poll'

/** How an exchange ended: a token, a refusal (4xx), or a failure on the broker's side (5xx). */
export type ExchangeOutcome = 'issued' | 'denied' | 'failed'

/**
 * How a forward-auth decision ended: allowed; refused for no Bearer token, an
 * invalid (malformed, foreign, expired, altered, other-audience) one, a
 * revoked one, a missing scope; the revocation state unknown (503); a bad
 * query (the proxy's configuration).
 */
export type ForwardAuthOutcome =
  'allowed' | 'no_token' | 'invalid_token' | 'revoked' | 'insufficient_scope' | 'unavailable' | 'bad_request' | 'invalid_dpop_proof'

export interface MandateMetrics {
  /** `mandate.tokens.issued` {agent, audience}. */
  tokenIssued(agent: string, audience: string): void
  /** `mandate.tokens.denied` {agent, audience, error}: every request to the token endpoint answered without a token. */
  tokenDenied(agent: string, audience: string, error: string): void
  /** `mandate.exchange.duration` {outcome}, seconds. */
  exchangeDuration(seconds: number, outcome: ExchangeOutcome): void
  /** `mandate.rate_limited` {agent, limit: agent|user}: exchanges refused 429 by a policy's rate limit. */
  rateLimited(agent: string, limit: 'agent' | 'user'): void
  /** `mandate.client_auth.throttled` {endpoint}: requests refused 429 after repeated failed client authentication. */
  clientAuthThrottled(endpoint: ThrottledEndpoint): void
  /** `mandate.revocations` {kind, action}. */
  revocation(kind: string, action: 'created' | 'lifted'): void
  /** `mandate.audit.group.size` and `mandate.audit.commit.duration` {outcome: committed|failed}. */
  auditGroup(records: number, seconds: number, committed: boolean): void
  /** `mandate.revocation.mirror.lag`: observed from `lagMs` at every collection. */
  watchMirrorLag(lagMs: () => number): void
  /** `mandate.requests.shed` {reason}: requests answered 503 under overload, before any work. */
  requestShed(reason: string): void
  /** `mandate.ssf.delivered` {receiver, method}: SETs pushed (202) or acknowledged by a poll. */
  ssfDelivered(receiver: string, method: 'push' | 'poll', count: number): void
  /** `mandate.ssf.failed` {receiver, reason}: SETs given up (refused, too many attempts, too old, reported in error). */
  ssfFailed(receiver: string, reason: string, count: number): void
  /** `mandate.ssf.retried` {receiver}: pushes that failed and will be tried again. */
  ssfRetried(receiver: string): void
  /** `mandate.ssf.lag` and `mandate.ssf.pending` {receiver}: observed from `backlog` at every collection. */
  watchSsfBacklog(backlog: () => ReadonlyMap<string, { readonly pending: number; readonly lagSeconds: number }>): void
  /** `mandate.forward_auth.decisions` {outcome}: answers of /forward-auth. */
  forwardAuthDecision(outcome: ForwardAuthOutcome): void
}

/** Seconds: from a cached in-memory exchange (about a millisecond) to the audit write timeout. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
/** Records per group commit, up to `audit.group_max_records`' ceiling. */
const GROUP_SIZE_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]

export function createMetrics(meter: Meter): MandateMetrics {
  const issued = meter.createCounter('mandate.tokens.issued', { description: 'tokens issued', unit: '{token}' })
  const denied = meter.createCounter('mandate.tokens.denied', {
    description: 'token requests answered without a token, failures before client authentication included',
    unit: '{request}',
  })
  const duration = meter.createHistogram('mandate.exchange.duration', {
    description: 'time from request to answer at the token endpoint',
    unit: 's',
    advice: { explicitBucketBoundaries: LATENCY_BUCKETS },
  })
  const rateLimited = meter.createCounter('mandate.rate_limited', {
    description: 'token exchanges refused (429) by a policy rate limit',
    unit: '{request}',
  })
  const throttled = meter.createCounter('mandate.client_auth.throttled', {
    description: 'requests refused (429) without trying client authentication, after repeated failures from their address or for their client id',
    unit: '{request}',
  })
  const revocations = meter.createCounter('mandate.revocations', { description: 'revocations made and lifted on this instance', unit: '{revocation}' })
  const groupSize = meter.createHistogram('mandate.audit.group.size', {
    description: 'records per audit group commit (one INSERT)',
    unit: '{record}',
    advice: { explicitBucketBoundaries: GROUP_SIZE_BUCKETS },
  })
  const commit = meter.createHistogram('mandate.audit.commit.duration', {
    description: 'time from an audit group INSERT sent to its answer',
    unit: 's',
    advice: { explicitBucketBoundaries: LATENCY_BUCKETS },
  })
  const lag = meter.createObservableGauge('mandate.revocation.mirror.lag', {
    description: 'time since the shared revocation store was last heard from (0 without one)',
    unit: 's',
  })
  const shed = meter.createCounter('mandate.requests.shed', {
    description: 'token and introspection requests answered 503 under overload, before any work',
    unit: '{request}',
  })
  const ssfDelivered = meter.createCounter('mandate.ssf.delivered', {
    description: 'Security Event Tokens pushed (202) or acknowledged by a poll',
    unit: '{set}',
  })
  const ssfFailed = meter.createCounter('mandate.ssf.failed', { description: 'Security Event Tokens given up', unit: '{set}' })
  const ssfRetried = meter.createCounter('mandate.ssf.retried', {
    description: 'pushes of a Security Event Token that failed and will be retried',
    unit: '{push}',
  })
  const ssfLag = meter.createObservableGauge('mandate.ssf.lag', {
    description: 'age of the oldest Security Event Token not yet delivered to the receiver (0 when none)',
    unit: 's',
  })
  const ssfPending = meter.createObservableGauge('mandate.ssf.pending', {
    description: 'Security Event Tokens not yet delivered to the receiver',
    unit: '{set}',
  })
  const forwardAuth = meter.createCounter('mandate.forward_auth.decisions', {
    description: 'forward-auth answers to proxies in front of resource servers, by outcome',
    unit: '{request}',
  })
  const committed = { outcome: 'committed' } as const
  const failed = { outcome: 'failed' } as const
  const outcomes = { issued: { outcome: 'issued' }, denied: { outcome: 'denied' }, failed: { outcome: 'failed' } } as const

  return {
    tokenIssued: (agent, audience) => issued.add(1, { agent, audience }),
    tokenDenied: (agent, audience, error) => denied.add(1, { agent, audience, error }),
    exchangeDuration: (seconds, outcome) => duration.record(seconds, outcomes[outcome]),
    rateLimited: (agent, limit) => rateLimited.add(1, { agent, limit }),
    clientAuthThrottled: (endpoint) => throttled.add(1, { endpoint }),
    revocation: (kind, action) => revocations.add(1, { kind, action }),
    auditGroup(records, seconds, ok) {
      const attributes = ok ? committed : failed
      groupSize.record(records, attributes)
      commit.record(seconds, attributes)
    },
    watchMirrorLag(lagMs) {
      lag.addCallback((result) => result.observe(lagMs() / 1000))
    },
    requestShed: (reason) => shed.add(1, { reason }),
    ssfDelivered: (receiver, method, count) => ssfDelivered.add(count, { receiver, method }),
    ssfFailed: (receiver, reason, count) => ssfFailed.add(count, { receiver, reason }),
    ssfRetried: (receiver) => ssfRetried.add(1, { receiver }),
    watchSsfBacklog(backlog) {
      ssfLag.addCallback((result) => {
        for (const [receiver, b] of backlog()) result.observe(b.lagSeconds, { receiver })
      })
      ssfPending.addCallback((result) => {
        for (const [receiver, b] of backlog()) result.observe(b.pending, { receiver })
      })
    },
    forwardAuthDecision: (outcome) => forwardAuth.add(1, { outcome }),
  }
}
