/**
 * Governance notifications (docs/notifications.md): the `agent.*` webhook
 * events made from the delegation log's governance records, `agent.lifecycle`
 * (one event type per transition) and `agent.anomaly` (a quarantine, an
 * alert), their Standard Webhooks and Slack bodies, and their message ids.
 * Pure: no I/O, no clock.
 */
import { createHash } from 'node:crypto'
import { z } from 'zod'
import { LIFECYCLE_TRANSITIONS, type LifecycleTransition } from '../audit/port.js'
import type { LogRecord, RecordSelector } from '../ssf/record-outbox.js'
import { mrkdwn, type WebhookEventType, type WebhookFormat } from './events.js'

/**
 * The webhook event each lifecycle transition is told as. `expired` and
 * `reinstated` get types of their own: an agent's tokens stopping at its
 * policy's `expires` and an agent back in good standing (attested again, its
 * owner back, used again) are what an owner acts on, or stops acting on.
 */
export const LIFECYCLE_EVENTS = {
  attestation_due: 'agent.attestation_due',
  attestation_overdue: 'agent.attestation_overdue',
  expiry_near: 'agent.expiry_near',
  expired: 'agent.expired',
  orphaned: 'agent.orphaned',
  dormant: 'agent.dormant',
  reinstated: 'agent.reinstated',
} as const satisfies Record<LifecycleTransition, WebhookEventType>

/** The webhook event each anomaly action is told as: a quarantine (the agent was killed), or an alert only. */
export const ANOMALY_EVENTS = { quarantine: 'agent.quarantined', alert: 'agent.anomaly_alert' } as const satisfies Record<
  'alert' | 'quarantine',
  WebhookEventType
>

export type GovernanceEventType = (typeof LIFECYCLE_EVENTS)[LifecycleTransition] | (typeof ANOMALY_EVENTS)[keyof typeof ANOMALY_EVENTS]

/** Where the record sits in the delegation log: `GET /admin/audit` shows it under these. */
interface RecordPlace {
  readonly id: number
  readonly chain: string
  readonly seq: number
}

/** One governance event: the record it was made from, read and checked. */
export type GovernanceEvent = {
  readonly type: GovernanceEventType
  readonly record: RecordPlace
  /** Epoch seconds: the record's `at`. */
  readonly at: number
  readonly agent: string
  readonly detail: string
} & (
  | { readonly kind: 'lifecycle'; readonly transition: LifecycleTransition; readonly suspended: boolean }
  | { readonly kind: 'anomaly'; readonly rule: string; readonly action: 'alert' | 'quarantine'; readonly revocationId: string | undefined }
)

/** The selectors of the records told as any of `events`, for the record scan; empty when the webhook takes none. */
export function governanceSelectors(events: readonly string[]): RecordSelector[] {
  const told = <K extends string>(map: Record<K, string>) => (Object.keys(map) as K[]).filter((k) => events.includes(map[k]))
  const transitions = told(LIFECYCLE_EVENTS)
  const actions = told(ANOMALY_EVENTS)
  return [
    ...(transitions.length === 0 ? [] : [{ event: 'agent.lifecycle' as const, field: 'transition', values: transitions }]),
    ...(actions.length === 0 ? [] : [{ event: 'agent.anomaly' as const, field: 'action', values: actions }]),
  ]
}

// The fields a governance record holds (src/audit/record.ts writes them), checked before any is used.
const Common = { at: z.number().int(), agent: z.string().min(1), detail: z.string() }
const StoredRecord = z.discriminatedUnion('event', [
  z.object({ event: z.literal('agent.lifecycle'), ...Common, transition: z.enum(LIFECYCLE_TRANSITIONS), suspended: z.boolean() }),
  z.object({
    event: z.literal('agent.anomaly'),
    ...Common,
    rule: z.string().min(1),
    action: z.enum(['alert', 'quarantine']),
    revocation_id: z.string().optional(),
  }),
])

