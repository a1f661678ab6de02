/** Retry-After parsing and the back-off steps: pure functions, no broker needed. */
import { describe, expect, it } from 'vitest'
import { backoffDelay, parseRetryAfter, retryPolicy } from '../src/retry.js'

const NOW = Date.parse('2027-01-15T08:00:00Z')

describe('parseRetryAfter (RFC 9110 §10.2.3)', () => {
  it('reads delay-seconds', () => {
    expect(parseRetryAfter('0', NOW)).toBe(0)
    expect(parseRetryAfter(' 7 ', NOW)).toBe(7)
  })
  it('reads an HTTP-date relative to now, a past one as 0', () => {
    expect(parseRetryAfter('Fri, 15 Jan 2027 08:00:05 GMT', NOW)).toBe(5)
    expect(parseRetryAfter('Fri, 15 Jan 2027 07:00:00 GMT', NOW)).toBe(0)
  })
  it('caps what it honours at an hour', () => {
    expect(parseRetryAfter('999999', NOW)).toBe(3600)
    expect(parseRetryAfter('Sat, 15 Jan 2028 08:00:00 GMT', NOW)).toBe(3600)
  })
  it('ignores what is absent or malformed', () => {
    for (const value of [null, '', '-1', '1.5', 'soon', '0x10', '12345678901', 'Fri, 99 Foo 2027'])
      expect(parseRetryAfter(value, NOW), String(value)).toBeUndefined()
  })
})

describe('backoffDelay', () => {
  const policy = retryPolicy({ baseDelayMs: 100 })
  it('waits Retry-After plus at most 10 %', () => {
    expect(backoffDelay(policy, 1, 2, () => 0)).toBe(2000)
    expect(backoffDelay(policy, 1, 2, () => 0.999)).toBeLessThanOrEqual(2200)
  })
  it('without Retry-After, full jitter over a doubling step', () => {
    expect(backoffDelay(policy, 1, undefined, () => 0.999)).toBeLessThanOrEqual(100)
    expect(backoffDelay(policy, 3, undefined, () => 0.999)).toBeGreaterThan(390)
    expect(backoffDelay(policy, 3, undefined, () => 0.999)).toBeLessThanOrEqual(400)
    expect(backoffDelay(policy, 3, undefined, () => 0)).toBe(0)
  })
  it('refuses a policy that cannot work', () => {
    expect(() => retryPolicy({ maxAttempts: 0 })).toThrow(TypeError)
    expect(() => retryPolicy({ maxWaitMs: -1 })).toThrow(TypeError)
  })
})
