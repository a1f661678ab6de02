/**
 * Notifications by webhook (`notifications` in the config): a SET
 * transmitter of its own (src/ssf/transmitter.ts: cursor over the revocation
 * log, outbox, lease, ordered retries) whose receivers are webhooks, with a
 * second source, the governance records of the delegation log
 * (src/ssf/record-outbox.ts). Woken by every revocation and lift the local
 * mirror applies and by every governance record this instance's delegation
 * log makes durable; records other instances write arrive by the scan.
 * Nothing runs when no webhook is configured.
 */
import { readFile } from 'node:fs/promises'
import type { SqlAuditLog } from '../audit/sql.js'
import type { Closers } from '../core/async.js'
import type { Config, WebhookConfig } from '../config/schema.js'
import type { WebhookStatus, WebhookStatuses } from '../http/routes/admin-webhooks.js'
import { webhookBody, webhookMessageId, type RevocationEventType } from '../notify/events.js'
import { governanceBody, governanceEventOf, governanceMessageId, governanceSelectors, type GovernanceEvent } from '../notify/governance.js'
import type { ApprovalLinks } from '../approvals/link.js'
import { sendWebhook, webhookSigner } from '../notify/webhook.js'
import type { RevocationService } from '../revocation/service.js'
import { createSqlSsfStore, type LogMoment, type OutboxEntry } from '../ssf/outbox.js'
import type { LogRecord } from '../ssf/record-outbox.js'
import { createTransmitter, type Receiver } from '../ssf/transmitter.js'
import type { Database } from '../storage/database.js'
import type { Logger } from '../telemetry/log.js'

export interface NotificationOptions {
  readonly database: Database | undefined
  readonly revocations: RevocationService
  /** This instance's SQL delegation log, when it writes one: governance records it makes durable wake delivery at once. */
  readonly audit?: Pick<SqlAuditLog, 'onDurable'> | undefined
  readonly instance: string
  /** Epoch milliseconds (the broker's clock). */
  readonly clock: () => number
  readonly logger: Logger
  /** The approver sign-in's links, when configured: an `approval.requested` notification carries one. */
  readonly approvalLinks?: ApprovalLinks | undefined
}

/** A webhook's stream and queue name: `:` keeps it apart from every SSF receiver's name. */
export const webhookStream = (id: string) => `webhook:${id}`

/**
 * Starts delivery and returns the webhooks' delivery state; undefined
 * without webhooks. Throws `TypeError` when webhooks are configured with no
 * SQL database (the queues live there) or a secret file is unreadable or not
 * one `whsec_` secret.
 */
export async function openWebhookNotifier(config: Config, options: NotificationOptions, closers: Closers): Promise<WebhookStatuses | undefined> {
  const { webhooks, retry, timeout_ms: timeoutMs } = config.notifications
  if (webhooks.length === 0) return undefined
  if (options.database === undefined)
    throw new TypeError('notifications.webhooks need the SQL database (PostgreSQL or PGlite), not an in-memory revocation log')
  const log = options.logger.child({ module: 'notifications' })
  const receivers: Receiver[] = []
  for (const hook of webhooks) receivers.push(await receiverOf(hook, log, options.approvalLinks))
  const store = createSqlSsfStore(options.database.db)
  const ssf = config.ssf
  const transmitter = createTransmitter({
    issuer: config.issuer,
    receivers,
    store,
    sign: () => Promise.reject(new TypeError('webhooks sign at send time')),
    instance: options.instance,
    now: () => Math.floor(options.clock() / 1000),
    retry: { maxAttempts: retry.max_attempts, maxAgeMs: retry.max_age_seconds * 1000, initialDelayMs: retry.initial_delay_ms, maxDelayMs: retry.max_delay_ms },
    pushTimeoutMs: timeoutMs,
    leaseSeconds: ssf.lease_seconds,
    scanIntervalMs: ssf.scan_interval_ms,
    graceSeconds: ssf.grace_seconds,
    longPollMaxMs: 1000,
    logger: log,
  })
  await transmitter.start()
  closers.add(() => transmitter.close())
  const unsubscribe = options.revocations.subscribe(() => transmitter.wake())
  closers.add(async () => unsubscribe())
  if (webhooks.some((h) => governanceSelectors(h.events).length > 0) && options.audit !== undefined) {
    const stopListening = options.audit.onDurable(['agent.lifecycle', 'agent.anomaly', 'approval.requested', 'approval.decided'], () => transmitter.wake())
    closers.add(async () => stopListening())
  }
  log.info({ webhooks: webhooks.map((h) => h.id) }, 'webhook notifications started')
  return {
    async list(): Promise<readonly WebhookStatus[]> {
      const states = new Map((await store.status(webhooks.map((h) => webhookStream(h.id)))).map((s) => [s.receiver, s]))
      return webhooks.map((h) => {
        const s = states.get(webhookStream(h.id))
        return {
          id: h.id,
          url: redactedUrl(h.url),
          events: h.events,
          format: h.format,
          lastSuccessAt: s?.lastSuccessAtMs,
          lastFailureAt: s?.lastFailureAtMs,
          lastFailure: s?.lastFailure,
          pending: s?.pending ?? 0,
          nextAttemptAt: s?.nextAttemptAtMs,
        }
      })
    },
  }
}

