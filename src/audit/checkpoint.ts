/**
 * Signed checkpoints of the audit log (issue 4): a chain's record count and
 * head hash, signed with the broker's signing key, which the database never
 * holds, and written outside PostgreSQL (a directory, and the logs). With
 * them `mandate audit verify --checkpoints <dir>` also catches what a hash
 * chain inside the database cannot: the newest records cut off, or the whole
 * table rewritten consistently by someone with database rights.
 *
 * A checkpoint is a compact JWS (ES256, `typ: mandate-checkpoint+jwt`) whose
 * payload is `{iss, chain, instance, seq, head, iat}`: records 1..seq of
 * `chain` existed and record seq's hash was `head`. Each is written to
 * `<dir>/<chain>.<seq, 12 digits>.jws` (a temporary file renamed into place,
 * so a reader never sees half of one).
 */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { KeyObject } from 'node:crypto'
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

export interface CheckpointWriter {
  /** Signs and writes one checkpoint; returns the JWS. Rejects when the file cannot be written. */
  write(checkpoint: Checkpoint): Promise<string>
}

export function createCheckpointWriter(options: {
  readonly dir: string
  readonly issuer: string
  /** Signs a payload as a compact JWS with `typ` CHECKPOINT_TYP. */
  readonly sign: (payload: object) => Promise<string>
}): CheckpointWriter {
  let made = false
  return {
    async write(cp) {
      const jws = await options.sign({ iss: options.issuer, chain: cp.chain, instance: cp.instance, seq: cp.seq, head: cp.head, iat: cp.at })
      if (!made) {
        await mkdir(options.dir, { recursive: true, mode: 0o750 })
        made = true
      }
      const name = `${cp.chain}.${String(cp.seq).padStart(12, '0')}.jws`
      const tmp = join(options.dir, `.${name}.${process.pid}.tmp`)
      await writeFile(tmp, `${jws}\n`, { mode: 0o640 })
      await rename(tmp, join(options.dir, name))
      return jws
    },
  }
}

export interface ReadCheckpoints {
  readonly checkpoints: readonly (Checkpoint & { readonly file: string })[]
  /** Files that are not valid checkpoints signed by a known key: each is a finding. */
  readonly invalid: readonly { readonly file: string; readonly reason: string }[]
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const HEX64 = /^[0-9a-f]{64}$/

/**
 * Reads every `*.jws` in `dir` and checks its signature against `keys`
 * (the broker's public keys by `kid`) and, when given, its issuer.
 */
export async function readCheckpoints(
  dir: string,
  keys: ReadonlyMap<string, KeyObject>,
  issuer: string | undefined,
): Promise<ReadCheckpoints> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.jws') && !n.startsWith('.')).sort()
  const checkpoints: (Checkpoint & { file: string })[] = []
  const invalid: { file: string; reason: string }[] = []
  for (const name of names) {
    const file = join(dir, name)
    try {
      const text = (await readFile(file, 'utf8')).trim()
      const decoded = decodeJws(text)
      checkHeader(decoded.header, { algorithms: ['ES256'], typ: [CHECKPOINT_TYP] })
      const key = decoded.header.kid === undefined ? undefined : keys.get(decoded.header.kid)
      if (key === undefined) throw new JwtError('unknown_kid')
      if (!(await verifySignature(decoded.header.alg, key, decoded.signingInput, decoded.signature))) throw new JwtError('bad_signature')
      const p = decoded.payload
      if (issuer !== undefined && p['iss'] !== issuer) throw new JwtError('wrong_issuer')
      const { chain, instance, seq, head, iat } = p
      if (typeof chain !== 'string' || !UUID.test(chain)) throw new JwtError('bad_chain')
      if (typeof head !== 'string' || !HEX64.test(head)) throw new JwtError('bad_head')
      if (!Number.isSafeInteger(seq) || (seq as number) < 1) throw new JwtError('bad_seq')
      if (typeof instance !== 'string' || typeof iat !== 'number') throw new JwtError('bad_payload')
      checkpoints.push({ chain, instance, seq: seq as number, head, at: iat, file })
    } catch (err) {
      invalid.push({ file, reason: err instanceof JwtError ? err.code : (err as Error).message })
    }
  }
  return { checkpoints, invalid }
}
