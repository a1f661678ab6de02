/**
 * FOR BENCHMARKS ONLY. What the benchmarks that run against the shared
 * PostgreSQL and Redis need so that each run keeps to its own data and leaves
 * nothing behind: a database and a key prefix of the run's own, the count of
 * `token.issued` rows in it, and their removal.
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import postgres from 'postgres'

export const DATABASE_URL = process.env['DATABASE_URL'] || 'postgres://postgres@127.0.0.1:5432/postgres'
export const REDIS_URL = process.env['REDIS_URL'] || 'redis://127.0.0.1:6379'

/** A database (and, when asked for, a Redis key prefix) of one run's own on the shared servers. */
export interface OwnBacking {
  readonly databaseName: string
  readonly databaseUrl: string
  /** Undefined without Redis. */
  readonly prefix: string | undefined
  /** A broker's environment for them: DATABASE_URL, and REDIS_URL with MANDATE_REDIS_PREFIX when Redis was asked for. */
  readonly env: Readonly<Record<string, string>>
  /** `token.issued` rows in the run's database. */
  issuedRows(): Promise<number>
  /** Drops the database and deletes the prefix's keys. */
  cleanup(): Promise<void>
}

/** Creates the run's database (and prefix); why not, when a server does not answer. */
export async function ownBacking(options: { readonly redis: boolean }): Promise<OwnBacking | string> {
  let redis: Redis | undefined
  if (options.redis) {
    redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3_000, retryStrategy: () => null })
    try {
      await redis.connect()
      await redis.ping()
    } catch (err) {
      redis.disconnect()
      return `Redis at ${REDIS_URL} does not answer (${(err as Error).message})`
    }
  }
  const admin = postgres(DATABASE_URL, { max: 1, connect_timeout: 3, onnotice: () => {} })
  const databaseName = `mandate_bench_${randomBytes(6).toString('hex')}`
  try {
    await admin.unsafe(`create database "${databaseName}"`)
  } catch (err) {
    await admin.end({ timeout: 1 }).catch(() => {})
    redis?.disconnect()
    return `PostgreSQL at ${DATABASE_URL.replace(/\/\/[^@]*@/, '//')} does not answer (${(err as Error).message})`
  }
  const url = new URL(DATABASE_URL)
  url.pathname = `/${databaseName}`
  const databaseUrl = url.toString()
  const prefix = redis === undefined ? undefined : `mandate-bench-${randomBytes(6).toString('hex')}:`
  return {
    databaseName,
    databaseUrl,
    prefix,
    env: prefix === undefined ? { DATABASE_URL: databaseUrl } : { DATABASE_URL: databaseUrl, REDIS_URL, MANDATE_REDIS_PREFIX: prefix },
    issuedRows: () => issuedRows(databaseUrl),
    async cleanup() {
      await admin.unsafe(`drop database if exists "${databaseName}" with (force)`).catch(() => {})
      await admin.end({ timeout: 1 }).catch(() => {})
      if (redis !== undefined && prefix !== undefined) {
        await deleteKeys(redis, prefix)
        redis.disconnect()
      }
    },
  }
}

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
