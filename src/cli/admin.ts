import { createHash, randomBytes } from 'node:crypto'

const ROLES = ['responder', 'auditor', 'approver', 'admin']

/** `issuer:sub`, split at the last colon (an issuer is a URL, with colons of its own); undefined when either part is empty. */
function issuerAndSub(text: string): { issuer: string; sub: string } | undefined {
  const at = text.lastIndexOf(':')
  const issuer = text.slice(0, at)
  const sub = text.slice(at + 1)
  return at <= 0 || sub === '' || !/^https:\/\/\S+$/.test(issuer) ? undefined : { issuer, sub }
}

/** `mandate admin-key <name> [--role ...] [--approver ISSUER:SUB]` */
export function adminKey(name: string, options: { role: string[]; approver?: string }): void {
  const roles = options.role
  const unknown = roles.filter((r) => !ROLES.includes(r))
  const approver = options.approver === undefined ? undefined : issuerAndSub(options.approver)
  const problem =
    unknown.length > 0
      ? `unknown role ${unknown.join(', ')}`
      : !/^[A-Za-z0-9._@-]{1,64}$/.test(name)
        ? 'name must be 1-64 of A-Z a-z 0-9 . _ @ -'
        : options.approver !== undefined && approver === undefined
          ? '--approver must be the person’s IdP issuer (https) and sub, split at the last colon, e.g. https://login.example.com:alice'
          : undefined
  if (problem !== undefined) {
    process.stderr.write(`mandate: ${problem}\n`)
    process.exitCode = 1
    return
  }
  const key = randomBytes(32).toString('base64url')
  const sha256 = createHash('sha256').update(key).digest('hex')
  // JSON strings are YAML flow scalars: an issuer or a sub with YAML's special characters stays one string.
  const person = approver === undefined ? '' : `        approver: { issuer: ${JSON.stringify(approver.issuer)}, sub: ${JSON.stringify(approver.sub)} }\n`
  const hint =
    roles.includes('approver') && approver === undefined
      ? 'the approver role decides only for the person the key belongs to: add their approver: { issuer, sub, email?, groups? } (or use --approver)\n'
      : ''
  process.stdout.write(
    `admin key for ${name} (give it to them, store it nowhere else):\n  ${key}\n` +
      `for the config file:\n  admin:\n    keys:\n      - name: ${name}\n        sha256: ${sha256}\n        roles: [${roles.join(', ')}]\n${person}`,
  )
  if (hint !== '') process.stderr.write(`note: ${hint}`)
}