/** A webhook as a push receiver of its own entries: one per subscribed moment or governance record, the body made once, signed at each send. */
async function receiverOf(hook: WebhookConfig, log: Logger, links: ApprovalLinks | undefined): Promise<Receiver> {
  const name = webhookStream(hook.id)
  const signer = webhookSigner(await secretOf(hook.secret_file), `notifications.webhooks ${hook.id} secret_file`)
  const subscribed = (type: RevocationEventType) => (hook.events.includes(type) ? type : undefined)
  const selectors = governanceSelectors(hook.events)
  // Unreadable records this webhook already logged (`audit_log.id`), bounded.
  const unreadable = new Set<number>()
  return {
    name,
    audience: hook.url,
    start: 'now',
    delivery: {
      method: 'webhook',
      types: { created: subscribed('kill.created'), lifted: subscribed('kill.lifted') },
      entryOf: (m: LogMoment, atMs: number) => {
        const event = { type: m.lift ? ('kill.lifted' as const) : ('kill.created' as const), revocation: m.revocation, at: m.at }
        return {
          receiver: name,
          jti: webhookMessageId(hook.id, event),
          revocationId: m.revocation.id,
          // The moment's time: settled entries are pruned by it, and a lift's entry must outlive the scan window after the lift.
          revokedAt: m.at,
          ordinal: m.lift ? 1 : 0,
          eventType: event.type,
          set: webhookBody(hook.format, event),
          enqueuedAtMs: atMs,
        }
      },
      ...(selectors.length === 0
        ? {}
        : { records: { selectors, entryOf: (r: LogRecord, atMs: number) => recordEntry(hook, name, r, atMs, { log, unreadable, links }) } }),
      send: (entry, sending) => sendWebhook(hook.url, signer, entry.jti, entry.set, sending),
    },
  }
}

/** The queue entry for one governance record; undefined (logged) for a record this version cannot read: it is skipped, never sent half-read. */
async function recordEntry(
  hook: WebhookConfig,
  name: string,
  r: LogRecord,
  atMs: number,
  { log, unreadable, links }: { readonly log: Logger; readonly unreadable: Set<number>; readonly links: ApprovalLinks | undefined },
): Promise<OutboxEntry | undefined> {
  const event = governanceEventOf(r)
  if (event === undefined) {
    // Each scan rereads the grace period: logged once per record, not once per scan.
    if (!unreadable.has(r.id)) log.error({ webhook: hook.id, audit_id: r.id, chain: r.chain, seq: r.seq }, 'governance record not readable; not sent')
    if (unreadable.size >= 1_000) unreadable.clear()
    unreadable.add(r.id)
    return undefined
  }
  return {
    receiver: name,
    jti: governanceMessageId(hook.id, event),
    auditId: r.id,
    // The record's time: settled entries are pruned by it against the record cursor.
    revokedAt: r.at,
    ordinal: 0,
    eventType: event.type,
    set: governanceBody(hook.format, event, await approvalLinkOf(event, links, log)),
    enqueuedAtMs: atMs,
  }
}

/**
 * The signed one-time link to the sign-in page for an `approval.requested` event, when the sign-in is
 * configured; made once, with the entry, so every delivery of it sends the same bytes. A link that cannot
 * be signed leaves the notification without it: the approvers still hear of the request.
 */
async function approvalLinkOf(event: GovernanceEvent, links: ApprovalLinks | undefined, log: Logger): Promise<string | undefined> {
  if (links === undefined || event.kind !== 'approval' || event.type !== 'approval.requested' || event.approval.expiresAt === undefined) return undefined
  try {
    return await links.link(event.approval.id, event.approval.expiresAt)
  } catch (err) {
    log.warn({ approval: event.approval.id, cause: (err as Error).message }, 'approval link not signed; notified without it')
    return undefined
  }
}

async function secretOf(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim()
  } catch (err) {
    throw new TypeError(`notifications.webhooks secret_file ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

/** Origin and path only: a Slack incoming-webhook URL's path is itself a credential, so it is shortened, and a query never shown. */
function redactedUrl(url: string): string {
  const u = new URL(url)
  const path = u.pathname.length > 24 ? `${u.pathname.slice(0, 16)}…` : u.pathname
  return `${u.origin}${path}`
}
