import { randomBytes } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import { describe, expect, it } from 'vitest'
import type { AgentId } from '../../../src/core/claims.js'
import { slackPayload, standardPayload, webhookBody, webhookMessageId, type RevocationEvent } from '../../../src/notify/events.js'
import { webhookSigner } from '../../../src/notify/webhook.js'

const kill: RevocationEvent = {
  type: 'kill.created',
  at: 1_800_000_000,
  revocation: {
    id: '00000000-0000-4000-8000-000000000001',
    target: { kind: 'agent', agent: 'billing-bot' as AgentId },
    reason: 'leaked <!channel> & <@U123|boss>',
    createdBy: 'oncall',
    createdAt: 1_800_000_000,
    expiresAt: undefined,
    liftedAt: undefined,
    liftedBy: undefined,
  },
}

describe('webhook payloads', () => {
  it('standard: type, RFC 3339 timestamp of the event, data without lift fields for a kill', () => {
    expect(standardPayload(kill)).toEqual({
      type: 'kill.created',
      timestamp: '2027-01-15T08:00:00.000Z',
      data: {
        revocation_id: kill.revocation.id,
        target: { kind: 'agent', agent: 'billing-bot' },
        reason: kill.revocation.reason,
        created_by: 'oncall',
        created_at: 1_800_000_000,
      },
    })
  })

  it('slack: escapes what a kill names, so that no reason becomes a mention or a link', () => {
    const { text } = slackPayload(kill) as { text: string }
    expect(text).toBe('Mandate: agent billing-bot killed by oncall: leaked &lt;!channel&gt; &amp; &lt;@U123|boss&gt;')
    expect(webhookBody('slack', kill)).not.toContain('<')
  })

  it('names an instance kill’s agent and instance', () => {
    const instanceKill: RevocationEvent = {
      ...kill,
      revocation: { ...kill.revocation, target: { kind: 'instance', agent: 'billing-bot' as AgentId, instance: 'pod-7' } },
    }
    expect((standardPayload(instanceKill)['data'] as Record<string, unknown>)['target']).toEqual({ kind: 'instance', agent: 'billing-bot', instance: 'pod-7' })
    expect((slackPayload(instanceKill) as { text: string }).text).toMatch(/^Mandate: instance pod-7 of agent billing-bot killed by oncall: /)
  })

  it('message ids: one per revocation, event type and webhook, whoever makes them', () => {
    const lift = { ...kill, type: 'kill.lifted' as const }
    expect(webhookMessageId('ops', kill)).toBe(webhookMessageId('ops', { ...kill }))
    expect(new Set([webhookMessageId('ops', kill), webhookMessageId('ops', lift), webhookMessageId('chat', kill)]).size).toBe(3)
  })
})

describe('webhookSigner', () => {
  it('takes a whsec_ secret of 24-64 bytes and signs as standardwebhooks verifies', () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`
    const body = webhookBody('standard', kill)
    const at = new Date()
    const signature = webhookSigner(secret, 'test').sign('msg_1', at, body)
    const headers = { 'webhook-id': 'msg_1', 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': signature }
    expect(() => new Webhook(secret).verify(body, headers)).not.toThrow()
    expect(() => new Webhook(`whsec_${randomBytes(32).toString('base64')}`).verify(body, headers)).toThrow()
  })

  it.each([
    ['no prefix', randomBytes(32).toString('base64')],
    ['too short', `whsec_${randomBytes(16).toString('base64')}`],
    ['too long', `whsec_${randomBytes(65).toString('base64')}`],
    ['not base64', 'whsec_not base64 at all!!!!!!!!!!!!!!!!!'],
  ])('refuses a secret with %s, without quoting it', (_, secret) => {
    expect(() => webhookSigner(secret, 'notifications.webhooks ops secret_file')).toThrow(TypeError)
    try {
      webhookSigner(secret, 'where')
    } catch (err) {
      expect((err as Error).message).not.toContain(secret.slice(6, 20))
    }
  })
})