/** The event a governance record is told as, or undefined when it is not one this version reads. */
export function governanceEventOf(r: LogRecord): GovernanceEvent | undefined {
  let json: unknown
  try {
    json = JSON.parse(r.record)
  } catch {
    return undefined
  }
  const parsed = StoredRecord.safeParse(json)
  if (!parsed.success) return undefined
  const d = parsed.data
  const common = { record: { id: r.id, chain: r.chain, seq: r.seq }, at: d.at, agent: d.agent, detail: d.detail }
  if (d.event === 'agent.lifecycle')
    return { ...common, kind: 'lifecycle', type: LIFECYCLE_EVENTS[d.transition], transition: d.transition, suspended: d.suspended }
  return { ...common, kind: 'anomaly', type: ANOMALY_EVENTS[d.action], rule: d.rule, action: d.action, revocationId: d.revocation_id }
}

/**
 * The message id (`webhook-id`) of a governance event for one webhook: the
 * same whichever instance makes it, so that a receiver drops a redelivery by
 * it (Standard Webhooks, "Idempotency"). The record is named by its chain and
 * position, which its hash covers; `msg_` and 128 bits of SHA-256, base64url.
 */
export function governanceMessageId(webhook: string, e: Pick<GovernanceEvent, 'type' | 'record'>): string {
  const digest = createHash('sha256').update(`mandate-webhook\0audit:${e.record.chain}:${e.record.seq}\0${webhook}\0${e.type}`).digest()
  return `msg_${digest.subarray(0, 16).toString('base64url')}`
}

/** Standard Webhooks payload: `type`, `timestamp` (the record's time, RFC 3339, so a redelivery sends the same bytes), `data`. */
export function governanceStandardPayload(e: GovernanceEvent): Record<string, unknown> {
  const audit = { id: e.record.id, chain: e.record.chain, seq: e.record.seq }
  const data =
    e.kind === 'lifecycle'
      ? { agent: e.agent, transition: e.transition, suspended: e.suspended, detail: e.detail, at: e.at, audit }
      : { agent: e.agent, rule: e.rule, action: e.action, detail: e.detail, revocation_id: e.revocationId ?? null, at: e.at, audit }
  return { type: e.type, timestamp: new Date(e.at * 1000).toISOString(), data }
}

/** What happened, in words, for the Slack text. */
const LIFECYCLE_WORDS: Record<LifecycleTransition, string> = {
  attestation_due: 'is due for attestation',
  attestation_overdue: 'is overdue for attestation',
  expiry_near: 'expires soon',
  expired: 'has expired',
  orphaned: 'has lost its owner',
  dormant: 'is dormant',
  reinstated: 'is back in good standing',
}

/** Slack incoming-webhook payload: `text` (the notification's fallback) and a section and a context block; every name escaped. */
export function governanceSlackPayload(e: GovernanceEvent): Record<string, unknown> {
  const agent = mrkdwn(e.agent)
  const detail = mrkdwn(e.detail)
  const text =
    e.kind === 'lifecycle'
      ? `Mandate: agent ${agent} ${LIFECYCLE_WORDS[e.transition]}${e.suspended ? ' (tokens suspended)' : ''}: ${detail}`
      : e.action === 'quarantine'
        ? `Mandate: agent ${agent} quarantined by anomaly rule ${mrkdwn(e.rule)}: ${detail}`
        : `Mandate: anomaly on agent ${agent} (rule ${mrkdwn(e.rule)}): ${detail}`
  const context = `${e.type} · audit record ${e.record.chain}:${e.record.seq} · ${new Date(e.at * 1000).toISOString()}`
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text } },
      { type: 'context', elements: [{ type: 'mrkdwn', text: context }] },
    ],
  }
}

/** The body POSTed for `e` in `format`, as the bytes signed and sent. */
export function governanceBody(format: WebhookFormat, e: GovernanceEvent): string {
  return JSON.stringify(format === 'slack' ? governanceSlackPayload(e) : governanceStandardPayload(e))
}
