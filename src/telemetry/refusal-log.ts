import type { Logger } from './log.js'

/**
 * Refusals on the broker's side (503s for a dependency that is down or an
 * overload, connections over the cap), logged as aggregates: during an
 * outage every request is refused, and one line each would flood the log
 * and cost the broker what it is short of. The first refusal after a quiet
 * interval is logged at once; then one line per interval, while there are
 * any, with the count per cause.
 */
export interface RefusalLog {
  /** Counts one refusal. `cause` must come from a fixed set (a description the code holds), never from a request. */
  count(cause: string): void
  /** Logs what is counted and not yet logged, and stops. */
  close(): void
}

export function createRefusalLog(logger: Logger, intervalMs = 5_000): RefusalLog {
  let counts = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined
  let closed = false

  const write = (causes: Map<string, number>, windowMs: number | undefined) => {
    let total = 0
    for (const n of causes.values()) total += n
    logger.warn({ refused: total, causes: Object.fromEntries(causes), ...(windowMs === undefined ? {} : { interval_ms: windowMs }) }, 'requests refused')
  }
  const flush = () => {
    timer = undefined
    if (counts.size === 0) return // quiet for a whole interval: the next refusal is logged at once
    const full = counts
    counts = new Map()
    write(full, intervalMs)
    open()
  }
  const open = () => {
    if (closed) return
    timer = setTimeout(flush, intervalMs)
    timer.unref()
  }

  return {
    count(cause) {
      if (timer === undefined && !closed) {
        write(new Map([[cause, 1]]), undefined)
        open()
        return
      }
      counts.set(cause, (counts.get(cause) ?? 0) + 1)
    },
    close() {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      if (counts.size > 0) write(counts, intervalMs)
      counts = new Map()
    },
  }
}
