/**
 * `mandate policy secret`: a new client secret; with `--rotate AGENT`, added
 * to the agent's policy file next to the secret it has (both are accepted
 * during the rollover); with `--retire AGENT`, every secret but the newest
 * removed from the file, once the broker's credential ledger says the
 * newest has been used (or with `--force`). The file is edited through the
 * `yaml` package's Document API, so comments and layout stay as they were.
 */
import { rename, stat, writeFile, readFile, chmod } from 'node:fs/promises'
import { isScalar, isSeq, parseDocument, type Document, type Scalar, type YAMLSeq } from 'yaml'
import { loadPolicies, parsePolicy } from '../policy/load.js'
import { formatIssue } from '../policy/port.js'
import { MAX_CLIENT_SECRETS } from '../policy/schema.js'
import { generateClientSecret, hashClientSecret } from '../tokens/client-auth.js'
import { adminRequest, CliError, resolveBroker, run, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import { policySecret } from './policy.js'

export interface PolicySecretOptions extends BrokerOptions {
  rotate?: string
  retire?: string
  force?: boolean
  dir?: string
}

const PATH = ['authentication', 'secret_sha256'] as const
const write = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
const short = (hex: string) => `${hex.slice(0, 12)}…`

/** The agent's policy file, parsed as a YAML document that keeps comments, and the secrets it lists. */
async function agentFile(dir: string, agent: string): Promise<{ file: string; doc: Document; hashes: string[] }> {
  const loaded = await loadPolicies(dir)
  if (!loaded.ok) {
    throw new CliError(`${dir} has invalid policies; fix them first:\n${loaded.issues.map(formatIssue).join('\n')}`, EXIT.FAILED)
  }
  const policy = loaded.policies.find((p) => p.agent === agent)
  if (policy === undefined) throw new CliError(`no policy in ${dir} names agent ${agent}`, EXIT.FAILED)
  if (policy.authentication.method !== 'client_secret_basic') {
    throw new CliError(`${agent} uses ${policy.authentication.method}, not client_secret_basic: it has no secret to rotate`, EXIT.FAILED)
  }
  const file = policy.source
  const doc = parseDocument(await readFile(file, 'utf8'), { version: '1.2' })
  return { file, doc, hashes: secretNodes(doc).map((n) => String(n.value)) }
}

/** Writes `doc` over `file` (same mode) by a rename, once the result still loads as a valid policy. */
async function save(file: string, doc: Document): Promise<void> {
  // lineWidth 0: no line of the operator's is folded anew.
  const text = doc.toString({ lineWidth: 0, flowCollectionPadding: false })
  const checked = parsePolicy(file, text)
  if ('issues' in checked) throw new CliError(`the edited policy would be invalid: ${checked.issues.map(formatIssue).join('; ')}`, EXIT.FAILED)
  const mode = (await stat(file)).mode & 0o777
  const temp = `${file}.mandate-${process.pid}.tmp`
  await writeFile(temp, text, { mode })
  await chmod(temp, mode)
  // A rename: the broker's reload never reads a half-written file.
  await rename(temp, file)
}

/** The secrets' nodes: the items of a sequence, or the one scalar (each with its comments). */
function secretNodes(doc: Document): Scalar[] {
  const node = doc.getIn(PATH, true)
  if (isSeq(node)) return node.items.filter(isScalar)
  return isScalar(node) ? [node] : []
}

/**
 * Sets the list of secrets, reusing each kept secret's node so that its
 * comment stays with it: one secret is a plain value, several a sequence.
 */
function setSecrets(doc: Document, hashes: readonly string[]): void {
  const existing = new Map(secretNodes(doc).map((n) => [String(n.value), n]))
  const nodes = hashes.map((h) => existing.get(h) ?? (doc.createNode(h) as Scalar))
  if (nodes.length === 1) {
    doc.setIn(PATH, nodes[0])
    return
  }
  const current = doc.getIn(PATH, true)
  const seq = isSeq(current) ? current : (doc.createNode([]) as YAMLSeq)
  seq.items = nodes
  if (seq !== current) doc.setIn(PATH, seq)
}

async function rotate(agent: string, o: PolicySecretOptions): Promise<void> {
  const dir = o.dir ?? './policies'
  const { file, doc, hashes } = await agentFile(dir, agent)
  if (hashes.length >= MAX_CLIENT_SECRETS) {
    throw new CliError(
      `${agent} already has ${hashes.length} secrets (at most ${MAX_CLIENT_SECRETS}): retire the old ones first (--retire ${agent})`,
      EXIT.FAILED,
    )
  }
  const secret = generateClientSecret()
  const hash = hashClientSecret(secret).toString('hex')
  setSecrets(doc, [...hashes, hash])
  await save(file, doc)
  if (o.json === true) return void write(JSON.stringify({ agent, file, secret, secret_sha256: hash, secrets: hashes.length + 1 }))
  write(
    `new client secret for ${agent} (shown once: give it to the agent, store it nowhere else):\n  ${secret}\n` +
      `added its sha256 ${short(hash)} to ${file}: ${hashes.length + 1} secrets are now accepted.\n` +
      `next: once the agent uses the new secret, run: mandate policy secret --retire ${agent}`,
  )
}

interface LedgerEntry {
  kind: string
  id: string
  last_used_at: string
}

async function retire(agent: string, o: PolicySecretOptions): Promise<void> {
  const dir = o.dir ?? './policies'
  const { file, doc, hashes } = await agentFile(dir, agent)
  const newest = hashes[hashes.length - 1]!
  const old = hashes.slice(0, -1)
  if (old.length === 0) throw new CliError(`${agent} has one secret (${short(newest)}): nothing to retire; rotate first (--rotate ${agent})`, EXIT.FAILED)
  let used: LedgerEntry | undefined
  if (o.force !== true) {
    const b = await resolveBroker(o)
    const shown = (await adminRequest(b, 'GET', `/admin/agents/${encodeURIComponent(agent)}`)) as { credentials: { credentials: LedgerEntry[] } | null }
    if (shown.credentials === null)
      throw new CliError(`the broker at ${b.base} keeps no credential ledger (no database): use --force to retire anyway`, EXIT.FAILED)
    used = shown.credentials.credentials.find((c) => c.kind === 'secret' && c.id === newest)
    if (used === undefined) {
      throw new CliError(
        `the newest secret of ${agent} (${short(newest)}) has not been used yet (the broker's credential ledger): ` +
          `retiring the old one now would lock the agent out. Give it the new secret first, or use --force`,
        EXIT.FAILED,
      )
    }
  }
  setSecrets(doc, [newest])
  await save(file, doc)
  if (o.json === true) return void write(JSON.stringify({ agent, file, retired: old, kept: newest, newest_last_used_at: used?.last_used_at ?? null }))
  write(
    `retired ${old.length} secret${old.length === 1 ? '' : 's'} of ${agent} from ${file}: ${old.map(short).join(', ')}\n` +
      `kept ${short(newest)}${used === undefined ? ' (--force: not checked against the ledger)' : `, last used ${used.last_used_at}`}`,
  )
}

/** `mandate policy secret [--rotate AGENT | --retire AGENT [--force]] [--dir DIR]` */
export const policySecretCommand = (o: PolicySecretOptions) =>
  run(async () => {
    if (o.rotate !== undefined && o.retire !== undefined) throw new CliError('give --rotate or --retire, not both', EXIT.USAGE)
    if (o.force === true && o.retire === undefined) throw new CliError('--force goes with --retire', EXIT.USAGE)
    if (o.rotate !== undefined) return rotate(o.rotate, o)
    if (o.retire !== undefined) return retire(o.retire, o)
    policySecret()
  })
