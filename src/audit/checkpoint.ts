/**
 * Signed checkpoints of the audit log: a chain's record count and
 * head hash, signed with the broker's signing key, which the database never
 * holds, and written outside PostgreSQL (a directory, and the logs). With
 * them `mandate audit verify --checkpoints <dir>` also catches what a hash
 * chain inside the database cannot: the newest records cut off, or the whole
 * table rewritten consistently by someone with database rights.
 *
 * A checkpoint is a compact JWS (ES256, `typ: mandate-checkpoint+jwt`) whose
 * payload is `{iss, chain, instance, seq, head, iat, store}`: records 1..seq
 * of `chain` existed in the database `store` names, and record seq's hash was
 * `head`. Each is written to `<dir>/<store>/<chain>.<seq, 12 digits>.jws` (a
 * temporary file renamed into place, so a reader never sees half of one).
 *
 * Checkpoints are kept per database because one directory can outlive one
 * database: a broker moved from PGlite to PostgreSQL keeps its data
 * directory, and the default checkpoint directory with it. A chain of the
 * other database is not missing from this one. Files written before
 * checkpoints named their database sit directly in `<dir>` and name none.
 */
import { createHash, type KeyObject } from 'node:crypto'
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import type { Database } from '../storage/database.js'
import { checkHeader, decodeJws, JwtError, verifySignature } from '../tokens/jws.js'

export const CHECKPOINT_TYP = 'mandate-checkpoint+jwt'

export interface Checkpoint {
  readonly chain: string
  readonly instance: string
  /** Records 1..seq were in the chain. */
  readonly seq: number
  /** Hash of record `seq`. */
  readonly head: string
  /** Epoch seconds. */
  readonly at: number
}

/** A checkpoint as read back: the database it names, when it names one. */
export interface ReadCheckpoint extends Checkpoint {
  /**
   * The database the checkpoint was written for (`checkpointStore`): its
   * signed `store` claim, else the subdirectory it was found in; undefined
   * for a file directly in the checkpoint directory that names none (written
   * before checkpoints were kept per database).
   */
  readonly store: string | undefined
  readonly file: string
}

/** What a store identity may look like: it names a directory. */
const STORE = /^(postgres|pglite)-[0-9a-z]{1,40}-[A-Za-z0-9_-]{1,64}$/

/**
 * The identity of a database, for keeping its checkpoints apart from those
 * of any other: `<engine>-<system identifier>-<database name>`, e.g.
 * `postgres-7716358313843923062-mandate`. The system identifier is the one
 * `initdb` chose for the cluster (PGlite included: each data directory has
 * its own), so two servers, or two databases on one server, never share an
 * identity; it is read from the database, so every broker and `audit verify`
 * name it alike whatever host name their URL uses. A database whose server
 * will not tell its system identifier is named by engine and name alone.
 */
/** A text column's value; anything else (a driver surprise) is no name. */
const textOf = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)

export async function checkpointStore(database: Pick<Database, 'db' | 'engine'>): Promise<string> {
  const rows = async (query: ReturnType<typeof sql>): Promise<Record<string, unknown>[]> => {
    const result: unknown = await database.db.execute(query)
    // postgres.js answers an array of rows, PGlite an object holding them.
    return Array.isArray(result) ? (result as Record<string, unknown>[]) : ((result as { rows?: Record<string, unknown>[] }).rows ?? [])
  }
  let system = '0'
  let name: string
  try {
    const [row] = await rows(sql`select system_identifier::text as system, current_database() as name from pg_control_system()`)
    system = textOf(row?.['system']) ?? '0'
    name = textOf(row?.['name']) ?? ''
  } catch {
    const [row] = await rows(sql`select current_database() as name`)
    name = textOf(row?.['name']) ?? ''
  }
  const safeName = /^[A-Za-z0-9_-]{1,64}$/.test(name) ? name : `h${createHash('sha256').update(name).digest('hex').slice(0, 16)}`
  const safeSystem = /^[0-9]{1,40}$/.test(system) ? system : '0'
  return `${database.engine}-${safeSystem}-${safeName}`
}

export interface CheckpointWriter {
  /** Signs and writes one checkpoint; returns the JWS. Rejects when the file cannot be written. */
  write(checkpoint: Checkpoint): Promise<string>
}

/**
 * Writes signed checkpoints under `dir`: in `<dir>/<store>/`, each naming
 * `store`, when given (the broker always gives it); directly in `dir`
 * otherwise. Throws `TypeError` on a `store` that is not an identity
 * `checkpointStore` makes.
 */
