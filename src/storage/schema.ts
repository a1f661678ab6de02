/**
 * The durable tables, as drizzle pg-core declarations. `drizzle-kit generate`
 * turns changes here into SQL under `migrations/`, which PostgreSQL and PGlite
 * both run (migrations/README.md).
 *
 * Keep this module free of runtime imports outside drizzle-orm: drizzle-kit
 * loads it on its own, without the project's module resolution. Over 400
 * lines because it is the one file drizzle-kit diffs against the migrations'
 * snapshots: every table, declarations only.
 */
import { sql, type SQL } from 'drizzle-orm'
import { bigint, boolean, check, customType, index, integer, pgTable, primaryKey, text, timestamp, unique, uuid, type AnyPgColumn } from 'drizzle-orm/pg-core'

/** Every revocation kind, as stored in `revocations.kind` (`RevocationKind` in src/revocation/port.ts). */
export const REVOCATION_KINDS = ['jti', 'chain', 'agent', 'sub', 'agent_sub', 'instance'] as const

/**
 * `timestamptz` seen from TypeScript as epoch seconds. Written as an ISO 8601
 * UTC instant; read from PostgreSQL's ISO text output whatever the session
 * time zone, so a value comes back exactly as it went in.
 */
export const epochSeconds = customType<{ data: number; driverData: string }>({
  dataType: () => 'timestamp with time zone',
  toDriver: (seconds) => new Date(seconds * 1000).toISOString(),
  fromDriver: (value) => parseTimestamptz(value),
})

// DateStyle ISO: `2027-01-01 00:00:00[.ffffff]+hh[:mm[:ss]]`, the offset the session time zone's
// (9999-12-31T23:59:59Z is year 10000 east of UTC).
const ISO_TIMESTAMPTZ = /^(\d{4,})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(?:([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?|Z)$/

/** Epoch seconds of a `timestamptz` in PostgreSQL's ISO output. Throws `TypeError` on anything else (BC, infinity, other DateStyles). */
export function parseTimestamptz(value: string | Date): number {
  // Drivers configured by drizzle hand over text; a Date is accepted in case one does not.
  if (value instanceof Date) return value.getTime() / 1000
  const m = ISO_TIMESTAMPTZ.exec(value)
  if (m === null) throw new TypeError(`unexpected timestamptz text: ${JSON.stringify(value)}`)
  const [, y, mo, d, h, mi, s, frac, sign, oh, om, os] = m
  const date = new Date(Date.UTC(2000, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)))
  date.setUTCFullYear(Number(y)) // Date.UTC reads years 0-99 as 1900-1999
  const local = date.getTime() / 1000
  const offset = sign === undefined ? 0 : (sign === '-' ? -1 : 1) * (Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0))
  // Fractions are kept as they are: Revocation times are whole seconds, so none is expected.
  return local - offset + (frac === undefined ? 0 : Number(frac))
}

/** `kind IN (...)` with the kinds inlined, so the planner can match it to the partial indexes below. */
function kindIn(kind: AnyPgColumn, kinds: readonly string[]): SQL {
  return sql`${kind} in (${sql.raw(kinds.map((k) => `'${k}'`).join(', '))})`
}

/** Kinds that stay in force until lifted (`KILL_KINDS` in src/revocation/port.ts). */
export const isKillKind = (kind: AnyPgColumn): SQL => kindIn(kind, ['agent', 'sub', 'agent_sub', 'instance'])
/** Kinds that lapse once every affected token has expired. */
export const isTokenKind = (kind: AnyPgColumn): SQL => kindIn(kind, ['jti', 'chain'])

/**
 * The durable revocation list (every revocation is written here,
 * and Redis is re-seeded from it). Append-mostly: the one UPDATE ever made
 * sets `lifted_at`/`lifted_by`, once, on a kill.
 */
