/**
 * Opens the SQL database: PostgreSQL (postgres.js) when a URL is given, else
 * PGlite (PostgreSQL in WASM) persisted under the data directory. Both are
 * driven through one drizzle `PgDatabase` and run the same `migrations/`.
 */
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PGlite } from '@electric-sql/pglite'
import { sql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import postgres from 'postgres'
import lockfile from 'proper-lockfile'
import { withTimeout } from '../core/async.js'
import { messageOf } from '../core/errors.js'

/** A drizzle database on either engine; adapters use only what both support. */
export type Db = PgDatabase<PgQueryResultHKT>

export type Engine = 'postgres' | 'pglite'

/** A bound value of `Database.statement`: a scalar, or a one-dimensional array of them. */
export type StatementParam = string | number | null | readonly (string | number | null)[]

export interface Database {
  readonly db: Db
  readonly engine: Engine
  /**
   * Applies every migration in `migrations/` not yet applied, in one
   * transaction. Idempotent; on PostgreSQL, concurrent callers (several
   * instances starting at once) are serialized by an advisory lock.
   * Rejects with `DatabaseError`.
   */
  migrate(): Promise<void>
  /**
   * Runs one hot statement with bound parameters, prepared: on PostgreSQL it
   * is parsed once per connection and then costs one round trip per call
   * (drizzle's `db.execute` sends it unprepared, which postgres.js does in
   * two: Parse/Describe, wait, then Bind/Execute). Rejects with the driver's
   * error, as `db` does.
   */
  statement(text: string, params: readonly StatementParam[]): Promise<void>
  /** Resolves when the database answers a trivial query; rejects with `DatabaseError`. */
  ping(): Promise<void>
  /** Ends the pool (waiting up to 5 s for running queries) or closes PGlite. Idempotent. */
  close(): Promise<void>
}

/**
 * A database failure with a message safe to log and show: it names the
 * failure and its code (a PostgreSQL SQLSTATE, a Node socket code or a
 * postgres.js code such as `CONNECT_TIMEOUT`), never the connection URL.
 */
export class DatabaseError extends Error {
  override readonly name = 'DatabaseError'
  constructor(
    message: string,
    /** Code of the underlying error, `unknown` when it had none. */
    readonly code: string,
  ) {
    super(message)
  }
}

/**
 * `<repo>/migrations`, found from this module: from src/storage/ (tsx,
 * vitest) and from dist/storage/ (after `npm run build`) alike.
 */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url))

// Session-level advisory lock held while migrating ('mandate' in ASCII).
const MIGRATION_LOCK = 0x6d616e64617465n

/**
 * Bound on getting a connection and an answer. postgres.js's own
 * `connect_timeout` does not fail a waiting query when a server accepts the
 * TCP connection but never answers (it reconnects, forever), so this one does.
 */
const CONNECT_TIMEOUT_MS = 5_000

export interface OpenDatabaseOptions {
  /** PGlite keeps its files in `<dataDir>/pglite` (created when missing). */
  readonly dataDir: string
}

/**
 * Opens the database and checks that it answers. `url` (`postgres://` or
 * `postgresql://`) selects PostgreSQL; `undefined` selects PGlite under
 * `dataDir`. Does not migrate: call `migrate()`.
 *
 * Throws `TypeError` for a URL of another scheme, and rejects with
 * `DatabaseError` ("cannot connect to PostgreSQL (<code>)") when the server
 * cannot be reached within 5 s or refuses the login. No message ever
 * contains the URL, which may hold a password.
 */
export async function openDatabase(url: string | undefined, options: OpenDatabaseOptions): Promise<Database> {
  if (url === undefined) return openPglite(join(options.dataDir, 'pglite'))
  if (!/^postgres(ql)?:\/\//i.test(url)) {
    throw new TypeError('database URL must start with postgres:// or postgresql://')
  }
  return openPostgres(url)
}

async function openPostgres(url: string): Promise<Database> {
  let client: postgres.Sql
  try {
    client = postgres(url, {
      max: 10,
      connect_timeout: 5,
      idle_timeout: 30,
      // Retry a lost server within a quarter of a second, however long it was gone (the default
      // backoff grows with every failed attempt to 10-20 s, and every write meanwhile fails 503);
      // jittered, so that a fleet does not reconnect in step.
      backoff: (attempt: number) => Math.min(0.05 * 2 ** attempt, 0.25) * (0.5 + Math.random() / 2),
      onnotice: () => {},
      // ISO is the text form `epochSeconds` (schema.ts) reads, whatever the server's default.
      connection: { application_name: 'mandate', DateStyle: 'ISO, MDY' },
    })
  } catch (error) {
    // postgres.js parses the URL here; the parser's error can quote it.
    throw connectError(error)
  }
  const db = drizzlePostgres({ client })
  const close = once(() => client.end({ timeout: 5 }))
  const ping = async () => {
    try {
      await withTimeout(client`select 1`, CONNECT_TIMEOUT_MS, databaseTimeout(CONNECT_TIMEOUT_MS))
    } catch (error) {
      throw connectError(error)
    }
  }
  try {
    await ping()
  } catch (error) {
    // Drops the query still waiting for a connection after a timeout, too.
    await client.end({ timeout: 0 }).catch(() => {})
    throw error
  }
  // postgres.js 4 knows the built-in array types and fetches types only for a query that names a
  // user-defined one (none here), with its failure handled: v3 fetched them on every new connection
  // and dropped that promise, so a connection lost right then was an unhandled rejection.
  return {
    db,
    engine: 'postgres',
    statement: async (text, params) => {
      await client.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true })
    },
    ping,
    close,
    migrate: serialized(async () => {
      const migrationsFolder = migrationsFolderOrThrow()
      let lock: postgres.ReservedSql
      const reserving = client.reserve()
      try {
        lock = await withTimeout(reserving, CONNECT_TIMEOUT_MS, databaseTimeout(CONNECT_TIMEOUT_MS))
      } catch (error) {
        // Should the connection come after all, give it back to the pool.
        reserving.then(
          (late) => late.release(),
          () => {},
        )
        throw connectError(error)
      }
      try {
        // drizzle's migrator reads the applied set outside its transaction: two
        // instances starting together would both apply the same migration.
        await lock`select pg_advisory_lock(${MIGRATION_LOCK.toString()}::bigint)`
        await migratePostgres(db, { migrationsFolder })
      } catch (error) {
        throw migrateError(error)
      } finally {
        await lock`select pg_advisory_unlock(${MIGRATION_LOCK.toString()}::bigint)`.catch(() => {})
        lock.release()
      }
    }),
  }
}

