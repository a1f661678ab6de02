import { describe, expect, it } from 'vitest'
import { LIFECYCLE_TRANSITIONS, type AuditEvent } from '../../../src/audit/port.js'
import { encodeRecord, GENESIS_HASH } from '../../../src/audit/record.js'
import type { AgentId } from '../../../src/core/claims.js'
import { WEBHOOK_EVENT_TYPES } from '../../../src/notify/events.js'
import {
  governanceBody,
  governanceEventOf,
  governanceMessageId,
  governanceSelectors,
  governanceSlackPayload,
  governanceStandardPayload,
  LIFECYCLE_EVENTS,
} from '../../../src/notify/governance.js'
import type { LogRecord } from '../../../src/ssf/record-outbox.js'

const CHAIN = '0b5e6f1a-0000-4000-8000-000000000001'

/** A record exactly as the SQL delegation log stores it, read back as the record scan reads it. */
function stored(event: AuditEvent, seq = 7, id = 42): LogRecord {
  const { record } = encodeRecord(event, { chainId: CHAIN, seq, instance: 'test', prevHash: GENESIS_HASH })
  return { id, chain: CHAIN, seq, at: event.at, record }
}

const overdue: AuditEvent = {
  type: 'agent.lifecycle',
  at: 1_800_000_000,
  agent: 'billing-bot' as AgentId,
  transition: 'attestation_overdue',
  suspended: true,
  detail: 'last attested <!channel> & co',
}
const quarantine: AuditEvent = {
  type: 'agent.anomaly',
  at: 1_800_000_000,
  agent: 'billing-bot' as AgentId,
  rule: 'denial_burst',
  action: 'quarantine',
  detail: '25 denials in 60 s',
  revocationId: '00000000-0000-4000-8000-000000000009',
}

describe('governance events from delegation-log records', () => {
  it('tells each lifecycle transition as its own accepted webhook event type', () => {
    for (const transition of LIFECYCLE_TRANSITIONS) {
      const e = governanceEventOf(stored({ ...overdue, transition }))
      expect(e?.type).toBe(LIFECYCLE_EVENTS[transition])
      expect(WEBHOOK_EVENT_TYPES).toContain(e?.type)
    }
    expect(governanceEventOf(stored(quarantine))?.type).toBe('agent.quarantined')
    expect(governanceEventOf(stored({ ...quarantine, action: 'alert', revocationId: undefined }))?.type).toBe('agent.anomaly_alert')
  })

  it('standard payload: the record time, what happened, and where the record sits', () => {
    expect(governanceStandardPayload(governanceEventOf(stored(quarantine))!)).toEqual({
      type: 'agent.quarantined',
      timestamp: '2027-01-15T08:00:00.000Z',
      data: {
        agent: 'billing-bot',
        rule: 'denial_burst',
        action: 'quarantine',
        detail: '25 denials in 60 s',
        revocation_id: quarantine.revocationId,
        at: 1_800_000_000,
        audit: { id: 42, chain: CHAIN, seq: 7 },
      },
    })
  })

  it('slack payload: escapes the detail, so that none becomes a mention or a link', () => {
    const e = governanceEventOf(stored(overdue))!
    const { text } = governanceSlackPayload(e) as { text: string }
    expect(text).toBe('Mandate: agent billing-bot is overdue for attestation (tokens suspended): last attested &lt;!channel&gt; &amp; co')
    expect(governanceBody('slack', e)).not.toContain('<')
  })

  it('reads nothing from a record it does not know: another event type, a missing field, bad JSON', () => {
    const policy = stored({ type: 'policy.loaded', at: 1, agent: 'a' as AgentId, source: 'a.yaml', sha256: '0'.repeat(64) })
    expect(governanceEventOf(policy)).toBeUndefined()
    const lacking = stored(overdue)
    expect(governanceEventOf({ ...lacking, record: lacking.record.replace('"suspended":true,', '') })).toBeUndefined()
    expect(governanceEventOf({ ...lacking, record: '{' })).toBeUndefined()
  })

  it('message ids: one per record, event type and webhook, whoever makes them', () => {
    const a = governanceEventOf(stored(overdue))!
    const again = governanceEventOf(stored(overdue, 7, 99))!
    const next = governanceEventOf(stored(overdue, 8))!
    expect(governanceMessageId('ops', a)).toBe(governanceMessageId('ops', again))
    expect(new Set([governanceMessageId('ops', a), governanceMessageId('chat', a), governanceMessageId('ops', next)]).size).toBe(3)
    expect(governanceMessageId('ops', a)).toMatch(/^msg_[A-Za-z0-9_-]{22}$/)
  })

  it('selects only the records of the types a webhook names', () => {
    expect(governanceSelectors(['kill.created'])).toEqual([])
    expect(governanceSelectors(['agent.dormant', 'agent.orphaned', 'agent.anomaly_alert'])).toEqual([
      { event: 'agent.lifecycle', field: 'transition', values: ['orphaned', 'dormant'] },
      { event: 'agent.anomaly', field: 'action', values: ['alert'] },
    ])
  })
})