export const revocations = pgTable(
  'revocations',
  {
    id: uuid('id').primaryKey(),
    kind: text('kind', { enum: REVOCATION_KINDS }).notNull(),
    agent: text('agent'),
    sub: text('sub'),
    /** User kills: the user's issuer; null on one is "any issuer" (recorded before kills named one). */
    subIss: text('sub_iss'),
    jti: text('jti'),
    /** Instance kills: the running copy of `agent` (`act.instance`). */
    instance: text('instance'),
    reason: text('reason').notNull(),
    createdBy: text('created_by').notNull(),
    createdAt: epochSeconds('created_at').notNull(),
    expiresAt: epochSeconds('expires_at'),
    liftedAt: epochSeconds('lifted_at'),
    liftedBy: text('lifted_by'),
  },
  (t) => [
    check('revocations_kind_check', kindIn(t.kind, REVOCATION_KINDS)),
    check(
      'revocations_target_check',
      sql`case ${t.kind}
        when 'jti' then ${t.jti} is not null and ${t.agent} is null and ${t.sub} is null and ${t.subIss} is null and ${t.instance} is null
        when 'chain' then ${t.jti} is not null and ${t.agent} is null and ${t.sub} is null and ${t.subIss} is null and ${t.instance} is null
        when 'agent' then ${t.agent} is not null and ${t.sub} is null and ${t.jti} is null and ${t.subIss} is null and ${t.instance} is null
        when 'sub' then ${t.sub} is not null and ${t.agent} is null and ${t.jti} is null and (${t.subIss} is null or ${t.subIss} <> '') and ${t.instance} is null
        when 'agent_sub' then ${t.agent} is not null and ${t.sub} is not null and ${t.jti} is null and (${t.subIss} is null or ${t.subIss} <> '') and ${t.instance} is null
        when 'instance' then ${t.agent} is not null and ${t.instance} is not null and ${t.instance} <> '' and ${t.sub} is null and ${t.jti} is null and ${t.subIss} is null
        else false end`,
    ),
    // A lift names both when and who, and only a kill can be lifted.
    check(
      'revocations_lift_check',
      sql`(${t.liftedAt} is null and ${t.liftedBy} is null) or (${t.liftedAt} is not null and ${t.liftedBy} is not null and ${isKillKind(t.kind)})`,
    ),
    // `list`: newest first, keyset on (created_at, id); scanned backwards, which is
    // `desc nulls first`, the default order of `desc` (a `desc` index here would be `nulls last`).
    index('revocations_created_at_id_idx').on(t.createdAt, t.id),
    // `listRelevant`: every kill, oldest first...
    index('revocations_kills_idx').on(t.createdAt, t.id).where(isKillKind(t.kind)),
    // ...and the jti/chain entries not yet expired.
    index('revocations_token_expiry_idx').on(t.expiresAt).where(isTokenKind(t.kind)),
  ],
)

export type RevocationRow = typeof revocations.$inferSelect

/** Event types the audit log records (`AuditEventType` in src/audit/port.ts). */
export const AUDIT_EVENTS = [
  'token.issued',
  'token.denied',
  'token.withheld',
  'revocation.created',
  'revocation.lifted',
  'policy.loaded',
  'policy.unloaded',
  'key.rotated',
  'admin.revocations.read',
  'admin.audit.read',
  'admin.feed.opened',
  'admin.policy.explained',
  'agent.attested',
  'agent.lifecycle',
  'agent.anomaly',
  'approval.requested',
  'approval.decided',
  'approval.cancelled',
] as const

/**
 * The delegation log (docs/ARCHITECTURE.md "The delegation log"; src/audit/). Append-only: a
 * trigger (migration 0001) refuses UPDATE, DELETE and TRUNCATE. One hash
 * chain per writer process (`chain_id`, records numbered from 1 by `seq`):
 * `hash` = SHA-256 over `prev_hash`, a newline and `record`, the canonical
 * JSON (RFC 8785) of the whole event. The other columns repeat fields of
 * `record` for queries; `mandate audit verify` checks that they agree.
 */
