import type { AuditEvent, AuditLog, AuditReceipt } from './port.js'

/**
 * In-memory audit log, for unit tests and as the reference of bench/audit.ts;
 * never what `mandate serve` uses. Records live as long as the process, and
 * only at least the newest `keep` (at most twice as many) are held.
 */
export interface MemoryAuditLog extends AuditLog {
  /** The held records, oldest first. */
  events(): readonly AuditEvent[]
}

export function createMemoryAuditLog(keep = 10_000): MemoryAuditLog {
  const held: AuditEvent[] = []
  let seq = 0
  return {
    events: () => held,
    append(event: AuditEvent): Promise<AuditReceipt> {
      held.push(event)
      // Trim in batches so an append stays O(1) amortized.
      if (held.length >= 2 * keep) held.splice(0, held.length - keep)
      return Promise.resolve({ seq: ++seq })
    },
  } satisfies MemoryAuditLog
}
