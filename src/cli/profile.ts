/**
 * The CLI's own profile file: where the commands that call a broker find it
 * and its admin key when neither the command line nor the environment says.
 *
 *   $XDG_CONFIG_HOME/mandate/config.yaml (else ~/.config/mandate/config.yaml)
 *     url: https://mandate-admin.example.com:8081
 *     admin_key_file: ~/.config/mandate/admin-key
 *
 * Not the broker's config (MANDATE_CONFIG): that one is read by `serve`.
 * The key stays in a file of its own, never in the profile, so that the
 * profile can be shared or kept in a dotfiles repository.
 */
import { readFile, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { parse, YAMLParseError } from 'yaml'
import { z } from 'zod'

export interface Profile {
  /** Where it was read from (or would have been). */
  readonly path: string
  readonly url?: string
  /** Absolute: `~/` expanded, a relative path taken from the profile's directory. */
  readonly adminKeyFile?: string
}

/** A profile that exists but cannot be used: the command stops, naming the file. */
export class ProfileError extends Error {
  override readonly name = 'ProfileError'
}

const Schema = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  admin_key_file: z.string().min(1).optional(),
})

/**
 * XDG Base Directory: $XDG_CONFIG_HOME when set to an absolute path (a
 * relative one is to be ignored), else ~/.config.
 */
export function profilePath(env: Readonly<Record<string, string | undefined>>): string {
  const xdg = env['XDG_CONFIG_HOME']
  return join(xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), '.config'), 'mandate', 'config.yaml')
}

/** Reads the profile; an absent file is an empty profile. Throws ProfileError on anything else. */
export async function readProfile(path: string): Promise<Profile> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path }
    throw new ProfileError(`cannot read the profile ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  let doc: unknown
  try {
    doc = parse(text) ?? {}
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos !== undefined ? `:${err.linePos[0].line}:${err.linePos[0].col}` : ''
    throw new ProfileError(`${path}${where}: not valid YAML`)
  }
  const parsed = Schema.safeParse(doc)
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    throw new ProfileError(`${path}: ${issues.join('; ')} (it may set url and admin_key_file)`)
  }
  const file = parsed.data.admin_key_file
  return {
    path,
    ...(parsed.data.url === undefined ? {} : { url: parsed.data.url }),
    ...(file === undefined ? {} : { adminKeyFile: file === '~' || file.startsWith('~/') ? join(homedir(), file.slice(1)) : resolve(dirname(path), file) }),
  }
}

/** What the broker accepts as a bearer admin key: printable ASCII, no spaces, at most 512 characters. */
export const ADMIN_KEY = /^[\x21-\x7e]{1,512}$/

/**
 * Reads an admin key file: one line, the key. Refused, as OpenSSH refuses a
 * private key, when other users could read it; the key's contents never
 * appear in a message.
 */
export async function readAdminKeyFile(file: string): Promise<string> {
  let text: string
  try {
    const s = await stat(file)
    if (process.platform !== 'win32' && (s.mode & 0o077) !== 0) {
      throw new ProfileError(`the admin key file ${file} is open to other users (mode ${(s.mode & 0o777).toString(8).padStart(4, '0')}): chmod 600 ${file}`)
    }
    text = await readFile(file, 'utf8')
  } catch (err) {
    if (err instanceof ProfileError) throw err
    throw new ProfileError(`cannot read the admin key file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  const key = text.trim()
  if (!ADMIN_KEY.test(key)) throw new ProfileError(`the admin key file ${file} does not hold an admin key (one line of printable ASCII, no spaces)`)
  return key
}
