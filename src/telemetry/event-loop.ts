/**
 * How far behind the event loop is, cheap enough to read on every request: a
 * timer due every `intervalMs` notes how late it ran, and `current()` is the
 * exponentially weighted mean of those delays (weight `alpha` on the newest).
 * Sustained long loop turns (more work than the process can do) raise it
 * within a few ticks; a single pause (a GC, the process descheduled for a
 * moment) moves it by only a fraction of its length. Reading it reads a
 * variable.
 */
export interface EventLoopLag {
  /** Milliseconds the loop runs behind: 0 when its timers run on time. */
  current(): number
  stop(): void
}

export function monitorEventLoopLag(intervalMs = 20, alpha = 0.3): EventLoopLag {
  if (!(Number.isInteger(intervalMs) && intervalMs > 0)) throw new TypeError('intervalMs must be a positive integer')
  if (!(alpha > 0 && alpha <= 1)) throw new TypeError('alpha must be in (0, 1]')
  let due = performance.now() + intervalMs
  let lag = 0
  const timer = setInterval(() => {
    const now = performance.now()
    lag += alpha * (Math.max(0, now - due) - lag)
    due = now + intervalMs
  }, intervalMs)
  // Never what keeps a process alive.
  timer.unref()
  return {
    current: () => lag,
    stop: () => clearInterval(timer),
  }
}
