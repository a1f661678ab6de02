/**
 * FOR BENCHMARKS ONLY. What the benchmarks that run against the shared
 * PostgreSQL and Redis need so that each run keeps to its own data and leaves
 * nothing behind: a key prefix's deletion, and the count of `token.issued`
 * rows a run's own database holds.
 */
import type { Redis } from 'ioredis'
import postgres from 'postgres'

/** Deletes every key under `prefix` (SCAN, then UNLINK a batch at a time): a run's own keys only, never FLUSH. */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    if (keys.length > 0) await redis.unlink(...keys)
    cursor = next
  } while (cursor !== '0')
}

/** `token.issued` rows in the audit log of the database at `url` (a run's own). */
export async function issuedRows(url: string): Promise<number> {
  const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} })
  try {
    const [row] = await sql<{ n: string }[]>`select count(*)::text as n from audit_log where event = 'token.issued'`
    return Number(row!.n)
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {})
  }
}
