/**
 * Notifications as webhook payloads (docs/notifications.md): the event types,
 * the Standard Webhooks body `{ type, timestamp, data }` and the Slack
 * incoming-webhook body `{ text, blocks }`. Pure: no I/O, no clock.
 */
import { createHash } from 'node:crypto'
import type { Revocation, RevocationTarget } from '../revocation/port.js'

/**
 * Every event type a webhook may subscribe to. `kill.created` and
 * `kill.lifted` come from the revocation log; the `agent.*` types from the
 * governance records of the delegation log (governance.ts): `agent.anomaly`
 * records (a quarantine, an alert) and `agent.lifecycle` records, one type
 * per transition; the `approval.*` types from the human-approval records
 * (an agent asks a person to approve one action; the person decided).
 */
export const WEBHOOK_EVENT_TYPES = [
  'kill.created',
  'kill.lifted',
  'agent.quarantined',
  'agent.anomaly_alert',
  'agent.attestation_due',
  'agent.attestation_overdue',
  'agent.expiry_near',
  'agent.expired',
  'agent.orphaned',
  'agent.dormant',
  'agent.reinstated',
  'approval.requested',
  'approval.decided',
] as const
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number]

/** The event types made from the revocation log: a revocation made, a kill lifted. */
export type RevocationEventType = Extract<WebhookEventType, 'kill.created' | 'kill.lifted'>

export type WebhookFormat = 'standard' | 'slack'

/** One revocation-log event: the record and which of its two moments. */
export interface RevocationEvent {
  readonly type: RevocationEventType
  readonly revocation: Revocation
  /** Epoch seconds: `createdAt`, or `liftedAt` for a lift. */
  readonly at: number
}

/**
 * The message id (`webhook-id`): the same for one (revocation, event type,
 * webhook) whichever instance makes it, so that a receiver drops a
 * redelivery by it (Standard Webhooks, "Idempotency"). `msg_` and 128 bits
 * of SHA-256, base64url.
 */
export function webhookMessageId(webhook: string, e: Pick<RevocationEvent, 'type' | 'revocation'>): string {
  const digest = createHash('sha256').update(`mandate-webhook\0${e.revocation.id}\0${webhook}\0${e.type}`).digest()
  return `msg_${digest.subarray(0, 16).toString('base64url')}`
}

/** The target of a revocation as JSON: only the fields its kind has. */
function targetJson(t: RevocationTarget): Record<string, unknown> {
  switch (t.kind) {
    case 'jti':
    case 'chain':
      return { kind: t.kind, jti: t.jti }
    case 'agent':
      return { kind: t.kind, agent: t.agent }
    case 'sub':
      return { kind: t.kind, iss: t.iss, sub: t.sub }
    case 'agent_sub':
      return { kind: t.kind, agent: t.agent, iss: t.iss, sub: t.sub }
    case 'instance':
      return { kind: t.kind, agent: t.agent, instance: t.instance }
  }
}

/** Standard Webhooks payload: `type`, `timestamp` (RFC 3339), `data`. The timestamp is the event's, so a redelivery sends the same bytes. */
export function standardPayload(e: RevocationEvent): Record<string, unknown> {
  const r = e.revocation
  return {
    type: e.type,
    timestamp: new Date(e.at * 1000).toISOString(),
    data: {
      revocation_id: r.id,
      target: targetJson(r.target),
      reason: r.reason,
      created_by: r.createdBy,
      created_at: r.createdAt,
      ...(e.type === 'kill.lifted' ? { lifted_by: r.liftedBy ?? null, lifted_at: r.liftedAt ?? null } : {}),
    },
  }
}

/** Slack's mrkdwn reserves `&`, `<` and `>`; everything a kill names is escaped, so that no text turns into a link or a mention. */
export function mrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function describeTarget(t: RevocationTarget): string {
  switch (t.kind) {
    case 'jti':
      return `token ${t.jti}`
    case 'chain':
      return `delegation chain ${t.jti}`
    case 'agent':
      return `agent ${t.agent}`
    case 'sub':
      return `user ${t.sub}${t.iss === null ? '' : ` (${t.iss})`}`
    case 'agent_sub':
      return `agent ${t.agent} for user ${t.sub}${t.iss === null ? '' : ` (${t.iss})`}`
    case 'instance':
      return `instance ${t.instance} of agent ${t.agent}`
  }
}

/** Slack incoming-webhook payload: `text` (the notification's fallback) and one section block. */
export function slackPayload(e: RevocationEvent): Record<string, unknown> {
  const r = e.revocation
  const what = mrkdwn(describeTarget(r.target))
  const text =
    e.type === 'kill.created'
      ? `Mandate: ${what} killed by ${mrkdwn(r.createdBy)}: ${mrkdwn(r.reason)}`
      : `Mandate: kill of ${what} lifted by ${mrkdwn(r.liftedBy ?? 'unknown')}`
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text } },
      { type: 'context', elements: [{ type: 'mrkdwn', text: `${e.type} · revocation ${r.id} · ${new Date(e.at * 1000).toISOString()}` }] },
    ],
  }
}

/** The body POSTed for `e` in `format`, as the bytes signed and sent. */
export function webhookBody(format: WebhookFormat, e: RevocationEvent): string {
  return JSON.stringify(format === 'slack' ? slackPayload(e) : standardPayload(e))
}
