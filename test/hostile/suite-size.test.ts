/** The suite's size is a requirement of its own: CI generates at least 20,000 hostile cases per run. */
import { describe, expect, it } from 'vitest'
import { PROPERTIES, TOTAL_RUNS } from './properties.js'

describe('hostile-input suite size', () => {
  it('generates at least 20,000 cases per npm test', () => {
    expect(TOTAL_RUNS).toBeGreaterThanOrEqual(20_000)
  })

  it('names every property once (fuzz --only and replay commands pick properties by name)', () => {
    expect(new Set(PROPERTIES.map((p) => p.name)).size).toBe(PROPERTIES.length)
  })
})
