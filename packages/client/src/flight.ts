/**
 * Single-flight: the callers that want the same token share one exchange,
 * which is aborted only once every one of them has given up.
 */

/** One exchange in flight and how many callers wait for it. */
export interface Flight<T> {
  readonly promise: Promise<T>
  readonly controller: AbortController
  waiters: number
}

/**
 * Joins the flight under `key`, starting it with `start` when there is none.
 * `signal` is this caller's: when it aborts, this caller's promise rejects
 * with its reason, and the flight is aborted if no other caller waits.
 */
export function joinFlight<T>(
  flights: Map<string, Flight<T>>,
  key: string,
  start: (signal: AbortSignal) => Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  const flight = flights.get(key) ?? takeOff(flights, key, start)
  flight.waiters++
  if (signal === undefined) return flight.promise
  return waitOrLeave(flight, signal)
}

/** Starts a flight under `key`; it leaves `flights` when it settles. */
function takeOff<T>(flights: Map<string, Flight<T>>, key: string, start: (signal: AbortSignal) => Promise<T>): Flight<T> {
  const controller = new AbortController()
  const promise = start(controller.signal).finally(() => {
    if (flights.get(key) === flight) flights.delete(key)
  })
  // Every waiter may have left; the outcome is then nobody's, and must not surface as unhandled.
  promise.catch(() => {})
  const flight: Flight<T> = { promise, controller, waiters: 0 }
  flights.set(key, flight)
  return flight
}

/** The flight's outcome, unless `signal` aborts first: then this caller leaves, and the last to leave aborts the flight. */
function waitOrLeave<T>(flight: Flight<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const leave = () => {
      if (--flight.waiters === 0) flight.controller.abort(signal.reason)
      reject(signal.reason as Error)
    }
    if (signal.aborted) {
      leave()
      return
    }
    signal.addEventListener('abort', leave, { once: true })
    flight.promise.then(
      (value) => {
        signal.removeEventListener('abort', leave)
        resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', leave)
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- passes on the shared exchange's own rejection, whatever it is
        reject(err)
      },
    )
  })
}