export const auditLog = pgTable(
  'audit_log',
  {
    /** Commit order across chains; the keyset of `GET /admin/audit`. Not hashed. */
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    chainId: uuid('chain_id').notNull(),
    seq: bigint('seq', { mode: 'number' }).notNull(),
    at: epochSeconds('at').notNull(),
    event: text('event', { enum: AUDIT_EVENTS }).notNull(),
    instance: text('instance').notNull(),
    /** The agent that acted (the requester for token.*), when there is one. */
    agent: text('agent'),
    /** Every agent in the delegation chain, newest first; `agent` included. */
    actors: text('actors').array().notNull(),
    sub: text('sub'),
    /** Issuer of `sub` (a user is the pair), when the record names one. */
    subIss: text('sub_iss'),
    jti: text('jti'),
    parentJti: text('parent_jti'),
    rootJti: text('root_jti'),
    record: text('record').notNull(),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
  },
  (t) => [
    unique('audit_log_chain_seq_key').on(t.chainId, t.seq),
    check('audit_log_seq_check', sql`${t.seq} >= 1`),
    check('audit_log_hash_check', sql`${t.hash} ~ '^[0-9a-f]{64}$' and ${t.prevHash} ~ '^[0-9a-f]{64}$'`),
    index('audit_log_at_idx').on(t.at, t.id),
    index('audit_log_event_idx').on(t.event, t.id),
    index('audit_log_sub_idx').on(t.sub, t.id),
    index('audit_log_jti_idx').on(t.jti),
    index('audit_log_root_jti_idx').on(t.rootJti),
    index('audit_log_actors_idx').using('gin', t.actors),
    // An agent's recent denials (the inventory): only denials pay for it on the write path.
    index('audit_log_denied_agent_idx')
      .on(t.agent, t.id)
      .where(sql`${t.event} = 'token.denied'`),
    // `mandate audit show REQUEST_ID`: a denial's record by the id its answer carried (X-Request-Id,
    // `error_uri`). An expression over the record, so no column is added to what `verify` checks; denials
    // only, since on issuances it cost about 20 µs of PostgreSQL CPU per record (bench/usage-statement.ts).
    index('audit_log_denied_request_id_idx')
      .on(sql`(${t.record}::jsonb ->> 'request_id')`)
      .where(sql`${t.event} = 'token.denied'`),
  ],
)

export type AuditRow = typeof auditLog.$inferSelect

/**
 * Shared Signals streams (src/ssf/): one row per configured receiver. Its
 * cursor is the newest `revocations.created_at` turned into SETs; the lease
 * says which instance pushes to it (one at a time).
 */
export const ssfStreams = pgTable('ssf_streams', {
  receiver: text('receiver').primaryKey(),
  /** Revocations made before this are never sent (a new receiver starts from "now" unless told otherwise). */
  startAt: epochSeconds('start_at').notNull(),
  /** Newest `created_at` enqueued; the next scan starts a grace period before it. */
  cursorAt: epochSeconds('cursor_at').notNull(),
  /**
   * A webhook's second source: the newest `audit_log.at` of the governance
   * records (agent lifecycle, anomalies) it enqueued; null until the first,
   * when scans start at `start_at`. Kept apart from `cursor_at` so that one
   * source's clock never moves the other's reading point.
   */
  auditCursorAt: epochSeconds('audit_cursor_at'),
  leaseOwner: text('lease_owner'),
  /** On the database's clock, so that instances' clocks never decide who holds it. */
  leaseUntil: timestamp('lease_until', { withTimezone: true, mode: 'string' }),
  /** Delivery state for `mandate webhooks list`: epoch ms of the last accepted delivery and the last failed one, and why it failed. */
  lastSuccessAtMs: bigint('last_success_at_ms', { mode: 'number' }),
  lastFailureAtMs: bigint('last_failure_at_ms', { mode: 'number' }),
  lastFailure: text('last_failure'),
})

/** States of an outbox entry: `pending` until pushed (202) or acknowledged (poll), or given up. */
export const SSF_STATES = ['pending', 'delivered', 'failed'] as const

/**
 * Security Event Tokens made from the revocation log, per receiver, signed
 * once: a redelivery sends the same bytes. The primary key makes enqueueing
 * idempotent across instances (the jti is a hash of revocation, receiver and
 * event type).
 */
