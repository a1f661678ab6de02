/** What the CLI prints for people: nothing a terminal would interpret, nothing cut short. */
import { describe, expect, it } from 'vitest'
import { revocationsTable, revocationTable, wrap, type RevocationJson } from '../../../src/cli/output.js'
import { printable } from '../../../src/cli/printable.js'

const record = (over: Partial<RevocationJson> = {}): RevocationJson => ({
  id: 'b4df4ccb-1b47-43f6-ad8c-91be5b9f8260',
  kind: 'sub',
  target: { sub: 'alice', iss: 'https://login.example.com/tenants/0f9e8d7c-6b5a-4938-2716-0a1b2c3d4e5f/v2.0' },
  reason: 'phished',
  created_by: 'oncall',
  created_at: '2026-12-07T01:32:57.000Z',
  expires_at: null,
  in_force: true,
  lifted_at: null,
  lifted_by: null,
  ...over,
})

describe('printable', () => {
  it('shows escape sequences, other control characters and bidi overrides as \\u escapes', () => {
    expect(printable('ok\u001b[2J\u001b]0;owned\u0007 \r\n\u009b\u202eevil\u2066')).toBe(
      'ok\\u001b[2J\\u001b]0;owned\\u0007 \\u000d\\u000a\\u009b\\u202eevil\\u2066',
    )
    expect(printable('plain text, ü, 漢字 and the ’ quote')).toBe('plain text, ü, 漢字 and the ’ quote')
  })
})

describe('wrap', () => {
  it('wraps at spaces and breaks a word longer than the width instead of cutting it', () => {
    const url = 'https://login.example.com/tenants/0f9e8d7c-6b5a-4938-2716-0a1b2c3d4e5f/v2.0'
    const lines = wrap(`sub=alice iss=${url}`, 20).split('\n')
    expect(lines.every((l) => l.length <= 20)).toBe(true)
    expect(lines[0]).toBe('sub=alice')
    expect(lines.slice(1).join('')).toBe(`iss=${url}`)
  })
})

describe('tables', () => {
  it('a record table holds every field, none cut short, and no control character of the reason', () => {
    const out = revocationTable(record({ reason: 'phished\u001b[8m hidden' }))
    for (const part of ['b4df4ccb-1b47-43f6-ad8c-91be5b9f8260', 'sub=alice', 'oncall', 'in force']) expect(out).toContain(part)
    expect(out.replace(/[│\s]/g, '')).toContain('iss=https://login.example.com/tenants/0f9e8d7c-6b5a-4938-2716-0a1b2c3d4e5f/v2.0')
    expect(out).not.toContain('\u001b')
    expect(out).toContain('phished\\u001b[8m hidden')
  })

  it('a list fits a 132-column terminal by wrapping target and reason, and shows a lifted kill and a token revocation for what they are', () => {
    const list = [
      record({ reason: 'a reason long enough to need more than one line in a table that must fit eighty columns' }),
      record({ kind: 'agent', target: { agent: 'demo-agent' }, in_force: false, lifted_at: '2026-12-07T02:00:00.000Z', lifted_by: 'oncall' }),
      record({ kind: 'jti', target: { jti: 'j-1' }, in_force: null, expires_at: '2026-12-07T03:00:00.000Z' }),
    ]
    const out = revocationsTable(list, 132)
    expect(Math.max(...out.split('\n').map((l) => l.length))).toBeLessThanOrEqual(132)
    expect(out).toMatch(/│ lifted +│[^\n]*\n[^\n]*│ 2026-12-07 02:00:00Z +│[^\n]*\n[^\n]*│ by oncall +│/)
    expect(out).toMatch(/│ until +│[^\n]*\n[^\n]*│ 2026-12-07 03:00:00Z +│/)
    // Read back column by column: the first row's cells, line after line.
    const firstRow = out.split('\n').slice(3).join('\n').split(/\n├/)[0]!.split('\n')
    const column = (i: number) => firstRow.map((l) => l.split('│')[i]!.trim()).filter(Boolean)
    expect(column(6).join(' ')).toBe('a reason long enough to need more than one line in a table that must fit eighty columns')
    expect(column(3).join('')).toBe('sub=aliceiss=https://login.example.com/tenants/0f9e8d7c-6b5a-4938-2716-0a1b2c3d4e5f/v2.0')
  })
})

describe('revoke status', () => {
  it('says whether it is complete, what has not got it yet, and escapes what the broker sent', async () => {
    const { propagationTable } = await import('../../../src/cli/propagation-output.js')
    const text = propagationTable({
      revocation_id: 'b4df4ccb-1b47-43f6-ad8c-91be5b9f8260',
      kind: 'agent',
      created_at: '2026-12-07T01:32:57.000Z',
      checked_at: '2026-12-07T01:33:00.000Z',
      complete: false,
      instances: [
        { instance: 'broker-a', live: true, applied_at: '2026-12-07T01:32:57.010Z', last_seen: '2026-12-07T01:32:59.000Z' },
        { instance: 'broker-b', live: true, applied_at: null, last_seen: '2026-12-07T01:32:58.000Z' },
      ],
      feed_subscribers: [{ subscriber: 'rs/\u001b[2Japi', connection: 'c1', instance: 'broker-a', connected_at: '2026-12-07T01:00:00.000Z', sent_at: null }],
      ssf_receivers: [{ receiver: 'siem', method: 'push', state: 'failed', attempts: 5, last_error: 'HTTP 500', enqueued_at: '2026-12-07T01:32:57.000Z' }],
    })
    expect(text.split('\n')[0]).toBe('agent b4df4ccb-1b47-43f6-ad8c-91be5b9f8260 made 2026-12-07 01:32:57Z: NOT COMPLETE (checked 2026-12-07 01:33:00Z)')
    expect(text).toMatch(/broker-b\s+│ yes\s+│ NOT YET/)
    expect(text).toContain('rs/\\u001b[2Japi')
    expect(text).not.toContain('\u001b')
    expect(text).toMatch(/siem\s+│ push\s+│ failed\s+│ 5\s+│ HTTP 500/)
  })
})
