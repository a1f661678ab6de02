/**
 * The six things a responder can kill or revoke from the console, as the
 * admin API names them (POST /admin/revocations, docs/http-api.md): what
 * each needs, what it stops, and how a revocation record's target reads.
 */
import type { Context } from 'hono'
import { z } from 'zod'
import type { ConsoleSession } from '../../../console/session.js'
import { csrfMatches } from '../../console-auth.js'
import type { AppEnv } from '../../env.js'
import type { RevocationRecord } from '../../openapi.js'

export type Revocation = z.infer<typeof RevocationRecord>
export type KillKind = Revocation['kind']
export type TargetField = 'agent' | 'sub' | 'iss' | 'instance' | 'jti' | 'chain'

export interface KillForm {
  readonly kind: KillKind
  /** The radio's words. */
  readonly label: string
  /** What the admin API needs for it; `iss` may be left out when one issuer is trusted for users. */
  readonly fields: readonly TargetField[]
  /** What it stops, after "This stops". */
  readonly stops: string
}

/** In the order the form offers them. */
export const KILL_FORMS: readonly KillForm[] = [
  {
    kind: 'agent',
    label: 'This agent, everywhere',
    fields: ['agent'],
    stops: 'every live token the agent holds or appears in, for every user, and every token it asks for until the kill is lifted',
  },
  {
    kind: 'agent_sub',
    label: 'This agent, for one user',
    fields: ['agent', 'sub', 'iss'],
    stops: 'the agent’s live tokens for that user, and its new ones for that user until the kill is lifted; its other users are untouched',
  },
  {
    kind: 'instance',
    label: 'One running instance of the agent',
    fields: ['agent', 'instance'],
    stops: 'every token with that instance of the agent at any hop, and its token requests until the kill is lifted; the agent’s other instances keep working',
  },
  { kind: 'jti', label: 'One token', fields: ['jti'], stops: 'that token; tokens already delegated from it stay valid, no new ones can be' },
  { kind: 'chain', label: 'One delegation chain', fields: ['chain'], stops: 'that token and every token delegated from it, at any depth' },
  {
    kind: 'sub',
    label: 'One user, everywhere',
    fields: ['sub', 'iss'],
    stops: 'every delegation made for that user, by any agent, and new ones until the kill is lifted',
  },
]

export const FIELD_LABELS: Record<TargetField, string> = {
  agent: 'Agent',
  sub: 'User (sub)',
  iss: 'User’s issuer (iss)',
  instance: 'Instance (act.instance)',
  jti: 'Token (jti)',
  chain: 'Chain from token (jti)',
}

export const formOf = (kind: KillKind): KillForm => KILL_FORMS.find((f) => f.kind === kind)!
/** Kills hold until lifted; token and chain revocations cannot be lifted. */
export const LIFTABLE: ReadonlySet<KillKind> = new Set(['agent', 'agent_sub', 'instance', 'sub'])

// A target field as the admin API takes it: printable ASCII, no spaces (it refuses anything else too).
const Field = z
  .string()
  .trim()
  .max(2048)
  .transform((s) => (s === '' ? undefined : s))
  .pipe(
    z
      .string()
      .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
      .optional(),
  )

/** A submitted kill form: the kind, the target's fields, the reason; `confirm=yes` once confirmed. */
export const KillFormBody = z.object({
  csrf: z.string().max(256).optional(),
  kind: z.enum(KILL_FORMS.map((f) => f.kind) as [KillKind, ...KillKind[]], 'choose what to kill'),
  agent: Field.optional(),
  sub: Field.optional(),
  iss: Field.optional(),
  instance: Field.optional(),
  jti: Field.optional(),
  chain: Field.optional(),
  reason: z.string().trim().min(1, 'a reason is required').max(500, 'the reason is at most 500 characters'),
  confirm: z.literal('yes').optional(),
})
export type KillChoice = z.infer<typeof KillFormBody>

/** The fields a kind needs that the form left empty. */
export function missingFields(choice: KillChoice): TargetField[] {
  return formOf(choice.kind).fields.filter((f) => f !== 'iss' && choice[f] === undefined)
}

/** POST /admin/revocations's body (RevokeBody in admin-revocations.ts) for a choice: its kind's fields only. */
export function revokeBody(choice: KillChoice): Record<string, string> {
  const body: Record<string, string> = { reason: choice.reason }
  for (const f of formOf(choice.kind).fields) {
    const v = choice[f]
    if (v !== undefined) body[f] = v
  }
  return body
}

/** The kind pre-chosen from a link's query: `kind`, else what its fields name. */
export function kindFromQuery(q: Partial<Record<TargetField | 'kind', string | undefined>>): KillKind {
  const named = KILL_FORMS.find((f) => f.kind === q.kind)
  if (named !== undefined) return named.kind
  if (q.agent !== undefined && q.instance !== undefined) return 'instance'
  if (q.agent !== undefined && q.sub !== undefined) return 'agent_sub'
  if (q.agent !== undefined) return 'agent'
  if (q.sub !== undefined) return 'sub'
  if (q.chain !== undefined) return 'chain'
  if (q.jti !== undefined) return 'jti'
  return 'agent'
}

const str = (v: unknown) => (typeof v === 'string' ? v : '?')

/** A target in words: `agent demo-agent`, `user alice at https://idp…`, … */
export function targetText(kind: KillKind, target: Readonly<Record<string, unknown>>): string {
  const user = () => `user ${str(target['sub'])}${target['iss'] === undefined || target['iss'] === null ? '' : ` at ${str(target['iss'])}`}`
  switch (kind) {
    case 'agent':
      return `agent ${str(target['agent'])}`
    case 'agent_sub':
      return `agent ${str(target['agent'])} for ${user()}`
    case 'instance':
      return `instance ${str(target['instance'])} of agent ${str(target['agent'])}`
    case 'jti':
      return `token ${str(target['jti'])}`
    case 'chain':
      return `the chain from token ${str(target['jti'])}`
    case 'sub':
      return user()
  }
}

/** The agent a revocation names, if any. */
export const agentOf = (r: Revocation): string | undefined => (typeof r.target['agent'] === 'string' ? r.target['agent'] : undefined)

/** Whether a person's console roles may kill and lift (the admin API's `revoke`): a button they cannot use is not shown. */
export const mayKill = (session: Pick<ConsoleSession, 'roles'>): boolean => session.roles.includes('responder') || session.roles.includes('admin')

/**
 * Whether a submitted console form may act: it carries the session's CSRF
 * token, and the browser does not say it came from another site (as the
 * admin API refuses such a request, http/console-auth.ts).
 */
/** What a refused form is told. */
export const FORM_REFUSED = 'This form did not come from your session’s own page, so nothing was done. Reload the page and try again.'

export function formAccepted(c: Context<AppEnv>, session: ConsoleSession, csrf: string | undefined): boolean {
  return c.req.header('sec-fetch-site') !== 'cross-site' && csrfMatches(session, csrf)
}

/** A console form's urlencoded body, bounded, as an object of its (last) values. */
export async function formFields(c: Context<AppEnv>, max = 8192): Promise<Record<string, string>> {
  return Object.fromEntries(new URLSearchParams((await c.req.text()).slice(0, max)))
}
