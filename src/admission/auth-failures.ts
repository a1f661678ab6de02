/**
 * Exponential back-off after failed client authentication, in this process
 * only: a request that succeeds pays no network round trip for it. With N
 * instances behind a balancer a caller gets up to N times the allowance.
 *
 * Three counters, each with a free allowance; every failure beyond it blocks
 * the key for twice as long as the previous one (1 s, 2 s, ... up to 5 min),
 * and a key is forgotten an hour after its last failure:
 * - the source address: bounds guessing from one place, whatever client id;
 * - the client id at that address: a lower bound, so that one failing client
 *   behind a shared address is stopped before the address is;
 * - the client id alone, far above what a working agent ever fails: bounds
 *   guessing one client's secret from many addresses. It does not apply at
 *   an address where that client authenticated in the last day, so a
 *   failing flood from elsewhere does not lock the agent out where it runs.
 * A request refused by the back-off is not tried, so it is not a failure.
 * Success clears the counter of that client at that address only: another
 * agent's success does not clear an address that is guessing.
 *
 * Memory is bounded: each map keeps at most `maxKeys` entries, dropping the
 * oldest when full. Times are the injected clock's (epoch ms).
 */
export interface AuthFailureThrottle {
  /** True when no failure is remembered at all: `check` would answer undefined for anyone. */
  quiet(): boolean
  /** Milliseconds this caller must wait before its authentication is tried; undefined when it may try now. */
  check(address: string | undefined, clientId: string | undefined): number | undefined
  failed(address: string | undefined, clientId: string | undefined): void
  succeeded(address: string | undefined, clientId: string): void
}

export interface AuthFailureLimits {
  /** Failures from one address, any client id, before back-off. */
  readonly perAddress: number
  /** Failures of one client id at one address before back-off. */
  readonly perClientAtAddress: number
  /** Failures of one client id from anywhere before back-off (where it has not succeeded lately). */
  readonly perClient: number
  readonly firstBlockMs: number
  readonly maxBlockMs: number
  /** A key with no failure for this long starts over. */
  readonly forgetAfterMs: number
  /** How long a success exempts its address from the client id's counter. */
  readonly trustAddressMs: number
  readonly maxKeys: number
}

export const AUTH_FAILURE_LIMITS: AuthFailureLimits = {
  perAddress: 20,
  perClientAtAddress: 5,
  perClient: 200,
  firstBlockMs: 1_000,
  maxBlockMs: 300_000,
  forgetAfterMs: 3_600_000,
  trustAddressMs: 86_400_000,
  maxKeys: 100_000,
}

interface Counter {
  failures: number
  last: number
  blockedUntil: number
}

const SWEEP_EVERY_MS = 60_000

export function createAuthFailureThrottle(clock: () => number, limits: AuthFailureLimits = AUTH_FAILURE_LIMITS): AuthFailureThrottle {
  const byAddress = new Map<string, Counter>()
  const byClientAtAddress = new Map<string, Counter>()
  const byClient = new Map<string, Counter>()
  /** Client id → address → last success. */
  const trusted = new Map<string, Map<string, number>>()
  let nextSweep = clock() + SWEEP_EVERY_MS

  const pair = (clientId: string, address: string) => `${clientId}\n${address}`

  function sweep(now: number): void {
    for (const map of [byAddress, byClientAtAddress, byClient]) {
      for (const [k, c] of map) if (now - c.last >= limits.forgetAfterMs) map.delete(k)
    }
    for (const [id, addresses] of trusted) {
      for (const [a, at] of addresses) if (now - at >= limits.trustAddressMs) addresses.delete(a)
      if (addresses.size === 0) trusted.delete(id)
    }
    nextSweep = now + SWEEP_EVERY_MS
  }

  function waitOf(map: Map<string, Counter>, key: string, now: number): number {
    const c = map.get(key)
    return c === undefined ? 0 : c.blockedUntil - now
  }

  function bump(map: Map<string, Counter>, key: string, free: number, now: number): void {
    let c = map.get(key)
    if (c !== undefined && now - c.last >= limits.forgetAfterMs) c = undefined
    if (c === undefined) {
      if (map.size >= limits.maxKeys) map.delete(map.keys().next().value!)
      c = { failures: 0, last: now, blockedUntil: 0 }
      map.set(key, c)
    }
    c.failures++
    c.last = now
    const over = c.failures - free
    if (over > 0) c.blockedUntil = now + Math.min(limits.maxBlockMs, limits.firstBlockMs * 2 ** Math.min(30, over - 1))
  }

  function isTrusted(clientId: string, address: string, now: number): boolean {
    const at = trusted.get(clientId)?.get(address)
    return at !== undefined && now - at < limits.trustAddressMs
  }

  const quiet = () => byAddress.size === 0 && byClient.size === 0 && byClientAtAddress.size === 0
  return {
    quiet,
    check(address, clientId) {
      // No failure anywhere lately: nothing to look up, no key to build.
      if (quiet()) return undefined
      const now = clock()
      if (now >= nextSweep) sweep(now)
      let wait = 0
      if (address !== undefined) wait = waitOf(byAddress, address, now)
      if (clientId !== undefined) {
        if (address !== undefined) wait = Math.max(wait, waitOf(byClientAtAddress, pair(clientId, address), now))
        if (address === undefined || !isTrusted(clientId, address, now)) wait = Math.max(wait, waitOf(byClient, clientId, now))
      }
      return wait > 0 ? wait : undefined
    },
    failed(address, clientId) {
      const now = clock()
      if (address !== undefined) bump(byAddress, address, limits.perAddress, now)
      if (clientId !== undefined) {
        if (address !== undefined) bump(byClientAtAddress, pair(clientId, address), limits.perClientAtAddress, now)
        bump(byClient, clientId, limits.perClient, now)
      }
    },
    succeeded(address, clientId) {
      if (address === undefined) return
      const now = clock()
      if (byClientAtAddress.size > 0) byClientAtAddress.delete(pair(clientId, address))
      let addresses = trusted.get(clientId)
      if (addresses === undefined) trusted.set(clientId, (addresses = new Map<string, number>()))
      const at = addresses.get(address)
      // A working agent succeeds many times a second: refresh its mark once a minute, not every time.
      if (at !== undefined && now - at < 60_000) return
      // Re-inserted so that the map's order is oldest success first.
      addresses.delete(address)
      if (addresses.size >= 1_000) addresses.delete(addresses.keys().next().value!)
      addresses.set(address, now)
    },
  }
}
