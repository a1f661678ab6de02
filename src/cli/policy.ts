import { generateClientSecret, hashClientSecret } from '../tokens/client-auth.js'
import { loadPolicies } from '../policy/load.js'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { diffPolicies, type PolicyDiff } from '../policy/diff.js'
import { formatIssue, type AgentPolicy } from '../policy/port.js'
import { EXIT } from './exit-codes.js'

/** `mandate policy check [dir]` */
export async function policyCheck(dir: string): Promise<void> {
  const result = await loadPolicies(dir)
  if (!result.ok) {
    for (const issue of result.issues) process.stderr.write(`${formatIssue(issue)}\n`)
    process.stderr.write(`${result.issues.length} error(s) in ${dir}\n`)
    process.exitCode = 1
    return
  }
  for (const w of result.warnings) process.stderr.write(`warning: ${formatIssue(w)}\n`)
  for (const p of result.policies) process.stdout.write(`ok  ${p.agent}  (${p.source}, owner ${p.owner})\n`)
  process.stdout.write(`${result.policies.length} polic${result.policies.length === 1 ? 'y' : 'ies'} valid in ${dir}\n`)
}

/** `mandate policy secret` */
export function policySecret(): void {
  const secret = generateClientSecret()
  process.stdout.write(
    `client secret (give it to the agent, store it nowhere else):\n  ${secret}\n` +
      `for the policy file:\n  authentication:\n    method: client_secret_basic\n    secret_sha256: ${hashClientSecret(secret).toString('hex')}\n`,
  )
}

async function policiesIn(dir: string, label: string): Promise<readonly AgentPolicy[] | undefined> {
  const result = await loadPolicies(dir)
  if (result.ok) return result.policies
  for (const issue of result.issues) process.stderr.write(`${label}: ${formatIssue(issue)}\n`)
  return undefined
}

/** The policy directory `dir` as it is at git `ref`, extracted into a temporary directory. */
async function policiesAtRef(dir: string, ref: string, into: string): Promise<void> {
  const run = promisify(execFile)
  const { stdout } = await run('git', ['-C', dir, 'rev-parse', '--show-toplevel', '--show-prefix'])
  const [top, prefix = ''] = stdout.split('\n')
  const archive = join(into, 'policies.tar')
  // From the top: run in a subdirectory, git archive limits itself to it and then finds nothing at `ref:prefix`.
  await run('git', ['-C', top!, 'archive', '--format=tar', '-o', archive, `${ref}:${prefix}`])
  await run('tar', ['-xf', archive, '-C', into])
  await rm(archive)
}

function diffText(d: PolicyDiff): string {
  if (d.agents.length === 0) return 'no agent gains or loses anything\n'
  const lines: string[] = []
  for (const a of d.agents) {
    lines.push(`${a.agent} (${a.status})`)
    for (const c of a.changes) {
      const mark = c.widens ? '+' : c.change === 'loses' ? '-' : '~'
      const value = c.old !== undefined && c.new !== undefined ? `${c.old} -> ${c.new}` : (c.new ?? c.old ?? '')
      lines.push(`  ${mark} ${c.change} ${c.what}: ${value}${c.widens ? '  [widens]' : ''}`)
    }
  }
  lines.push(d.widens ? 'WIDENS: at least one agent gains (exit 6)' : 'nothing widens')
  return `${lines.join('\n')}\n`
}

/** `mandate policy diff OLD_DIR NEW_DIR` and `mandate policy diff --git REF [DIR]`: exit 6 when anything widens. */
export async function policyDiff(first: string | undefined, second: string | undefined, options: { git?: string; json?: boolean }): Promise<void> {
  let scratch: string | undefined
  try {
    let oldDir: string
    let newDir: string
    if (options.git !== undefined) {
      if (second !== undefined) throw new UsageError('with --git, name one directory (the working policies), not two')
      newDir = first ?? './policies'
      scratch = await mkdtemp(join(tmpdir(), 'mandate-policy-diff-'))
      try {
        await policiesAtRef(newDir, options.git, scratch)
      } catch {
        throw new UsageError(`cannot read ${newDir} at git ref ${options.git}`)
      }
      oldDir = scratch
    } else {
      if (first === undefined || second === undefined) throw new UsageError('name OLD_DIR and NEW_DIR, or --git REF')
      ;[oldDir, newDir] = [first, second]
    }
    const [o, n] = await Promise.all([policiesIn(oldDir, options.git === undefined ? 'old' : `at ${options.git}`), policiesIn(newDir, 'new')])
    if (o === undefined || n === undefined) {
      process.exitCode = EXIT.FAILED
      return
    }
    const d = diffPolicies(o, n)
    process.stdout.write(options.json === true ? `${JSON.stringify(d)}\n` : diffText(d))
    process.exitCode = d.widens ? EXIT.WIDENED : EXIT.OK
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`mandate: ${err.message}\n`)
    process.exitCode = EXIT.USAGE
  } finally {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true })
  }
}

class UsageError extends Error {}
