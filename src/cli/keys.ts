import { writeFile } from 'node:fs/promises'
import { generateSigningJwk } from '../tokens/keys.js'

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
