import type { Logger } from './log.js'

/**
 * Refusals logged as aggregates, never one line per refused request: during
 * an outage every request is refused, and under a flood of bad or greedy
 * requests each one is; a line each would flood the log and cost the broker
 * what it is short of. One line per interval (per subject, when the log keeps
 * subjects) while there are refusals, with the count per cause, and what is
 * left at `close`.
 */
export interface RefusalLog {
  /**
   * Counts one refusal. `cause` comes from a fixed set (a text the code
   * holds) and `subject` from an authenticated id or a fixed set, never from
   * raw request text: both become log fields.
   */
  count(cause: string, subject?: string): void
  /** Logs what is counted and not yet logged, and stops. */
  close(): void
}

export interface RefusalLogOptions {
  readonly message: string
  /** `warn` for refusals someone should look at (outages, overload); `info` for limits doing their job. */
  readonly level: 'info' | 'warn'
  /** Log field naming the subject counts are kept by (`agent`, `endpoint`); one total when absent. */
  readonly subject?: string
  readonly intervalMs: number
  /** Log the first refusal after a quiet interval at once (an outage is news), the rest per interval. */
  readonly firstAtOnce?: boolean
}

export function createRefusalLog(logger: Logger, options: RefusalLogOptions): RefusalLog {
  /** subject ('' without one) → cause → count. */
  let counts = new Map<string, Map<string, number>>()
  let timer: NodeJS.Timeout | undefined
  let closed = false

  const write = (bySubject: Map<string, Map<string, number>>, intervalMs: number | undefined) => {
    for (const [subject, causes] of bySubject) {
      let refused = 0
      for (const n of causes.values()) refused += n
      logger[options.level](
        {
          ...(options.subject === undefined ? {} : { [options.subject]: subject }),
          refused,
          causes: Object.fromEntries(causes),
          ...(intervalMs === undefined ? {} : { interval_ms: intervalMs }),
        },
        options.message,
      )
    }
  }
  const flush = () => {
    timer = undefined
    if (counts.size === 0) return // quiet for a whole interval
    const full = counts
    counts = new Map()
    write(full, options.intervalMs)
    start()
  }
  const start = () => {
    if (closed) return
    timer = setTimeout(flush, options.intervalMs)
    timer.unref()
  }

  return {
    count(cause, subject = '') {
      if (timer === undefined && !closed) {
        start()
        if (options.firstAtOnce === true) {
          write(new Map([[subject, new Map([[cause, 1]])]]), undefined)
          return
        }
      }
      let causes = counts.get(subject)
      if (causes === undefined) counts.set(subject, (causes = new Map<string, number>()))
      causes.set(cause, (causes.get(cause) ?? 0) + 1)
    },
    close() {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      if (counts.size > 0) write(counts, options.intervalMs)
      counts = new Map()
    },
  }
}

/** The broker's refusal logs, by what refused. */
export interface Refusals {
  /** 503s: a dependency down, an overload, a connection over the cap. */
  readonly unavailable: RefusalLog
  /** 429s of the policies' rate limits, by agent. */
  readonly rateLimited: RefusalLog
  /** 429s of the failed-authentication back-off, by endpoint. */
  readonly throttled: RefusalLog
}

export function createRefusals(logger: Logger): Refusals & { close(): void } {
  const limits = logger.child({ module: 'limits' })
  const refusals = {
    unavailable: createRefusalLog(logger.child({ module: 'http' }), { message: 'requests refused', level: 'warn', intervalMs: 5_000, firstAtOnce: true }),
    rateLimited: createRefusalLog(limits, { message: 'token exchanges refused by rate limits', level: 'info', subject: 'agent', intervalMs: 10_000 }),
    throttled: createRefusalLog(limits, {
      message: 'requests refused by the failed-authentication back-off',
      level: 'info',
      subject: 'endpoint',
      intervalMs: 10_000,
    }),
  }
  return {
    ...refusals,
    close() {
      for (const log of Object.values(refusals)) log.close()
    },
  }
}