export const ssfOutbox = pgTable(
  'ssf_outbox',
  {
    /** Enqueue order, which is delivery order: a kill is enqueued as soon as it is made (whole-second `created_at` cannot order kills of one second). */
    seq: bigint('seq', { mode: 'number' }).generatedAlwaysAsIdentity(),
    receiver: text('receiver').notNull(),
    jti: text('jti').notNull(),
    /** The entry's source: a revocation (SETs, kill and lift webhooks) or a delegation-log record (governance webhooks); exactly one is set. */
    revocationId: uuid('revocation_id'),
    /** `audit_log.id` of the governance record the entry tells of. */
    auditId: bigint('audit_id', { mode: 'number' }),
    /** The moment the entry tells of: the revocation's `created_at`, a lift's `lifted_at`, or the record's `at`. */
    revokedAt: epochSeconds('revoked_at').notNull(),
    ordinal: integer('ordinal').notNull(),
    eventType: text('event_type').notNull(),
    set: text('set').notNull(),
    /** Epoch milliseconds of the enqueueing instance's wall clock: retries stop at `ssf.retry.max_age_seconds` after it. */
    enqueuedAtMs: bigint('enqueued_at_ms', { mode: 'number' }).notNull(),
    state: text('state', { enum: SSF_STATES }).notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAtMs: bigint('next_attempt_at_ms', { mode: 'number' }).notNull().default(0),
    lastError: text('last_error'),
  },
  (t) => [
    primaryKey({ columns: [t.receiver, t.jti] }),
    check('ssf_outbox_state_check', sql`${t.state} in ('pending', 'delivered', 'failed')`),
    check('ssf_outbox_source_check', sql`(${t.revocationId} is null) <> (${t.auditId} is null)`),
    // The head of a receiver's queue, and a poll's page.
    index('ssf_outbox_pending_idx')
      .on(t.receiver, t.seq)
      .where(sql`${t.state} = 'pending'`),
    // "Already enqueued?" while scanning the log.
    index('ssf_outbox_revocation_idx').on(t.receiver, t.revocationId),
    // "Already enqueued?" while scanning the delegation log for governance records.
    index('ssf_outbox_audit_idx')
      .on(t.receiver, t.auditId)
      .where(sql`${t.auditId} is not null`),
  ],
)

export type SsfOutboxRow = typeof ssfOutbox.$inferSelect

/*
 * Usage summaries of the delegation log (src/audit/usage.ts), kept by the
 * statement that writes each group of records, in its transaction: they
 * always agree with the log, and the inventory (`GET /admin/agents`) reads
 * them instead of scanning it. Days and hours are UTC, counted from the
 * epoch (`floor(at / 86400)`, `floor(at / 3600)`), so no time zone is
 * involved. `agent` is the id the record names: a denial may name an agent
 * no policy knows.
 */

/** Per agent and day: tokens issued, denials, the last issuance. */
export const agentUsageDay = pgTable(
  'agent_usage_day',
  {
    agent: text('agent').notNull(),
    day: integer('day').notNull(),
    tokens: bigint('tokens', { mode: 'number' }).notNull(),
    denials: bigint('denials', { mode: 'number' }).notNull(),
    /** Epoch seconds of the day's last `token.issued`; null while there is none. */
    lastTokenAt: bigint('last_token_at', { mode: 'number' }),
  },
  (t) => [primaryKey({ columns: [t.agent, t.day] }), index('agent_usage_day_day_idx').on(t.day)],
)

/** Per agent and hour: tokens and denials, for the trailing 24 hours exactly. */
export const agentUsageHour = pgTable(
  'agent_usage_hour',
  {
    agent: text('agent').notNull(),
    hour: integer('hour').notNull(),
    tokens: bigint('tokens', { mode: 'number' }).notNull(),
    denials: bigint('denials', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.agent, t.hour] }), index('agent_usage_hour_hour_idx').on(t.hour)],
)

