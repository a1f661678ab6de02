import { createHash, randomBytes } from 'node:crypto'

/** `mandate admin-key <name> [--role ...]` */
export function adminKey(name: string, options: { role: string[] }): void {
  const roles = options.role
  const unknown = roles.filter((r) => !['responder', 'auditor', 'admin'].includes(r))
  if (unknown.length > 0 || !/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
    process.stderr.write(`mandate: ${unknown.length > 0 ? `unknown role ${unknown.join(', ')}` : 'name must be 1-64 of A-Z a-z 0-9 . _ @ -'}\n`)
    process.exitCode = 1
    return
  }
  const key = randomBytes(32).toString('base64url')
  const sha256 = createHash('sha256').update(key).digest('hex')
  process.stdout.write(
    `admin key for ${name} (give it to them, store it nowhere else):\n  ${key}\n` +
      `for the config file:\n  admin:\n    keys:\n      - name: ${name}\n        sha256: ${sha256}\n        roles: [${roles.join(', ')}]\n`,
  )
}
