import type { Hono } from 'hono'
import type { AppEnv } from '../env.js'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import type { AuditLog } from '../../audit/port.js'
import { AGENT_ID, AGENT_ID_RULE, type AgentId, type Subject } from '../../core/claims.js'
import { explainExchange, type ExplainDeps, type Explanation } from '../../core/explain.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import { readJsonBody, refuseInvalid } from '../admin-input.js'
import { NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, PolicyExplanation } from '../openapi.js'
import { recordAdminRead } from './admin-audit.js'

const Printable = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
/** RFC 6749 §3.3: scope-tokens separated by single spaces. */
const ScopeList = z
  .string()
  .max(4096)
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/, 'must be scope tokens separated by single spaces (RFC 6749 §3.3)')

const AgentIdField = z.string().regex(AGENT_ID, AGENT_ID_RULE)

export const ExplainBody = z
  .strictObject({
    agent: AgentIdField.describe('The agent asking for a token.'),
    iss: Printable(2048).describe('Issuer of the user token.'),
    sub: Printable(1024).describe('The user (`sub` at `iss`).'),
    claims: z
      .record(z.string().max(256), z.unknown())
      .optional()
      .describe('Other claims of the user token (`scope`, `groups`, `may_act`, `iat`, `exp`…); `iss` and `sub` come from above.'),
    audience: Printable(2048).describe('The audience (or resource) asked for.'),
    scope: ScopeList.optional().describe('The scopes asked for; left out, the grant’s default scopes.'),
    ttl: z.number().int().min(1).max(31_536_000).optional().describe('The lifetime asked for, in seconds.'),
    chain: z
      .array(AgentIdField)
      .max(32)
      .optional()
      .describe('For a re-delegation: the agents already in the chain, newest first; the request is then at depth `chain.length + 1`.'),
  })
  .meta({ id: 'PolicyExplainRequest' })

export interface AdminPolicyDeps extends ExplainDeps {
  readonly keys: readonly AdminKey[]
  readonly audit: AuditLog
}

/** The explanation as JSON: snake_case, as the rest of the API. */
export function explanationJson(e: Explanation) {
  return {
    decision: e.decision,
    ...(e.error === undefined
      ? {}
      : { status: e.error.status, error: e.error.code, error_description: e.error.description, reason: e.error.detail ?? null, failed_check: e.error.check }),
    ...(e.grant === undefined
      ? {}
      : { grant: { audience: e.grant.audience, scope: e.grant.scopes.join(' '), expires_in: e.grant.expiresIn, actors: e.grant.actors } }),
    checks: e.checks.map((c) => ({
      check: c.check,
      outcome: c.outcome,
      ...(c.error === undefined ? {} : { error: c.error }),
      ...(c.detail === undefined ? {} : { reason: c.detail }),
    })),
  }
}

const explainDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'explainPolicy',
  summary: 'Explain what the token endpoint would answer an agent for a user, and why (auditor, admin)',
  description:
    'Runs the exchange’s own checks, in its order, on a described request: the agent’s policy, the user’s issuer, the policy evaluation ' +
    '(in force, the policy’s hours, delegator, may_act, depth, audience, grant, the grant’s hours, scope, lifetime), the kill switch, and the rate limits, read without drawing from them. ' +
    'Mints nothing and spends nothing; the question is recorded (`admin.policy.explained`) before it is answered. ' +
    'A token the caller would present is described, not sent: its signature is not part of the answer, but its described `exp`, `iat` and `nbf` are judged by the verifier’s rules (clock skew, longest lifetime).',
  security: [{ adminKey: [] }],
  requestBody: { required: true, content: jsonContent(ExplainBody) },
  responses: { 200: { description: 'The decision and every check.', content: jsonContent(PolicyExplanation) }, ...adminErrors(400, 401, 403, 413, 503) },
})

/** POST /admin/policy/explain, for auditors (read permission). */
export function mountAdminPolicy(app: Hono<AppEnv>, deps: AdminPolicyDeps): void {
  app.post('/admin/policy/explain', explainDoc, requireAdmin(deps.keys, 'read'), async function explainPolicy(c) {
    const parsed = ExplainBody.safeParse(await readJsonBody(c))
    if (!parsed.success) {
      refuseInvalid(parsed.error, 'body')
    }
    const b = parsed.data
    await recordAdminRead(c, deps.audit, 'admin.policy.explained', deps.now())
    const explanation = await explainExchange(
      {
        agent: b.agent as AgentId,
        userIssuer: b.iss,
        sub: b.sub as Subject,
        claims: b.claims ?? {},
        audiences: [b.audience],
        scopes: b.scope?.split(' '),
        requestedTtl: b.ttl,
        chain: (b.chain ?? []) as AgentId[],
      },
      deps,
    )
    return c.json(explanationJson(explanation), 200, NO_STORE)
  })
}
