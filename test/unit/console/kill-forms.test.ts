/**
 * The console's kill kinds: which one a link pre-chooses, what each needs,
 * and the admin API body each makes (its own fields only).
 */
import { describe, expect, it } from 'vitest'
import { KillFormBody, kindFromQuery, missingFields, revokeBody, targetText } from '../../../src/http/routes/console/kill-forms.js'

describe('kill forms', () => {
  it('pre-chooses the kind a link names, else the one its fields name', () => {
    expect(kindFromQuery({ agent: 'a' })).toBe('agent')
    expect(kindFromQuery({ agent: 'a', instance: 'i' })).toBe('instance')
    expect(kindFromQuery({ agent: 'a', sub: 'alice', iss: 'https://idp' })).toBe('agent_sub')
    expect(kindFromQuery({ sub: 'alice' })).toBe('sub')
    expect(kindFromQuery({ jti: 't' })).toBe('jti')
    expect(kindFromQuery({ chain: 't' })).toBe('chain')
    expect(kindFromQuery({ kind: 'sub', agent: 'a', sub: 'alice' })).toBe('sub')
    expect(kindFromQuery({ kind: 'nonsense', jti: 't' })).toBe('jti')
  })

  it('sends the admin API the chosen kind’s fields only, an empty issuer left out', () => {
    const choice = KillFormBody.parse({ kind: 'agent_sub', agent: 'a', sub: 'alice', iss: ' ', jti: 'ignored', reason: '  why  ' })
    expect(revokeBody(choice)).toEqual({ agent: 'a', sub: 'alice', reason: 'why' })
    expect(missingFields(choice)).toEqual([])
    expect(missingFields(KillFormBody.parse({ kind: 'instance', agent: 'a', reason: 'r' }))).toEqual(['instance'])
  })

  it('refuses a blank reason, an unknown kind and a field with spaces', () => {
    expect(KillFormBody.safeParse({ kind: 'agent', agent: 'a', reason: ' ' }).success).toBe(false)
    expect(KillFormBody.safeParse({ kind: 'everything', agent: 'a', reason: 'r' }).success).toBe(false)
    expect(KillFormBody.safeParse({ kind: 'agent', agent: 'a b', reason: 'r' }).success).toBe(false)
  })

  it('says a target in words', () => {
    expect(targetText('agent_sub', { agent: 'a', sub: 'alice', iss: 'https://idp' })).toBe('agent a for user alice at https://idp')
    expect(targetText('instance', { agent: 'a', instance: 'pod-1' })).toBe('instance pod-1 of agent a')
    expect(targetText('chain', { jti: 't' })).toBe('the chain from token t')
  })
})
