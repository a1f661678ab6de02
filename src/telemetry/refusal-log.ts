import type { Logger } from './log.js'

/**
 * Refusals counted and logged once per interval: one line per subject (an
 * agent, an endpoint) with a count per reason, never one line per refused
 * request, so that a flood of refusals cannot flood the log. The lines go
 * out every `intervalMs` while there is something to say, and at `close`.
 */
export interface RefusalLog {
  note(subject: string, reason: string): void
  /** Logs and resets the counts now. */
  flush(): void
  close(): void
}

export function createRefusalLog(logger: Logger, options: { readonly message: string; readonly subject: string; readonly intervalMs: number }): RefusalLog {
  let counts = new Map<string, Record<string, number>>()
  let since = performance.now()

  function flush(): void {
    if (counts.size === 0) return
    const seconds = Math.max(1, Math.round((performance.now() - since) / 1000))
    for (const [subject, refused] of counts) logger.info({ [options.subject]: subject, refused, interval_s: seconds }, options.message)
    counts = new Map()
    since = performance.now()
  }

  const timer = setInterval(flush, options.intervalMs)
  timer.unref()
  return {
    note(subject, reason) {
      if (counts.size === 0) since = performance.now()
      let refused = counts.get(subject)
      if (refused === undefined) counts.set(subject, (refused = {}))
      refused[reason] = (refused[reason] ?? 0) + 1
    },
    flush,
    close() {
      clearInterval(timer)
      flush()
    },
  }
}
