/**
 * The token cache: bounded, least recently used first out, and never holding
 * an entry past the time it must be refreshed. Keys are SHA-256 digests made
 * by the client; no raw subject token is ever a key.
 */

interface Entry<T> {
  readonly value: T
  /** Epoch ms after which the value is not handed out again. */
  readonly refreshAt: number
}

/** How often (ms of the client's clock) a call may scan the whole cache for stale entries: a scan is O(size). */
const SWEEP_INTERVAL = 1_000

export class TokenCache<T> {
  // A Map iterates in insertion order: re-inserting on every hit keeps the least recently used first.
  private readonly entries = new Map<string, Entry<T>>()
  private lastSweep = -Infinity

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number,
  ) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 0) throw new TypeError('cache.maxEntries must be a non-negative integer')
  }

  get size(): number {
    return this.entries.size
  }

  /** The value under `key` while it is fresh; a stale one is dropped and undefined returned. */
  get(key: string): T | undefined {
    this.sweep()
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    this.entries.delete(key)
    if (this.now() >= entry.refreshAt) return undefined
    this.entries.set(key, entry)
    return entry.value
  }

  /** Keeps `value` until `refreshAt` (epoch ms), evicting the least recently used entry when full. */
  set(key: string, value: T, refreshAt: number): void {
    this.entries.delete(key)
    if (this.maxEntries === 0 || refreshAt <= this.now()) return
    this.sweep(true)
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next()
      if (oldest.done === true) break
      this.entries.delete(oldest.value)
    }
    this.entries.set(key, { value, refreshAt })
  }

  /** Drops `key`, only if it still holds `value` when given (a newer value another call stored stays). */
  delete(key: string, value?: T): void {
    const entry = this.entries.get(key)
    if (entry !== undefined && (value === undefined || entry.value === value)) this.entries.delete(key)
  }

  clear(): void {
    this.entries.clear()
  }

  /** Drops every stale entry: at most once a second unless `force`. */
  private sweep(force = false): void {
    const now = this.now()
    if (!force && now - this.lastSweep < SWEEP_INTERVAL) return
    this.lastSweep = now
    for (const [key, entry] of this.entries) if (now >= entry.refreshAt) this.entries.delete(key)
  }
}
