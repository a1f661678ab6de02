/**
 * The lifecycle evaluation, pure, against a clock: when an attestation is
 * due and overdue (with its grace), expiry warnings, dormancy (counted from
 * the first load for an agent never used, reset by an attestation), orphans,
 * which conditions suspend under which settings, the transitions between two
 * evaluations, and the token endpoint's refusal from memory.
 */
import { describe, expect, it } from 'vitest'
import type { AgentId } from '../../../src/core/claims.js'
import { ANOMALY_ACTOR } from '../../../src/core/anomaly.js'
import { OAuthError } from '../../../src/core/errors.js'
import { stateOf, NO_USAGE } from '../../../src/core/inventory.js'
import {
  attestationDue,
  evaluateLifecycle,
  standingRefusal,
  transitionsOf,
  WARN_AHEAD,
  type LifecycleFacts,
  type LifecycleSettings,
} from '../../../src/core/lifecycle.js'
import type { AgentPolicy } from '../../../src/policy/port.js'
import type { Revocation } from '../../../src/revocation/port.js'

const DAY = 86_400
const T0 = 1_800_000_000
const WARN: LifecycleSettings = { attestationGrace: 7 * DAY, dormantAfter: 90 * DAY, onDormant: 'warn', onOrphan: 'warn' }
const SUSPEND: LifecycleSettings = { ...WARN, onDormant: 'suspend', onOrphan: 'suspend' }

function policy(o: { attestEvery?: number; expires?: number } = {}): AgentPolicy {
  return {
    agent: 'agent-a' as AgentId,
    owner: 'Owner@Example.com',
    purpose: 'testing',
    expires: o.expires ?? T0 + 365 * DAY,
    authentication: { method: 'workload_identity', issuer: 'https://workloads.test', subject: 'spiffe://test/agent-a' },
    delegators: [],
    grants: new Map(),
    ttl: { default: 300, max: 900 },
    delegation: { maxDepth: 1, subAgents: new Set() },
    rateLimit: { agent: undefined, user: undefined },
    ...(o.attestEvery === undefined ? {} : { attestEvery: o.attestEvery }),
    sourceHash: '0'.repeat(64),
    source: 'policies/agent-a.yaml',
  }
}

const facts = (o: Partial<LifecycleFacts> = {}): LifecycleFacts => ({
  trackedSince: T0,
  attestedAt: undefined,
  attestedBy: undefined,
  lastTokenAt: T0,
  ownerListed: undefined,
  ...o,
})

describe('evaluateLifecycle', () => {
  const every90 = policy({ attestEvery: 90 * DAY })

  it('counts the first attestation from the first load, the next from the last attestation', () => {
    expect(attestationDue(every90, { trackedSince: T0, attestedAt: undefined })).toBe(T0 + 90 * DAY)
    expect(attestationDue(every90, { trackedSince: T0, attestedAt: T0 + 50 * DAY })).toBe(T0 + 140 * DAY)
    expect(attestationDue(policy(), { trackedSince: T0, attestedAt: undefined })).toBeUndefined()
  })

  it('warns 14 days ahead, keeps warning through the grace, then is overdue and suspends', () => {
    const at = (t: number) => evaluateLifecycle(every90, facts({ lastTokenAt: t }), WARN, t)
    expect(at(T0 + 90 * DAY - WARN_AHEAD - 1).conditions).toEqual([])
    expect(at(T0 + 90 * DAY - WARN_AHEAD).conditions).toEqual(['attestation_due'])
    expect(at(T0 + 90 * DAY + 7 * DAY - 1)).toMatchObject({ conditions: ['attestation_due'], suspended: false })
    expect(at(T0 + 97 * DAY)).toMatchObject({ conditions: ['attestation_overdue'], suspended: true, nextDue: T0 + 90 * DAY })
    // Attested: good for another 90 days.
    expect(evaluateLifecycle(every90, facts({ attestedAt: T0 + 97 * DAY, lastTokenAt: T0 + 97 * DAY }), WARN, T0 + 97 * DAY).conditions).toEqual([])
  })

  it('warns of expiry 14 days ahead and suspends once expired', () => {
    const p = policy({ expires: T0 + 20 * DAY })
    expect(evaluateLifecycle(p, facts(), WARN, T0 + 5 * DAY).conditions).toEqual([])
    expect(evaluateLifecycle(p, facts(), WARN, T0 + 6 * DAY)).toMatchObject({ conditions: ['expiry_near'], suspended: false })
    expect(evaluateLifecycle(p, facts(), WARN, T0 + 20 * DAY)).toMatchObject({ conditions: ['expired'], suspended: true })
  })

  it('finds an agent dormant after dormant_after without a token, counting a never-used one from its first load', () => {
    expect(evaluateLifecycle(policy(), facts({ lastTokenAt: T0 }), WARN, T0 + 90 * DAY).conditions).toEqual([])
    expect(evaluateLifecycle(policy(), facts({ lastTokenAt: T0 }), WARN, T0 + 90 * DAY + 1)).toMatchObject({ conditions: ['dormant'], suspended: false })
    expect(evaluateLifecycle(policy(), facts({ lastTokenAt: undefined }), WARN, T0 + 91 * DAY).conditions).toEqual(['dormant'])
    expect(evaluateLifecycle(policy(), facts({ lastTokenAt: undefined }), SUSPEND, T0 + 91 * DAY).suspended).toBe(true)
    // An attestation counts as activity: it reinstates a dormant agent.
    expect(evaluateLifecycle(policy(), facts({ attestedAt: T0 + 90 * DAY }), SUSPEND, T0 + 91 * DAY).conditions).toEqual([])
  })

  it('orphans an agent whose owner the directory does not list, and suspends it only under suspend', () => {
    expect(evaluateLifecycle(policy(), facts({ ownerListed: false }), WARN, T0)).toMatchObject({ conditions: ['orphaned'], suspended: false })
    expect(evaluateLifecycle(policy(), facts({ ownerListed: false }), SUSPEND, T0)).toMatchObject({ conditions: ['orphaned'], suspended: true })
    expect(evaluateLifecycle(policy(), facts({ ownerListed: true }), SUSPEND, T0).conditions).toEqual([])
  })
})

