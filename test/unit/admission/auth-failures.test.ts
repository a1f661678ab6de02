/**
 * The failed-authentication back-off, on its own with an injected clock: the
 * free allowance of each key, the doubling, the cap, forgetting, and that an
 * attacker failing on purpose from elsewhere does not lock an agent out where
 * it runs.
 */
import { describe, expect, it } from 'vitest'
import { AUTH_FAILURE_LIMITS, createAuthFailureThrottle } from '../../../src/admission/auth-failures.js'

const T0 = 1_800_000_000_000

function throttleAt(ms = T0) {
  const clock = { now: ms }
  return { clock, t: createAuthFailureThrottle(() => clock.now) }
}

describe('failed-authentication back-off', () => {
  it('is quiet and answers undefined while nothing failed', () => {
    const { t } = throttleAt()
    expect(t.quiet()).toBe(true)
    expect(t.check('192.0.2.1', 'agent-a')).toBeUndefined()
    t.succeeded('192.0.2.1', 'agent-a')
    expect(t.quiet()).toBe(true)
  })

  it('lets a client fail 5 times at an address, then blocks it there 1 s, 2 s, 4 s … up to 5 min', () => {
    const { clock, t } = throttleAt()
    for (let i = 0; i < 5; i++) {
      expect(t.check('192.0.2.1', 'agent-a')).toBeUndefined()
      t.failed('192.0.2.1', 'agent-a')
    }
    expect(t.check('192.0.2.1', 'agent-a')).toBeUndefined()
    const waits: number[] = []
    for (let i = 0; i < 12; i++) {
      t.failed('192.0.2.1', 'agent-a')
      const wait = t.check('192.0.2.1', 'agent-a')!
      waits.push(wait)
      clock.now += wait
      expect(t.check('192.0.2.1', 'agent-a')).toBeUndefined()
    }
    expect(waits).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000, 300_000])
    // Another client at the same address, and the same client elsewhere, are not blocked by it.
    expect(t.check('192.0.2.1', 'agent-b')).toBeUndefined()
    expect(t.check('198.51.100.7', 'agent-a')).toBeUndefined()
  })

  it('blocks an address after 20 failures whatever client ids it tries', () => {
    const { t } = throttleAt()
    for (let i = 0; i < 20; i++) t.failed('192.0.2.1', undefined)
    expect(t.check('192.0.2.1', undefined)).toBeUndefined()
    t.failed('192.0.2.1', undefined)
    expect(t.check('192.0.2.1', undefined)).toBe(1_000)
    expect(t.check('192.0.2.1', 'agent-b')).toBe(1_000)
    expect(t.check('198.51.100.7', undefined)).toBeUndefined()
  })

  it('bounds guessing one client id from many addresses, but not where that client has succeeded', () => {
    const { t } = throttleAt()
    t.succeeded('10.0.0.5', 'agent-a') // where the agent runs
    for (let i = 0; i <= AUTH_FAILURE_LIMITS.perClient; i++) t.failed(`203.0.113.${i % 250}`, 'agent-a')
    // A fresh address claiming agent-a is held back; the agent's own address is not; other agents are not.
    expect(t.check('198.51.100.9', 'agent-a')).toBe(1_000)
    expect(t.check('10.0.0.5', 'agent-a')).toBeUndefined()
    expect(t.check('198.51.100.9', 'agent-b')).toBeUndefined()
  })

  it('clears a client at an address on success, but not the address: another agent’s success does not reset guessing', () => {
    const { clock, t } = throttleAt()
    for (let i = 0; i < 6; i++) t.failed('192.0.2.1', 'agent-a')
    expect(t.check('192.0.2.1', 'agent-a')).toBe(1_000)
    clock.now += 1_000
    t.succeeded('192.0.2.1', 'agent-a')
    t.failed('192.0.2.1', 'agent-a')
    expect(t.check('192.0.2.1', 'agent-a')).toBeUndefined()

    for (let i = 0; i < 21; i++) t.failed('192.0.2.2', undefined)
    t.succeeded('192.0.2.2', 'agent-b')
    expect(t.check('192.0.2.2', undefined)).toBeGreaterThan(0)
  })

  it('forgets a key an hour after its last failure', () => {
    const { clock, t } = throttleAt()
    for (let i = 0; i < 30; i++) t.failed('192.0.2.1', undefined)
    clock.now += 3_600_000
    t.failed('192.0.2.1', undefined)
    expect(t.check('192.0.2.1', undefined)).toBeUndefined()
    // And the sweep drops it altogether.
    clock.now += 3_600_000 + 60_000
    t.check('192.0.2.1', undefined)
    expect(t.quiet()).toBe(true)
  })

  it('keeps at most maxKeys addresses, dropping the oldest', () => {
    const clock = { now: T0 }
    const t = createAuthFailureThrottle(() => clock.now, { ...AUTH_FAILURE_LIMITS, perAddress: 0, maxKeys: 3 })
    for (const a of ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4']) t.failed(a, undefined)
    expect(t.check('192.0.2.1', undefined)).toBeUndefined()
    expect(t.check('192.0.2.4', undefined)).toBe(1_000)
  })
})