async function openPglite(dir: string): Promise<Database> {
  let client: PGlite
  // PGlite is one process's database: a second process opening the same files would corrupt them.
  let release: () => Promise<void>
  try {
    await mkdir(dir, { recursive: true })
    release = await lockfile.lock(dir, {
      realpath: false,
      retries: 0,
      // The holder refreshes the lock every 5 s; one left by a crashed process is taken over after 20 s.
      stale: 20_000,
      update: 5_000,
      onCompromised: () => {
        // Someone removed or took over the lock: keep serving; the next open reports the conflict.
      },
    })
  } catch (error) {
    if (codeOf(error) === 'ELOCKED') {
      throw new DatabaseError(
        `the PGlite database in ${dir} is in use by another process (a running \`mandate serve\`?): stop it, or use PostgreSQL (DATABASE_URL)`,
        'ELOCKED',
      )
    }
    throw new DatabaseError(`cannot open the PGlite database in ${dir} (${codeOf(error)}): ${messageOf(error)}`, codeOf(error))
  }
  try {
    client = new PGlite(dir)
    await client.waitReady
  } catch (error) {
    await release().catch(() => {})
    throw new DatabaseError(`cannot open the PGlite database in ${dir} (${codeOf(error)}): ${messageOf(error)}`, codeOf(error))
  }
  const db = drizzlePglite({ client })
  return {
    db,
    engine: 'pglite',
    statement: async (text, params) => {
      await client.query(text, params as unknown[])
    },
    close: once(async () => {
      try {
        await client.close()
      } finally {
        await release().catch(() => {})
      }
    }),
    async ping() {
      try {
        await db.execute(sql`select 1`)
      } catch (error) {
        throw new DatabaseError(`PGlite database unavailable (${codeOf(error)})`, codeOf(error))
      }
    },
    migrate: serialized(async () => {
      const migrationsFolder = migrationsFolderOrThrow()
      try {
        // No other process may open the directory, so no lock beyond `serialized`.
        await migratePglite(db, { migrationsFolder })
      } catch (error) {
        throw migrateError(error)
      }
    }),
  }
}

function migrationsFolderOrThrow(): string {
  if (!existsSync(join(MIGRATIONS_DIR, 'meta', '_journal.json'))) {
    throw new DatabaseError(`cannot migrate the database: no migrations journal in ${MIGRATIONS_DIR}`, 'ENOENT')
  }
  return MIGRATIONS_DIR
}

function connectError(error: unknown): DatabaseError {
  const code = codeOf(error)
  return new DatabaseError(`cannot connect to PostgreSQL (${code})`, code)
}

function migrateError(error: unknown): DatabaseError {
  const code = codeOf(error)
  // Only a server's own message is repeated: it names the failing statement's object, never the URL.
  const server = serverError(error)
  return new DatabaseError(`cannot migrate the database (${code})${server === undefined ? '' : `: ${server}`}`, code)
}

/** The error and its causes, outermost first (drizzle wraps driver errors in `DrizzleQueryError`). */
function* chain(error: unknown): Generator {
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    yield e
  }
}

/** Code of an error or of the first of its causes that has one (SQLSTATE, socket or driver code); `unknown` otherwise. */
export function codeOf(error: unknown): string {
  for (const e of chain(error)) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && code !== '') return code
  }
  return 'unknown'
}

/** Message of an error the server (or PGlite) reported: those carry a `severity`. */
export function serverError(error: unknown): string | undefined {
  for (const e of chain(error)) {
    if (e instanceof Error && typeof (e as { severity?: unknown }).severity === 'string') return e.message
  }
  return undefined
}

class Timeout extends Error {
  readonly code = 'CONNECT_TIMEOUT'
}

/** For `withTimeout`: the error of a database call that did not answer within `ms`, with code `CONNECT_TIMEOUT` (see `codeOf`). */
export function databaseTimeout(ms: number): () => Error {
  return () => new Timeout(`no answer within ${ms} ms`)
}

/** Runs calls one at a time: drizzle's migrator must not race itself within a process either. */
function serialized(fn: () => Promise<void>): () => Promise<void> {
  let last: Promise<void> = Promise.resolve()
  return () => {
    const run = last.catch(() => {}).then(fn)
    last = run
    return run
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined
  return () => (done ??= fn())
}
