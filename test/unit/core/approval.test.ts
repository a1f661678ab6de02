/**
 * The rules of human approval (src/core/approval.ts): who is entitled to
 * decide, what a poll answers in each state, how a request's RFC 9396
 * details are read and checked, and when two requests are the same action.
 */
import { describe, expect, it } from 'vitest'
import {
  actionKey,
  isEntitled,
  MAX_DETAILS,
  MAX_DETAILS_BYTES,
  parseApprovers,
  parseAuthorizationDetails,
  pollRefusal,
  type Approver,
  type DetailTypes,
} from '../../../src/core/approval.js'
import { OAuthError } from '../../../src/core/errors.js'

const request = { userIssuer: 'https://idp.example', sub: 'alice', owner: 'Finance@Example.com' }
const person = (p: Partial<Approver>): Approver => ({ names: [], groups: [], label: 'x', ...p })

describe('isEntitled', () => {
  it('user: the same issuer and sub, both', () => {
    expect(isEntitled(parseApprovers('user'), request, person({ iss: 'https://idp.example', sub: 'alice' }))).toBe(true)
    expect(isEntitled(parseApprovers('user'), request, person({ iss: 'https://other.example', sub: 'alice' }))).toBe(false)
    expect(isEntitled(parseApprovers('user'), request, person({ iss: 'https://idp.example', sub: 'bob' }))).toBe(false)
    expect(isEntitled(parseApprovers('user'), request, person({ names: ['alice'] }))).toBe(false)
  })

  it('owner: an email or key name equal to the policy owner, case and outer spaces aside', () => {
    expect(isEntitled(parseApprovers('owner'), request, person({ names: ['finance@example.com '] }))).toBe(true)
    expect(isEntitled(parseApprovers('owner'), request, person({ names: ['finance@example.co'] }))).toBe(false)
    // The user is not the owner, whoever they are.
    expect(isEntitled(parseApprovers('owner'), request, person({ iss: 'https://idp.example', sub: 'alice' }))).toBe(false)
    // Without a policy there is no owner: nobody decides as one.
    expect(isEntitled(parseApprovers('owner'), { ...request, owner: '' }, person({ names: [''] }))).toBe(false)
  })

  it('group: membership of exactly that group', () => {
    expect(isEntitled(parseApprovers('group:finance'), request, person({ groups: ['eng', 'finance'] }))).toBe(true)
    expect(isEntitled(parseApprovers('group:finance'), request, person({ groups: ['Finance', 'finance-readers'] }))).toBe(false)
  })
})

describe('pollRefusal', () => {
  const codeOf = (err: OAuthError | undefined) => err?.code
  it.each([
    ['pending', 100, 'authorization_pending'],
    ['pending', 200, 'expired_token'],
    ['approved', 100, undefined],
    ['approved', 200, 'expired_token'],
    ['denied', 100, 'access_denied'],
    ['cancelled', 100, 'access_denied'],
    ['expired', 100, 'expired_token'],
    ['issued', 100, 'invalid_grant'],
  ] as const)('%s at %i: %s', (status, now, code) => {
    expect(codeOf(pollRefusal({ status, expiresAt: 200 }, now))).toBe(code)
  })
})

describe('parseAuthorizationDetails', () => {
  const types: DetailTypes = new Map([['payment', (v: Record<string, unknown>) => (typeof v['amount'] === 'string' ? undefined : '/amount must be string')]])
  const refused = (text: string | undefined) => {
    try {
      parseAuthorizationDetails(text, types)
    } catch (err) {
      return { code: (err as OAuthError).code, description: (err as OAuthError).description, detail: (err as OAuthError).detail }
    }
    return undefined
  }

  it('absent: none; present: each detail with its type first, checked without it', () => {
    expect(parseAuthorizationDetails(undefined, undefined)).toEqual([])
    const [d] = parseAuthorizationDetails('[{"amount":"1.00","type":"payment"}]', types)
    expect(Object.keys(d!)).toEqual(['type', 'amount'])
  })

  it.each([
    ['not JSON', '{', 'authorization_details is not JSON'],
    ['an object', '{"type":"payment"}', 'authorization_details must be a non-empty array'],
    ['empty', '[]', 'authorization_details must be a non-empty array'],
    ['a string item', '["payment"]', 'each authorization detail must be an object'],
    ['null item', '[null]', 'each authorization detail must be an object'],
    ['no type', '[{"amount":"1"}]', 'each authorization detail needs a string type'],
    ['a number type', '[{"type":7}]', 'each authorization detail needs a string type'],
    ['an undeclared type', '[{"type":"wire"}]', 'authorization detail type not permitted for this audience'],
    ['outside the schema', '[{"type":"payment","amount":5}]', 'authorization detail does not fit its type'],
    [
      'too many',
      JSON.stringify(Array.from({ length: MAX_DETAILS + 1 }, () => ({ type: 'payment', amount: '1' }))),
      `authorization_details may hold at most ${MAX_DETAILS} objects`,
    ],
    ['too long', JSON.stringify([{ type: 'payment', amount: 'x'.repeat(MAX_DETAILS_BYTES) }]), 'authorization_details is too long'],
  ])('%s: invalid_authorization_details', (_what, text, description) => {
    expect(refused(text)).toMatchObject({ code: 'invalid_authorization_details', description })
  })

  it('an undeclared type is never echoed into the refusal: the client chose it', () => {
    const r = refused('[{"type":"<script>"}]')
    expect(JSON.stringify(r)).not.toContain('<script>')
  })

  it('a grant without types takes no details at all', () => {
    expect(() => parseAuthorizationDetails('[{"type":"payment","amount":"1"}]', undefined)).toThrow(OAuthError)
  })
})

describe('actionKey', () => {
  const base = { agent: 'a', userIssuer: 'i', sub: 's', audience: 'https://x', scopes: ['b', 'a'], details: [{ type: 't', x: { p: 1, q: 2 } }] }
  it('the same action whatever the order of scopes and of members', () => {
    expect(actionKey(base)).toBe(actionKey({ ...base, scopes: ['a', 'b'], details: [{ x: { q: 2, p: 1 }, type: 't' }] }))
  })
  it.each([
    ['agent', { agent: 'b' }],
    ['user', { sub: 't' }],
    ['issuer', { userIssuer: 'j' }],
    ['audience', { audience: 'https://y' }],
    ['scopes', { scopes: ['a'] }],
    ['details', { details: [{ type: 't', x: { p: 1, q: 3 } }] }],
    ['an extra detail', { details: [{ type: 't', x: { p: 1, q: 2 } }, { type: 'u' }] }],
  ])('another %s is another action', (_what, change) => {
    expect(actionKey({ ...base, ...change })).not.toBe(actionKey(base))
  })
})
