/**
 * GET /admin/agents/{id}/policy: the policy file in force for an agent, as
 * its team wrote it (comments and layout kept), with the path it was loaded
 * from; client secret hashes are redacted (policy/redact.ts). The store
 * keeps the file's path and hash, not its text: the text is read again, and
 * `current` says whether it is still the text that was loaded (a file
 * edited since, and not yet reloaded or refused on reload, is not).
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Hono } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import type { AuditLog } from '../../audit/port.js'
import type { AgentId } from '../../core/claims.js'
import type { PolicyStore } from '../../policy/port.js'
import { redactPolicyText } from '../../policy/redact.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import type { AppEnv } from '../env.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, parametersOf } from '../openapi.js'
import { recordAdminRead } from './admin-audit.js'

// An agent id as policies spell them (policy/schema.ts), and no longer.
const AgentParam = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII')

export const AgentPolicyBody = z
  .strictObject({
    agent: z.string(),
    file: z.string().describe('The file the policy in force was loaded from.'),
    sha256: z.string().describe('SHA-256 of the text in force, hex (as `token.issued` records name it in `policy_hash`).'),
    current: z.boolean().describe('Whether the file still holds that text; false when it was edited since and the edit is not in force (yet).'),
    yaml: z.string().nullable().describe('The file’s text now, secret hashes redacted; null when it can no longer be read or is no longer YAML.'),
    redacted: z.array(z.string()).describe('The fields whose values were replaced by `<redacted>` (dotted paths).'),
  })
  .meta({ id: 'AgentPolicy' })

const policyDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'showAgentPolicy',
  summary: 'The policy file of an agent, as written, secret hashes redacted (auditor, admin)',
  description: 'Read from the file the policy in force was loaded from; `current` is false when the file changed since. The read is recorded.',
  security: [{ adminKey: [] }],
  parameters: parametersOf('path', z.object({ id: AgentParam.describe('The agent id.') })),
  responses: { 200: { description: 'The policy file.', content: jsonContent(AgentPolicyBody) }, ...adminErrors(400, 401, 403, 404) },
})

export interface AdminAgentPolicyDeps {
  readonly keys: readonly AdminKey[]
  readonly audit: AuditLog
  readonly policies: PolicyStore
  readonly now: () => number
}

export function mountAdminAgentPolicy(app: Hono<AppEnv>, deps: AdminAgentPolicyDeps): void {
  app.get('/admin/agents/:id/policy', policyDoc, requireAdmin(deps.keys, 'read'), async function showAgentPolicy(c) {
    const id = AgentParam.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id')
    const policy = deps.policies.snapshot().get(id.data as AgentId)
    if (policy === undefined) throw new AdminError('not_found', 'no policy names that agent')
    await recordAdminRead(c, deps.audit, 'admin.audit.read', deps.now())
    const text = await readFile(policy.source, 'utf8').catch(() => undefined)
    const shown = text === undefined ? undefined : redactPolicyText(text)
    const body: z.infer<typeof AgentPolicyBody> = {
      agent: policy.agent,
      file: policy.source,
      sha256: policy.sourceHash,
      current: text !== undefined && createHash('sha256').update(text).digest('hex') === policy.sourceHash,
      yaml: shown?.text ?? null,
      redacted: shown?.redacted ?? [],
    }
    return c.json(body, 200, NO_STORE)
  })
}
