/**
 * What `policy unused` decides from a window's usage: unused audiences,
 * scopes and depth, grants only ever denied, and the evidence thresholds
 * below which nothing is suggested.
 */
import { describe, expect, it } from 'vitest'
import type { AgentId } from '../../../src/core/claims.js'
import { DAY_SECONDS, unusedGrants, type WindowUsage } from '../../../src/core/least-privilege.js'
import type { AgentPolicy } from '../../../src/policy/port.js'

const NOW = 1_800_000_000
const API = 'https://api.example'
const MAIL = 'https://mail.example'
const OPTIONS = { now: NOW, windowDays: 30, minTokens: 10 }

function policy(maxDepth = 1): AgentPolicy {
  return {
    agent: 'agent-a' as AgentId,
    owner: 'team@example.com',
    purpose: 'testing',
    expires: NOW + 86_400,
    authentication: { method: 'workload_identity', issuer: 'https://workloads.test', subject: 'spiffe://test/a' },
    delegators: [],
    grants: new Map([
      [API, { audience: API, scopes: new Set(['write', 'read']), defaultScopes: ['read'] }],
      [MAIL, { audience: MAIL, scopes: new Set(['send']), defaultScopes: [] }],
    ]),
    ttl: { default: 300, max: 900 },
    delegation: { maxDepth, subAgents: new Set() },
    rateLimit: { agent: undefined, user: undefined },
    sourceHash: '0'.repeat(64),
    source: 'policies/agent-a.yaml',
  }
}

const usage = (o: Partial<WindowUsage> = {}): WindowUsage => ({
  tokens: 50,
  firstTokenAt: NOW - 60 * DAY_SECONDS,
  grants: [
    { audience: API, scope: 'read', tokens: 50, denials: 0 },
    { audience: API, scope: 'write', tokens: 0, denials: 3 },
    { audience: MAIL, scope: '', tokens: 0, denials: 2 },
  ],
  maxDepth: 0,
  ...o,
})

describe('unusedGrants', () => {
  it('names unused audiences, unused scopes of used audiences, and grants only ever denied', () => {
    const r = unusedGrants(policy(), usage(), OPTIONS)
    expect(r.noSuggestion).toBeUndefined()
    expect(r.unusedAudiences).toEqual([MAIL])
    expect(r.unusedScopes).toEqual([{ audience: API, scope: 'write' }])
    expect(r.onlyDenied).toEqual([
      { audience: API, scope: 'write', denials: 3 },
      { audience: MAIL, scope: '', denials: 2 },
    ])
    expect(r.depth).toEqual({ granted: 1, used: 1, unused: false })
  })

  it('a scope used once is not unused, nor only denied', () => {
    const grants = [...usage().grants, { audience: API, scope: 'write', tokens: 1, denials: 0 }]
    const r = unusedGrants(policy(), usage({ grants }), OPTIONS)
    expect(r.unusedScopes).toEqual([])
    expect(r.onlyDenied).toEqual([{ audience: MAIL, scope: '', denials: 2 }])
  })

  it('depth: issued tokens only directly use depth 1; a chain of 2 uses 2', () => {
    expect(unusedGrants(policy(3), usage(), OPTIONS).depth).toEqual({ granted: 3, used: 1, unused: true })
    expect(unusedGrants(policy(3), usage({ maxDepth: 2 }), OPTIONS).depth).toEqual({ granted: 3, used: 2, unused: true })
    expect(unusedGrants(policy(2), usage({ maxDepth: 2 }), OPTIONS).depth).toEqual({ granted: 2, used: 2, unused: false })
  })

  it.each([
    ['never_issued', { firstTokenAt: undefined, tokens: 0 }],
    ['younger_than_window', { firstTokenAt: NOW - 29 * DAY_SECONDS }],
    ['too_few_tokens', { tokens: 9 }],
  ] as const)('suggests nothing when %s, and still reports what was only denied', (code, o) => {
    const r = unusedGrants(policy(3), usage(o), OPTIONS)
    expect(r.noSuggestion).toBe(code)
    expect(r.noSuggestionReason).toEqual(expect.any(String))
    expect(r.unusedAudiences).toEqual([])
    expect(r.unusedScopes).toEqual([])
    expect(r.depth.unused).toBe(false)
    expect(r.onlyDenied).toHaveLength(2)
  })

  it('an agent exactly as old as the window with exactly the minimum is judged', () => {
    const r = unusedGrants(policy(), usage({ firstTokenAt: NOW - 30 * DAY_SECONDS, tokens: 10 }), OPTIONS)
    expect(r.noSuggestion).toBeUndefined()
  })
})
