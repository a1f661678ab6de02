/**
 * The event-loop lag monitor on the real loop: near 0 while timers run on
 * time, up after the loop was blocked, and back down once it runs freely.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { monitorEventLoopLag, type EventLoopLag } from '../../../src/telemetry/event-loop.js'

const monitors: EventLoopLag[] = []
afterEach(() => {
  for (const m of monitors.splice(0)) m.stop()
})

/** Keeps the loop busy for `ms`. */
function block(ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // busy
  }
}

const nextTick = (ms = 30) => new Promise((r) => setTimeout(r, ms))

describe('monitorEventLoopLag', () => {
  it('rises after the loop was blocked, by a share of the block (a moving average), and falls back once it runs freely', async () => {
    const lag = monitorEventLoopLag(20, 0.3)
    monitors.push(lag)
    await nextTick(100)
    block(500)
    await nextTick()
    // One tick 480+ ms late, weighted 0.3.
    expect(lag.current()).toBeGreaterThan(100)
    await vi.waitFor(() => expect(lag.current()).toBeLessThan(20), { timeout: 5_000, interval: 20 })
  })

  it('rejects a bad interval or weight', () => {
    expect(() => monitorEventLoopLag(0)).toThrow(TypeError)
    expect(() => monitorEventLoopLag(20, 0)).toThrow(TypeError)
  })
})
