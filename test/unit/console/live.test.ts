/**
 * The console's live events, fed by a real observed revocation mirror and a
 * stand-in for the delegation log's commit hook (a function the SQL log
 * calls with each committed record): what a page is told, once each.
 */
import { createRevocationMirror } from '@mandate/verifier/mirror'
import { describe, expect, it } from 'vitest'
import type { AuditEvent, AuditEventType } from '../../../src/audit/port.js'
import { createConsoleLive, type LiveEvent } from '../../../src/console/live.js'
import { ANOMALY_ACTOR } from '../../../src/core/anomaly.js'
import type { AgentId } from '../../../src/core/claims.js'
import type { Revocation } from '../../../src/revocation/port.js'
import { observeMirror } from '../../../src/revocation/service.js'

const NOW = 1_800_000_000
const kill = (id: string, over: Partial<Revocation> = {}): Revocation => ({
  id,
  target: { kind: 'agent', agent: 'demo-agent' as AgentId },
  reason: 'leaked key',
  createdBy: 'console:rita@example.com',
  createdAt: NOW,
  expiresAt: undefined,
  liftedAt: undefined,
  liftedBy: undefined,
  ...over,
})

function setUp(options: { threshold?: number } = {}) {
  const mirror = observeMirror(createRevocationMirror(() => NOW))
  let commit: ((e: AuditEvent) => void) | undefined
  let types: readonly AuditEventType[] = []
  let now = NOW
  const live = createConsoleLive({
    revocations: mirror,
    onDurable: (t, listener) => {
      types = t
      commit = listener
      return () => (commit = undefined)
    },
    now: () => now,
    ...(options.threshold === undefined ? {} : { burstThreshold: options.threshold }),
  })
  const seen: LiveEvent[] = []
  live.subscribe((e) => seen.push(e))
  const denied = (agent: string, error = 'invalid_grant') =>
    commit?.({ type: 'token.denied', at: now, agent: agent as AgentId, error, reason: 'r' } as unknown as AuditEvent)
  return { mirror, live, seen, denied, types: () => types, tick: (s: number) => (now += s), committing: () => commit !== undefined }
}

describe('console live events', () => {
  it('tells a kill once (the stream echoes a local one), then its lift once', () => {
    const { mirror, seen } = setUp()
    mirror.apply(kill('k1'))
    mirror.apply(kill('k1'))
    mirror.apply(kill('k1', { liftedAt: NOW + 5, liftedBy: 'console:alice@example.com' }))
    mirror.apply(kill('k1', { liftedAt: NOW + 5, liftedBy: 'console:alice@example.com' }))
    expect(seen).toEqual([
      { kind: 'kill', text: 'Killed: agent demo-agent: leaked key (by console:rita@example.com)', href: '/console/kills/k1' },
      { kind: 'lift', text: 'Lifted: agent demo-agent (by console:alice@example.com)', href: '/console/kills/k1' },
    ])
  })

  it('calls a kill by the anomaly rules a quarantine, and names every kind of target', () => {
    const { mirror, seen } = setUp()
    mirror.apply(kill('q1', { createdBy: ANOMALY_ACTOR, reason: 'quarantine: rate' }))
    mirror.apply(kill('u1', { target: { kind: 'agent_sub', agent: 'demo-agent' as AgentId, sub: 'alice' as never, iss: 'https://idp' } }))
    mirror.apply(kill('i1', { target: { kind: 'instance', agent: 'demo-agent' as AgentId, instance: 'spiffe://x/y' } }))
    expect(seen.map((e) => [e.kind, e.text])).toEqual([
      ['quarantine', 'Quarantined: agent demo-agent: quarantine: rate'],
      ['kill', 'Killed: agent demo-agent for user alice: leaked key (by console:rita@example.com)'],
      ['kill', 'Killed: instance spiffe://x/y of agent demo-agent: leaked key (by console:rita@example.com)'],
    ])
  })

  it('tells a burst of refusals once per window, at the threshold, and not a trickle', () => {
    const { seen, denied, types, tick } = setUp({ threshold: 3 })
    expect(types()).toEqual(['token.denied', 'approval.requested'])
    denied('a')
    denied('a')
    expect(seen).toEqual([])
    denied('a', 'invalid_scope')
    denied('a')
    expect(seen).toEqual([{ kind: 'denials', text: 'a: 3 token requests refused within 10 s (invalid_grant, invalid_scope)', href: '/console/agents/a' }])
    // Another agent's refusals count apart; a new window may burst again.
    denied('b')
    tick(10)
    denied('a')
    denied('a')
    expect(seen).toHaveLength(1)
    denied('a')
    expect(seen).toHaveLength(2)
  })

  it('stops listening when closed', () => {
    const { mirror, live, seen, committing } = setUp()
    live.close()
    mirror.apply(kill('k2'))
    expect(seen).toEqual([])
    expect(committing()).toBe(false)
  })
})
