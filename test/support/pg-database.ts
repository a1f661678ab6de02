/**
 * A PostgreSQL database of its own for each test file: created through the
 * admin URL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
 * and dropped afterwards.
 *
 * When the server cannot be reached, the PostgreSQL suites FAIL under
 * `CI=true` or when `DATABASE_URL` was set explicitly; only on a developer
 * machine relying on the default URL are they skipped, with a warning.
 */
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { describe } from 'vitest'

export const ADMIN_URL = process.env['DATABASE_URL'] || 'postgres://postgres@127.0.0.1:5432/postgres'

const mustRun = process.env['CI'] === 'true' || Boolean(process.env['DATABASE_URL'])

const admin = () => postgres(ADMIN_URL, { max: 1, connect_timeout: 5, onnotice: () => {} })

async function reachable(): Promise<boolean> {
  const sql = admin()
  try {
    await sql`select 1`
    return true
  } catch {
    return false
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {})
  }
}

const available = mustRun || (await reachable())
if (!available) {
  console.warn(`PostgreSQL is not reachable at the default ${ADMIN_URL}: PostgreSQL suites skipped (set DATABASE_URL or CI=true to make this a failure)`)
}

/** `describe` for suites that need PostgreSQL (see the module comment for when it skips). */
export const describePostgres: typeof describe = available ? describe : (describe.skip as typeof describe)

export interface TestDatabase {
  /** Connection URL of the new database. */
  readonly url: string
  readonly name: string
  /** Runs SQL on the admin connection (e.g. `ALTER DATABASE`). */
  admin(statement: string): Promise<void>
  /** Drops the database, closing whatever is still connected to it. */
  drop(): Promise<void>
}

/** Creates `mandate_test_<random>`; rejects (failing the suite) when the server is unreachable. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const sql = admin()
  const name = `mandate_test_${randomBytes(6).toString('hex')}`
  try {
    await sql.unsafe(`create database "${name}"`)
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {})
    throw new Error(`cannot create a test database through DATABASE_URL (${(error as { code?: string }).code ?? 'unknown'})`)
  }
  const url = new URL(ADMIN_URL)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    name,
    admin: async (statement) => {
      await sql.unsafe(statement)
    },
    async drop() {
      try {
        await sql.unsafe(`drop database if exists "${name}" with (force)`)
      } finally {
        await sql.end({ timeout: 5 })
      }
    },
  }
}
