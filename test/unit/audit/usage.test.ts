/**
 * The usage summaries' rows for a group (src/audit/usage.ts), and the user
 * rows a writer leaves out because it committed them within the last minute:
 * distinct users are counted to the minute, first sightings always written.
 */
import { describe, expect, it } from 'vitest'
import type { AuditEvent } from '../../../src/audit/port.js'
import { RecentUsers, USER_PRECISION, usageParams } from '../../../src/audit/usage.js'

const T0 = 1_800_000_000

function issued(agent: string, sub: string, at: number): AuditEvent {
  return {
    type: 'token.issued',
    at,
    agent,
    sub,
    subIssuer: 'https://idp.example',
    actors: [agent],
    jti: `j-${agent}-${sub}-${at}`,
    rootJti: `j-${agent}-${sub}-${at}`,
    audience: 'https://api.example',
    scopes: ['read'],
    expiresAt: at + 300,
    policyHash: 'ab'.repeat(32),
  } as unknown as AuditEvent
}

/** The user rows a group writes, as `agent/sub@first-last`. */
function userRows(events: AuditEvent[], recent?: RecentUsers): string[] {
  const { params, users } = usageParams(events, recent)
  // The statement's user columns (agent, iss, sub, first, last) are parameters 15..19.
  const [agents, , subs, firsts, lasts] = params.slice(15, 20) as [string[], string[], string[], number[], number[]]
  const rows = agents.map((a, i) => `${a}/${subs[i]!}@${firsts[i]! - T0}-${lasts[i]! - T0}`)
  expect(users.map((u) => `${u.agent}/${u.sub}@${u.first - T0}-${u.last - T0}`)).toEqual(rows)
  return rows
}

describe('user summary rows', () => {
  it('one row per (agent, user) in a group, spanning its first and last token', () => {
    expect(userRows([issued('a', 'u1', T0), issued('a', 'u1', T0 + 5), issued('b', 'u1', T0 + 1), issued('a', 'u2', T0 + 2)])).toEqual([
      'a/u1@0-5',
      'b/u1@1-1',
      'a/u2@2-2',
    ])
  })

  it('leaves out a pair the writer committed less than the precision before, and writes it again after', () => {
    const recent = new RecentUsers()
    recent.remember(usageParams([issued('a', 'u1', T0)], recent).users)
    expect(userRows([issued('a', 'u1', T0 + 30), issued('a', 'u2', T0 + 30)], recent)).toEqual(['a/u2@30-30'])
    expect(userRows([issued('a', 'u1', T0 + USER_PRECISION - 1)], recent)).toEqual([])
    expect(userRows([issued('a', 'u1', T0 + USER_PRECISION)], recent)).toEqual([`a/u1@${USER_PRECISION}-${USER_PRECISION}`])
  })

  it('writes rows a failed group never committed: only remembered rows are left out', () => {
    const recent = new RecentUsers()
    usageParams([issued('a', 'u1', T0)], recent)
    expect(userRows([issued('a', 'u1', T0 + 1)], recent)).toEqual(['a/u1@1-1'])
  })

  it('writes a token older than the committed last_at (a clock step back), so first_at stays exact', () => {
    const recent = new RecentUsers()
    recent.remember(usageParams([issued('a', 'u1', T0)], recent).users)
    expect(userRows([issued('a', 'u1', T0 - 10)], recent)).toEqual(['a/u1@-10--10'])
  })

  it('forgets pairs after two precisions, and past its bound writes every row', () => {
    const recent = new RecentUsers(1)
    recent.remember(usageParams([issued('a', 'u1', T0), issued('a', 'u2', T0)], recent).users)
    expect(userRows([issued('a', 'u1', T0 + 1), issued('a', 'u2', T0 + 1)], recent)).toEqual(['a/u2@1-1'])
    recent.remember(usageParams([issued('z', 'z', T0 + USER_PRECISION)], recent).users)
    recent.remember(usageParams([issued('z', 'z', T0 + 2 * USER_PRECISION)], recent).users)
    expect(userRows([issued('a', 'u1', T0 + 2 * USER_PRECISION + 1)], recent)).toEqual([`a/u1@${2 * USER_PRECISION + 1}-${2 * USER_PRECISION + 1}`])
  })
})
