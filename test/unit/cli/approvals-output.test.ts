/** What `mandate approvals` prints for people: the binding message first and unmistakable, details in one line each, nothing a terminal would interpret. */
import { describe, expect, it } from 'vitest'
import { approvalsTable, approvalTable, bindingText, detailsText, type ApprovalJson } from '../../../src/cli/approvals.js'

const approval = (over: Partial<ApprovalJson> = {}): ApprovalJson => ({
  id: 'apr_Q2xN8vKc3TmW5pYr7LdE0u',
  status: 'pending',
  agent: 'payments-agent',
  user: { iss: 'https://login.example.com', sub: 'alice' },
  audience: 'https://payments.example',
  scopes: ['payments:send'],
  authorization_details: [{ type: 'payment_initiation', amount: '120.00', currency: 'EUR', creditor: { name: 'ACME GmbH', iban: 'DE02100100109307118603' } }],
  binding_message: 'Pay ACME 120 EUR, order 4711',
  purpose: 'Pays invoices',
  owner: 'finance@example.com',
  approvers: 'user',
  created_at: '2026-12-07T15:00:00.000Z',
  expires_at: '2026-12-07T15:05:00.000Z',
  decided_at: null,
  decided_by: null,
  decided_via: null,
  note: null,
  ...over,
})

/** Control characters (C0) and the bidi override a terminal would act on. */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const RAW = /[\u0000-\u001f\u202e]/

describe('detailsText', () => {
  it('one line a detail: its type, then key=value, nested members dotted, arrays bracketed, spaced strings quoted', () => {
    expect(detailsText(approval().authorization_details)).toEqual([
      'payment_initiation: amount=120.00 currency=EUR creditor.name="ACME GmbH" creditor.iban=DE02100100109307118603',
    ])
    expect(detailsText([{ type: 'files', actions: ['read', 'delete'], paths: [{ p: '/a' }], recursive: false, limit: null }])).toEqual([
      'files: actions=[read,delete] paths=[{"p":"/a"}] recursive=false limit=null',
    ])
    expect(detailsText([{ type: 'bare' }])).toEqual(['bare'])
  })

  it('escapes what the agent wrote: no control character reaches the terminal', () => {
    const [line] = detailsText([{ type: 'x\u001b[2J', note: 'a\u202eb' }])
    expect(line).not.toMatch(RAW)
  })
})

describe('bindingText', () => {
  it('quoted as a JSON string: a quote inside cannot pass for its end; control characters and bidi overrides escaped', () => {
    expect(bindingText(approval())).toBe('"Pay ACME 120 EUR, order 4711"')
    expect(bindingText(approval({ binding_message: 'Pay 1 EUR" (approved) "x' }))).toBe('"Pay 1 EUR\\" (approved) \\"x"')
    expect(bindingText(approval({ binding_message: 'Pay \u202e10 EUR\u001b[2J' }))).not.toMatch(RAW)
    expect(bindingText(approval({ binding_message: null }))).toBe('(none)')
  })
})

describe('approvalTable', () => {
  it('the binding message on the first line, then every field, then the details', () => {
    const text = approvalTable(approval())
    const lines = text.split('\n')
    expect(lines[0]).toBe('binding message: "Pay ACME 120 EUR, order 4711"')
    for (const v of ['apr_Q2xN8vKc3TmW5pYr7LdE0u', 'pending', 'payments-agent', 'alice (https://login.example.com)', 'payments:send', 'finance@example.com'])
      expect(text).toContain(v)
    expect(lines.slice(-2)).toEqual(['authorization details:', `  ${detailsText(approval().authorization_details)[0]!}`])
  })

  it('a decision says when, by whom and through what', () => {
    const text = approvalTable(
      approval({
        status: 'approved',
        decided_at: '2026-12-07T15:01:02.000Z',
        decided_by: 'alice',
        decided_via: 'admin_api',
        note: 'ok',
        authorization_details: [],
      }),
    )
    expect(text).toContain('2026-12-07 15:01:02Z by alice via admin_api')
    expect(text.split('\n').slice(-2)).toEqual(['authorization details:', '  none'])
  })
})

describe('approvalsTable', () => {
  it('one row an approval, the binding message and details in full', () => {
    const text = approvalsTable([approval(), approval({ id: 'second', binding_message: null, authorization_details: [] })])
    expect(text).toContain('"Pay ACME 120 EUR,')
    expect(text).toContain('second')
    expect(text).toContain('(none)')
    expect(text.replace(/[│\s]+/g, ' ')).toContain('payment_initiation:')
  })

  it('at a terminal, fits its width: the binding message and the details wrap, nothing is cut short', () => {
    const long = approval({
      authorization_details: [
        {
          type: 'payment_initiation',
          amount: '120.00',
          currency: 'EUR',
          creditor: { name: 'ACME Industrial Supplies GmbH & Co. KG', iban: 'DE02100100109307118603' },
        },
      ],
    })
    for (const columns of [200, 160]) {
      const text = approvalsTable([long], columns)
      expect(Math.max(...text.split('\n').map((l) => l.length))).toBeLessThanOrEqual(columns)
      // The details column, read top to bottom, is the whole line.
      const column = text
        .split('\n')
        .slice(3, -1)
        .map((l) => l.split('│')[7]!.replace(/ /g, ''))
        .join('')
      expect(column).toBe(detailsText(long.authorization_details)[0]!.replace(/ /g, ''))
    }
  })
})