describe('transitionsOf', () => {
  const every90 = policy({ attestEvery: 90 * DAY })

  it('names each condition entered once, and reinstated when a suspension ends', () => {
    const due = evaluateLifecycle(every90, facts({ lastTokenAt: T0 + 80 * DAY }), WARN, T0 + 80 * DAY)
    const first = transitionsOf({ conditions: [], suspended: false }, due, every90, facts(), WARN)
    expect(first.map((t) => [t.transition, t.suspended])).toEqual([['attestation_due', false]])
    // Evaluated again, nothing changed: nothing to record.
    expect(transitionsOf({ conditions: due.conditions, suspended: due.suspended }, due, every90, facts(), WARN)).toEqual([])
    const overdue = evaluateLifecycle(every90, facts({ lastTokenAt: T0 + 97 * DAY }), WARN, T0 + 97 * DAY)
    const second = transitionsOf(due, overdue, every90, facts(), WARN)
    expect(second.map((t) => [t.transition, t.suspended])).toEqual([['attestation_overdue', true]])
    expect(second[0]!.detail).toMatch(/no tokens until the owner attests/)
    const attested = evaluateLifecycle(every90, facts({ attestedAt: T0 + 98 * DAY, lastTokenAt: T0 + 97 * DAY }), WARN, T0 + 98 * DAY)
    expect(transitionsOf(overdue, attested, every90, facts(), WARN).map((t) => [t.transition, t.suspended])).toEqual([['reinstated', false]])
  })
})

describe('standingRefusal', () => {
  const every90 = policy({ attestEvery: 90 * DAY })
  const standing = { trackedSince: T0, attestedAt: undefined, attestedBy: undefined, dormant: false }

  it('refuses an overdue attestation with unauthorized_client, only past the grace', () => {
    expect(standingRefusal(every90, standing, undefined, WARN, T0 + 97 * DAY - 1)).toBeUndefined()
    const refused = standingRefusal(every90, standing, undefined, WARN, T0 + 97 * DAY)
    expect(refused).toBeInstanceOf(OAuthError)
    expect(refused).toMatchObject({ code: 'unauthorized_client', description: 'attestation overdue' })
    expect(standingRefusal(every90, { ...standing, attestedAt: T0 + 96 * DAY }, undefined, WARN, T0 + 97 * DAY)).toBeUndefined()
  })

  it('refuses dormant and orphaned agents only under suspend', () => {
    expect(standingRefusal(policy(), { ...standing, dormant: true }, undefined, WARN, T0)).toBeUndefined()
    expect(standingRefusal(policy(), { ...standing, dormant: true }, undefined, SUSPEND, T0)).toMatchObject({ description: 'agent dormant' })
    expect(standingRefusal(policy(), standing, false, WARN, T0)).toBeUndefined()
    expect(standingRefusal(policy(), standing, false, SUSPEND, T0)).toMatchObject({ code: 'unauthorized_client', description: 'agent orphaned' })
  })
})

describe('inventory states', () => {
  const kill = (reason: string, createdBy = 'responder'): Revocation =>
    ({ id: 'k', target: { kind: 'agent', agent: 'agent-a' }, reason, createdBy, createdAt: T0, liftedAt: undefined }) as unknown as Revocation

  it('says quarantined for a quarantine kill, then attestation_overdue and orphaned from the lifecycle', () => {
    const view = (conditions: readonly ('attestation_overdue' | 'orphaned' | 'dormant')[]) => ({
      attestedAt: undefined,
      attestedBy: undefined,
      nextDue: undefined,
      conditions,
    })
    expect(stateOf(policy(), NO_USAGE, [kill('quarantine: denial_burst', ANOMALY_ACTOR)], T0)).toBe('quarantined')
    // Only the anomaly monitor quarantines: a responder's kill with such a reason is a kill.
    expect(stateOf(policy(), NO_USAGE, [kill('quarantine: denial_burst')], T0)).toBe('killed')
    expect(stateOf(policy(), NO_USAGE, [kill('quarantine: denial_burst', ANOMALY_ACTOR), kill('leaked key')], T0)).toBe('killed')
    expect(stateOf(policy(), NO_USAGE, [kill('leaked key')], T0)).toBe('killed')
    expect(stateOf(policy(), NO_USAGE, [], T0, view(['attestation_overdue', 'orphaned']))).toBe('attestation_overdue')
    expect(stateOf(policy(), NO_USAGE, [], T0, view(['orphaned']))).toBe('orphaned')
    expect(stateOf(policy(), NO_USAGE, [], T0, view(['dormant']))).toBe('dormant')
    expect(stateOf(policy(), NO_USAGE, [], T0, view([]))).toBe('active')
  })
})