/**
 * Per agent, audience, scope and day: tokens carrying that scope for that
 * audience, and denials of requests that asked for it (a denial that named
 * no scope counts under scope `''`). A grant with denials and no tokens in a
 * window was only ever denied.
 */
export const agentGrantUsageDay = pgTable(
  'agent_grant_usage_day',
  {
    agent: text('agent').notNull(),
    audience: text('audience').notNull(),
    scope: text('scope').notNull(),
    day: integer('day').notNull(),
    tokens: bigint('tokens', { mode: 'number' }).notNull(),
    denials: bigint('denials', { mode: 'number' }).notNull().default(0),
    /** Epoch seconds of the day's last `token.issued` with this grant; null while only denials were seen. */
    lastTokenAt: bigint('last_token_at', { mode: 'number' }),
  },
  (t) => [primaryKey({ columns: [t.agent, t.audience, t.scope, t.day] })],
)

/**
 * Per agent and day: the longest delegation chain (actors, RFC 8693 §4.1)
 * of any token issued that day that the agent is part of, as the requester
 * or as an ancestor. `delegation.max_depth` bounds every agent of a chain,
 * so this is the depth the agent's policy had to allow.
 */
export const agentDepthDay = pgTable(
  'agent_depth_day',
  {
    agent: text('agent').notNull(),
    day: integer('day').notNull(),
    maxDepth: integer('max_depth').notNull(),
  },
  (t) => [primaryKey({ columns: [t.agent, t.day] })],
)

/**
 * Per agent and user (issuer, `sub`): when the agent was first and last
 * issued a token for that user. Distinct users over any trailing window are
 * the rows whose `last_at` falls in it: one row per pair, `last_at` exact to the minute (src/audit/usage.ts: USER_PRECISION).
 */
export const agentUsers = pgTable(
  'agent_users',
  {
    agent: text('agent').notNull(),
    subIss: text('sub_iss').notNull(),
    sub: text('sub').notNull(),
    firstAt: bigint('first_at', { mode: 'number' }).notNull(),
    lastAt: bigint('last_at', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.agent, t.subIss, t.sub] }), index('agent_users_agent_last_idx').on(t.agent, t.lastAt)],
)

/**
 * One row per agent the lifecycle sweep has seen (src/audit/lifecycle-sql.ts): when the broker first
 * loaded its policy (an agent never attested is counted from then), its last attestation, and the
 * lifecycle conditions last recorded. `version` makes recording a transition a conditional update:
 * of instances sweeping at once, only the one whose update matched writes the `agent.lifecycle` records.
 * Times are epoch seconds.
 */
export const agentLifecycle = pgTable('agent_lifecycle', {
  agent: text('agent').primaryKey(),
  trackedSince: bigint('tracked_since', { mode: 'number' }).notNull(),
  attestedAt: bigint('attested_at', { mode: 'number' }),
  attestedBy: text('attested_by'),
  /** When the attestation recorded last said the next one is due. */
  nextDue: bigint('next_due', { mode: 'number' }),
  conditions: text('conditions')
    .array()
    .notNull()
    .default(sql`'{}'::text[]`),
  suspended: boolean('suspended').notNull().default(false),
  version: bigint('version', { mode: 'number' }).notNull().default(0),
})

/**
 * The credential ledger (src/audit/credentials.ts): when each agent
 * credential was first and last seen in use, epoch seconds. Written in
 * batches off the token path, merged with LEAST and GREATEST so that
 * instances flushing in any order agree.
 */
export const agentCredentials = pgTable(
  'agent_credentials',
  {
    agent: text('agent').notNull(),
    /** `secret` (id: its SHA-256, hex) or `key` (id: its RFC 7638 thumbprint). */
    kind: text('kind').notNull(),
    credential: text('credential').notNull(),
    firstSeen: bigint('first_seen', { mode: 'number' }).notNull(),
    lastSeen: bigint('last_seen', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.agent, t.kind, t.credential] }), check('agent_credentials_kind', sql`${t.kind} in ('secret', 'key')`)],
)

