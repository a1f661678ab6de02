import { generateClientSecret, hashClientSecret } from '../tokens/client-auth.js'
import { loadPolicies } from '../policy/load.js'
import { formatIssue } from '../policy/port.js'

/** `mandate policy check [dir]` */
export async function policyCheck(dir: string): Promise<void> {
  const result = await loadPolicies(dir)
  if (!result.ok) {
    for (const issue of result.issues) process.stderr.write(`${formatIssue(issue)}\n`)
    process.stderr.write(`${result.issues.length} error(s) in ${dir}\n`)
    process.exitCode = 1
    return
  }
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