export function createCheckpointWriter(options: {
  readonly dir: string
  readonly issuer: string
  /** Signs a payload as a compact JWS with `typ` CHECKPOINT_TYP. */
  readonly sign: (payload: object) => Promise<string>
  /** The database the checkpoints are of (`checkpointStore`). */
  readonly store?: string
}): CheckpointWriter {
  const { store } = options
  if (store !== undefined && !STORE.test(store)) throw new TypeError(`checkpoint store identity is malformed: ${store}`)
  const dir = store === undefined ? options.dir : join(options.dir, store)
  let made = false
  return {
    async write(cp) {
      const jws = await options.sign({
        iss: options.issuer,
        chain: cp.chain,
        instance: cp.instance,
        seq: cp.seq,
        head: cp.head,
        iat: cp.at,
        ...(store === undefined ? {} : { store }),
      })
      if (!made) {
        await mkdir(dir, { recursive: true, mode: 0o750 })
        made = true
      }
      const name = `${cp.chain}.${String(cp.seq).padStart(12, '0')}.jws`
      const tmp = join(dir, `.${name}.${process.pid}.tmp`)
      await writeFile(tmp, `${jws}\n`, { mode: 0o640 })
      await rename(tmp, join(dir, name))
      return jws
    },
  }
}

export interface ReadCheckpoints {
  readonly checkpoints: readonly ReadCheckpoint[]
  /** Files that are not valid checkpoints signed by a known key: each is a finding. */
  readonly invalid: readonly { readonly file: string; readonly reason: string }[]
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const HEX64 = /^[0-9a-f]{64}$/

/**
 * Reads every `*.jws` in `dir` and in each of its subdirectories (one per
 * database, `checkpointStore`), and checks its signature against `keys`
 * (the broker's public keys by `kid`) and, when given, its issuer. A
 * checkpoint's database is its signed `store` claim, else the subdirectory
 * it lies in; a file directly in `dir` without the claim names none.
 */
export async function readCheckpoints(dir: string, keys: ReadonlyMap<string, KeyObject>, issuer: string | undefined): Promise<ReadCheckpoints> {
  const entries = await readdir(dir, { withFileTypes: true })
  const files: { file: string; folder: string | undefined }[] = []
  const visible = (n: string) => !n.startsWith('.')
  for (const e of entries.filter((e) => visible(e.name)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (e.isFile() && e.name.endsWith('.jws')) files.push({ file: join(dir, e.name), folder: undefined })
    if (!e.isDirectory()) continue
    const names = (await readdir(join(dir, e.name))).filter((n) => n.endsWith('.jws') && visible(n)).sort()
    for (const n of names) files.push({ file: join(dir, e.name, n), folder: e.name })
  }
  const checkpoints: ReadCheckpoint[] = []
  const invalid: { file: string; reason: string }[] = []
  for (const { file, folder } of files) {
    try {
      const text = (await readFile(file, 'utf8')).trim()
      const decoded = decodeJws(text)
      checkHeader(decoded.header, { algorithms: ['ES256'], typ: [CHECKPOINT_TYP] })
      const key = decoded.header.kid === undefined ? undefined : keys.get(decoded.header.kid)
      if (key === undefined) throw new JwtError('unknown_kid')
      if (!(await verifySignature(decoded.header.alg, key, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
      const p = decoded.payload
      if (issuer !== undefined && p['iss'] !== issuer) throw new JwtError('wrong_issuer')
      const { chain, instance, seq, head, iat, store } = p
      if (typeof chain !== 'string' || !UUID.test(chain)) throw new JwtError('bad_chain')
      if (typeof head !== 'string' || !HEX64.test(head)) throw new JwtError('bad_head')
      if (!Number.isSafeInteger(seq) || (seq as number) < 1) throw new JwtError('bad_seq')
      if (typeof instance !== 'string' || typeof iat !== 'number') throw new JwtError('bad_payload')
      if (store !== undefined && (typeof store !== 'string' || !STORE.test(store))) throw new JwtError('bad_store')
      checkpoints.push({ chain, instance, seq: seq as number, head, at: iat, store: store ?? folder, file })
    } catch (err) {
      invalid.push({ file, reason: err instanceof JwtError ? err.code : (err as Error).message })
    }
  }
  return { checkpoints, invalid }
}
