/** Promise helpers every adapter uses: a bounded wait, and waits that end when their owner closes. */

/**
 * `promise`, or a rejection with `timeoutError()` after `ms`. The promise is
 * left to settle on its own (a driver call cannot be taken back); the race
 * handles its late rejection. Subscribed to once: a query builder that runs
 * at each `then` (drizzle) runs once.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, timeoutError: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timeoutError()), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Resolves once `promise` settles (either way) or after `ms`, whichever comes first: a bounded wait during a shutdown. */
export async function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
    timer.unref()
  })
  try {
    const settled = promise.then(
      () => undefined,
      () => undefined,
    )
    await Promise.race([settled, elapsed])
  } finally {
    clearTimeout(timer)
  }
}

/** The usual timeout error: "`what` did not answer within `ms` ms". */
export function noAnswer(what: string, ms: number): () => Error {
  return () => new Error(`${what} did not answer within ${ms} ms`)
}

/**
 * Waits of a long-lived loop that must all end the moment its owner closes,
 * whatever they wait for (a blocked read on a dead socket included).
 */
export interface CloseGuard {
  /** True once `close` was called. */
  readonly closed: boolean
  /** Settles with `p`, or rejects as soon as `close` is called; `p`'s own late rejection is absorbed. */
  guard<T>(p: Promise<T>): Promise<T>
  /** Resolves after `ms` (a timer that holds no process open); rejects at `close`. */
  sleep(ms: number): Promise<void>
  /** Rejects every wait in progress with `Error(message)`, and every later one at once. */
  close(): void
}

export function closeGuard(message: string): CloseGuard {
  let closed = false
  // Rejecters of the waits in progress (not a race against one long-lived promise: that would keep a reaction per wait).
  const inFlight = new Set<(err: Error) => void>()
  const guard = <T>(p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (closed) {
        p.catch(() => {})
        reject(new Error(message))
        return
      }
      inFlight.add(reject)
      p.then(
        (value) => {
          inFlight.delete(reject)
          resolve(value)
        },
        (err: unknown) => {
          inFlight.delete(reject)
          reject(err instanceof Error ? err : new Error(String(err)))
        },
      )
    })
  return {
    get closed() {
      return closed
    },
    guard,
    sleep: (ms) => guard(new Promise<void>((resolve) => setTimeout(resolve, ms).unref())),
    close() {
      closed = true
      for (const reject of inFlight) reject(new Error(message))
      inFlight.clear()
    },
  }
}

/** Close functions of what a process opened, run in the reverse order of opening; a failing one does not stop the rest. */
export class Closers {
  readonly #closers: (() => Promise<void> | void)[] = []

  add(close: () => Promise<void> | void): void {
    this.#closers.push(close)
  }

  async closeAll(): Promise<void> {
    for (const close of this.#closers.splice(0).reverse()) {
      try {
        await close()
      } catch {
        // Closing anyway: what is left must still be closed.
      }
    }
  }
}