/*
 * Anomaly rules (src/governance/): what they acted on, so that every broker
 * instance acts once per agent and rule per cool-down, and the audiences
 * each agent was issued tokens for, so that a new one is known as new
 * whichever instance issued the earlier ones.
 */

/** Per agent and rule: when it last acted (epoch seconds), and the quarantine it made, if any. */
export const anomalyActions = pgTable(
  'anomaly_actions',
  {
    agent: text('agent').notNull(),
    rule: text('rule').notNull(),
    actedAt: bigint('acted_at', { mode: 'number' }).notNull(),
    /** The agent kill a `quarantine` action made: while it is in force, and for a cool-down after its lift, the rule does not act again. */
    revocationId: uuid('revocation_id'),
  },
  (t) => [primaryKey({ columns: [t.agent, t.rule] })],
)

/** Per agent and audience: when the first token for it was seen (epoch seconds). */
export const anomalyAudiences = pgTable(
  'anomaly_audiences',
  {
    agent: text('agent').notNull(),
    audience: text('audience').notNull(),
    firstAt: bigint('first_at', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.agent, t.audience] })],
)

/*
 * Human approval (OpenID CIBA, poll mode; src/approvals/): one row per
 * request an agent made at the backchannel authentication endpoint, from
 * `pending` to its decision and the one token it allowed. Times are epoch
 * seconds.
 */

export const APPROVAL_STATUSES = ['pending', 'approved', 'denied', 'expired', 'cancelled', 'issued'] as const

export const approvalRequests = pgTable(
  'approval_requests',
  {
    /** Public: what approvers, the log and the admin API name it by. */
    id: text('id').primaryKey(),
    /** SHA-256 (hex) of the `auth_req_id` the agent polls with: the handle itself is never stored. */
    handleHash: text('handle_hash').notNull().unique(),
    agent: text('agent').notNull(),
    sub: text('sub').notNull(),
    subIss: text('sub_iss').notNull(),
    audience: text('audience').notNull(),
    scopes: text('scopes').array().notNull(),
    /** RFC 9396 authorization_details as validated, JSON text (`[]` when none). */
    details: text('details').notNull(),
    /** The lifetime the agent asked for (`expires_in`), when it did. */
    requestedTtl: integer('requested_ttl'),
    /**
     * The verified user token's claims, JSON, signature dropped: the policy is evaluated again with them
     * when the token is issued. Not a credential: it cannot be presented anywhere.
     */
    subject: text('subject').notNull(),
    bindingMessage: text('binding_message'),
    /** SHA-256 (hex) of what the request asks for (core/approval.ts actionKey): an approval reused covers this exact action. */
    actionHash: text('action_hash').notNull(),
    approvers: text('approvers').notNull(),
    status: text('status', { enum: APPROVAL_STATUSES }).notNull(),
    createdAt: bigint('created_at', { mode: 'number' }).notNull(),
    expiresAt: bigint('expires_at', { mode: 'number' }).notNull(),
    /** Seconds the agent waits between polls; grows by 5 at each `slow_down` (CIBA Core §11). */
    pollInterval: integer('poll_interval').notNull(),
    lastPollAt: bigint('last_poll_at', { mode: 'number' }),
    decidedAt: bigint('decided_at', { mode: 'number' }),
    /** Who decided: an admin key's name and its person, or an IdP identity (issuer and sub). */
    decidedBy: text('decided_by'),
    decidedVia: text('decided_via', { enum: ['admin_api', 'link', 'reuse', 'revocation'] }),
    note: text('note'),
    /** The token the approval allowed. */
    issuedJti: text('issued_jti'),
  },
  (t) => [index('approval_requests_agent_status_idx').on(t.agent, t.status), index('approval_requests_action_idx').on(t.actionHash, t.decidedAt)],
)

/*
 * Approval links spent (src/approvals/link.ts): the `jti` of each signed link
 * whose decision was confirmed, so that a link decides once, on any instance.
 * Epoch seconds.
 */
export const approvalLinksUsed = pgTable('approval_links_used', {
  jti: text('jti').primaryKey(),
  usedAt: bigint('used_at', { mode: 'number' }).notNull(),
})
