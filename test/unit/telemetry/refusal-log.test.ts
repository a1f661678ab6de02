/**
 * The refusal log: the first refusal after a quiet interval at once, then
 * one line per interval with the count per cause, nothing while quiet.
 * Fake timers: the interval passes without waiting.
 */
import { Writable } from 'node:stream'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createLogger } from '../../../src/telemetry/log.js'
import { createRefusalLog } from '../../../src/telemetry/refusal-log.js'

let lines: Record<string, unknown>[]
const logger = () =>
  createLogger(
    'debug',
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
        done()
      },
    }),
  )

beforeEach(() => {
  lines = []
  vi.useFakeTimers()
})
afterEach(() => {
  vi.useRealTimers()
})

const refused = () => lines.filter((l) => l['msg'] === 'requests refused')

describe('refusal log', () => {
  it('logs the first refusal at once, then one line per interval with counts per cause, and nothing while quiet', () => {
    const log = createRefusalLog(logger(), { message: 'requests refused', level: 'warn', intervalMs: 5_000, firstAtOnce: true })
    log.count('audit log unavailable')
    expect(refused()).toEqual([expect.objectContaining({ level: 'warn', refused: 1, causes: { 'audit log unavailable': 1 } })])

    for (let i = 0; i < 300; i++) log.count('audit log unavailable')
    for (let i = 0; i < 20; i++) log.count('overloaded: concurrency')
    expect(refused()).toHaveLength(1)
    vi.advanceTimersByTime(5_000)
    expect(refused()).toHaveLength(2)
    expect(refused()[1]).toMatchObject({ refused: 320, interval_ms: 5_000, causes: { 'audit log unavailable': 300, 'overloaded: concurrency': 20 } })

    // A quiet interval: no line; the next refusal is logged at once again.
    vi.advanceTimersByTime(20_000)
    expect(refused()).toHaveLength(2)
    log.count('revocation state is unknown')
    expect(refused()).toHaveLength(3)
    expect(refused()[2]).toMatchObject({ refused: 1, causes: { 'revocation state is unknown': 1 } })
  })

  it('keeps counts per subject when asked to, one line per subject per interval, at the level asked', () => {
    const log = createRefusalLog(logger(), { message: 'requests refused', level: 'info', subject: 'agent', intervalMs: 10_000 })
    for (let i = 0; i < 3; i++) log.count('agent', 'a1')
    log.count('user', 'a1')
    log.count('agent', 'a2')
    expect(refused()).toEqual([])
    vi.advanceTimersByTime(10_000)
    expect(refused()).toEqual([
      expect.objectContaining({ level: 'info', agent: 'a1', refused: 4, causes: { agent: 3, user: 1 }, interval_ms: 10_000 }),
      expect.objectContaining({ level: 'info', agent: 'a2', refused: 1, causes: { agent: 1 }, interval_ms: 10_000 }),
    ])
    log.close()
  })

  it('close logs what is counted and not yet logged, and leaves no timer', () => {
    const log = createRefusalLog(logger(), { message: 'requests refused', level: 'warn', intervalMs: 5_000, firstAtOnce: true })
    log.count('a')
    log.count('a')
    log.count('b')
    log.close()
    expect(refused().map((l) => l['causes'])).toEqual([{ a: 1 }, { a: 1, b: 1 }])
    expect(vi.getTimerCount()).toBe(0)
  })
})
