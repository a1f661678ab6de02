/** The push worker's retry back-off (RFC 8935 pushes that may succeed later): exponential, jittered, capped. */
import { describe, expect, it } from 'vitest'
import { retryDelayMs } from '../../../src/ssf/push-worker.js'

const retry = { maxAttempts: 10, maxAgeMs: 86_400_000, initialDelayMs: 1_000, maxDelayMs: 60_000 }
const JUST_UNDER_ONE = 1 - 2 ** -52

describe('retryDelayMs', () => {
  it('waits between half and all of a ceiling that doubles with each failed push', () => {
    for (const [attempts, ceiling] of [
      [1, 1_000],
      [2, 2_000],
      [3, 4_000],
      [6, 32_000],
    ] as const) {
      expect(retryDelayMs(retry, attempts, () => 0)).toBe(ceiling / 2)
      expect(retryDelayMs(retry, attempts, () => 0.5)).toBe((ceiling * 3) / 4)
      expect(retryDelayMs(retry, attempts, () => JUST_UNDER_ONE)).toBe(ceiling)
    }
  })

  it('never waits longer than max_delay, however many pushes failed', () => {
    for (const attempts of [7, 8, 50, 2_000]) {
      expect(retryDelayMs(retry, attempts, () => 0)).toBe(30_000)
      expect(retryDelayMs(retry, attempts, () => JUST_UNDER_ONE)).toBe(60_000)
    }
  })

  it('waits at least a millisecond', () => {
    expect(retryDelayMs({ ...retry, initialDelayMs: 1 }, 1, () => 0)).toBe(1)
    expect(retryDelayMs({ ...retry, initialDelayMs: 0 }, 1, () => 0)).toBe(1)
  })
})
