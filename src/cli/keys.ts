import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { JWK } from 'jose'
import { ACTIVATES_AT, generateSigningJwk, signingKeysFromJwks } from '../tokens/keys.js'

/** `mandate keys generate <file>`: a new private ES256 JWK set, readable by this user only; never overwrites. */
export async function keysGenerate(file: string): Promise<void> {
  const jwk = await generateSigningJwk()
  try {
    await writeFile(file, JSON.stringify({ keys: [jwk] }, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
  } catch (err) {
    process.stderr.write(`mandate: cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'} (existing files are never overwritten)\n`)
    process.exitCode = 1
    return
  }
  process.stdout.write(`wrote ${file} (kid ${String(jwk.kid)}); mount it as a secret and point signing.keys_file at it\n`)
}

export interface RotateOptions {
  /** Seconds from now until the new key signs. */
  activateAfter: number
  /** Seconds a superseded key stays published after its successor began to sign. */
  retireAfter: number
}

/** A private key file entry, with Mandate's activation member. */
type FileKey = JWK & { [ACTIVATES_AT]?: number }
interface KeysFile {
  keys: FileKey[]
  /** Public halves of keys no longer published, kept so that old audit checkpoints still verify. */
  retired?: (JWK & { mandate_retired_at?: number })[]
}

/**
 * `mandate keys rotate <file>`: adds a new key that every instance publishes
 * as soon as it re-reads the file and that signs from `now + activateAfter`;
 * moves the keys whose successor has signed for over `retireAfter` (so their
 * last token has expired) out of the published set, keeping only their
 * public half under `retired`. Writes the file atomically (0600).
 */
export async function keysRotate(file: string, options: RotateOptions): Promise<void> {
  const fail = (why: string): never => {
    process.stderr.write(`mandate: ${why}\n`)
    process.exit(1)
  }
  const now = Math.floor(Date.now() / 1000)
  let data: KeysFile
  try {
    data = JSON.parse(await readFile(file, 'utf8')) as KeysFile
    await signingKeysFromJwks(data, now) // the file as it stands must be valid
  } catch (err) {
    return fail(`cannot rotate ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  const activation = (k: FileKey) => k[ACTIVATES_AT] ?? 0
  const pending = data.keys.filter((k) => activation(k) > now)
  if (pending.length > 0) {
    return fail(
      `a rotation is already pending: ${pending.map((k) => `${k.kid ?? '(no kid)'} signs from ${new Date(activation(k) * 1000).toISOString()}`).join(', ')}`,
    )
  }
  // A key is superseded when a key activated after it has begun to sign.
  const keep: FileKey[] = []
  const retired = [...(data.retired ?? [])]
  for (const k of data.keys) {
    const successor = data.keys.filter((o) => activation(o) > activation(k) && activation(o) <= now).map(activation)
    const supersededAt = successor.length === 0 ? undefined : Math.min(...successor)
    if (supersededAt !== undefined && supersededAt + options.retireAfter <= now) {
      const { kty, crv, x, y, kid, alg, use } = k
      retired.push({ kty, crv, x, y, kid, alg, use, mandate_retired_at: now } as JWK & { mandate_retired_at: number })
    } else keep.push(k)
  }
  const fresh: FileKey = { ...(await generateSigningJwk()), [ACTIVATES_AT]: now + options.activateAfter }
  const next: KeysFile = { keys: [...keep, fresh], ...(retired.length > 0 ? { retired } : {}) }
  await signingKeysFromJwks(next, now) // still valid, and still signing with the old key until the activation
  const temp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`)
  try {
    await writeFile(temp, JSON.stringify(next, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
    await rename(temp, file)
  } catch (err) {
    await rm(temp, { force: true })
    return fail(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  const moved = data.keys.length - keep.length
  process.stdout.write(
    `added ${String(fresh.kid)}: published by every instance once it re-reads ${file}, signs from ${new Date((now + options.activateAfter) * 1000).toISOString()}\n` +
      `published keys: ${next.keys.map((k) => k.kid).join(', ')}\n` +
      (moved > 0 ? `retired ${moved} key(s) whose tokens have expired (public halves kept under "retired" for audit checkpoints)\n` : '') +
      `distribute the file to every instance (e.g. update the Kubernetes Secret) well before the activation\n`,
  )
}
