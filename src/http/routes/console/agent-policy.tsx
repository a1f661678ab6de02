/**
 * The agent page's Policy and Suggested shrink sections: the policy file as
 * written (GET /admin/agents/{id}/policy), and the change `mandate policy
 * shrink` would make to it, from the same code (policy/shrink.ts), as a
 * diff.
 */
import type { z } from 'zod'
import { shrinkPatch, shrinkText, ShrinkError } from '../../../policy/shrink.js'
import type { AgentPolicyBody } from '../admin-agent-policy.js'
import type { ApiAnswer } from './api.js'
import { Unavailable, type UnusedAgent } from './agent-sections.js'

export type AgentPolicy = z.infer<typeof AgentPolicyBody>

export function PolicySection({ policy }: { policy: ApiAnswer<AgentPolicy> }) {
  if (!policy.ok) return <Unavailable what="The policy file is" answer={policy} />
  const p = policy.body
  return (
    <>
      <p>
        File: <code>{p.file}</code>
      </p>
      {p.current ? null : <p class="notice warn">The file changed since this policy was loaded: what it says now is shown, not what is in force.</p>}
      {p.redacted.length === 0 ? null : <p class="muted">{`Redacted: ${p.redacted.join(', ')} (a client secret’s hash).`}</p>}
      {p.yaml === null ? <p class="muted">The file can no longer be read.</p> : <pre>{p.yaml}</pre>}
    </>
  )
}

/** A unified diff, each line marked added or removed in words (for screen readers) as well as colour. */
function Diff({ patch }: { patch: string }) {
  const lines = patch.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1))
  return (
    <pre class="diff">
      {lines.map((l) => {
        const cls = l.startsWith('+') && !l.startsWith('+++') ? 'add' : l.startsWith('-') && !l.startsWith('---') ? 'del' : 'ctx'
        return (
          <span class={cls}>
            {cls === 'add' ? <span class="visually-hidden">added: </span> : cls === 'del' ? <span class="visually-hidden">removed: </span> : null}
            {`${l}\n`}
          </span>
        )
      })}
    </pre>
  )
}

/** The change `mandate policy shrink` would make, from the same code (policy/shrink.ts), as a diff. */
export function ShrinkSection({
  agent,
  policy,
  unused,
}: {
  agent: string
  policy: ApiAnswer<AgentPolicy>
  unused: ApiAnswer<unknown> & { agentReport?: UnusedAgent | undefined }
}) {
  if (!unused.ok) return <Unavailable what="The usage report is" answer={unused} />
  const u = unused.agentReport
  if (u === undefined) return <p class="muted">No usage report for this agent.</p>
  if (!u.suggest) return <p>{`Nothing is suggested: ${u.reason ?? 'too little use'}.`}</p>
  if (!policy.ok || policy.body.yaml === null) return <p class="muted">The policy file cannot be read, so no diff is shown.</p>
  let shrunk: { text: string; removed: string[] }
  try {
    shrunk = shrinkText(policy.body.yaml, u)
  } catch (err) {
    if (err instanceof ShrinkError) return <p class="muted">{`No diff: ${err.message}.`}</p>
    throw err
  }
  if (shrunk.removed.length === 0) return <p>Every grant was used in the last 30 days: nothing to remove.</p>
  const file = policy.body.file
  return (
    <>
      <p>{`Unused in the last 30 days, so suggested for removal: ${shrunk.removed.join('; ')}.`}</p>
      <Diff patch={shrinkPatch(file, file, policy.body.yaml, shrunk.text)} />
      <p class="muted">
        To apply it, the owner runs <code>{`mandate policy shrink ${agent} --since 30d --write`}</code> in the policies directory (it checks the result is a
        valid policy first).
      </p>
    </>
  )
}
