import { z } from 'zod'
import { AGENT_ID, AGENT_ID_RULE } from '../core/claims.js'
import { parseSpiffeId, parseSpiffeIdPrefix } from '../core/spiffe-id.js'
import { AGE_DURATION, AGE_DURATION_RULE } from '../core/credential-age.js'
import { isAllowedUpstreamUrl } from '../tokens/fetch-limited.js'
import { ASYMMETRIC_ALGORITHMS } from '../tokens/jws.js'
import { HOURS_RULE, isTimeZone, parseHours, TIME_ZONE_RULE } from '../core/hours.js'

const AgentIdString = z.string().regex(AGENT_ID, AGENT_ID_RULE)

const ScopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'must be an RFC 6749 scope token')

export const AbsoluteUri = z.string().refine((s) => {
  try {
    const u = new URL(s)
    return u.hash === '' && s === s.trim()
  } catch {
    return false
  }
}, 'must be an absolute URI without a fragment')

const PublicJwk = z
  .looseObject({
    kty: z.enum(['EC', 'RSA', 'OKP']).describe('key type; the other JWK members (crv, x, y, n, e) as RFC 7517 has them'),
    alg: z.enum(ASYMMETRIC_ALGORITHMS).describe('algorithm this key signs assertions with; required'),
    kid: z.string().min(1).optional().describe('key id; needed when there are several keys'),
  })
  .refine((k) => !('d' in k) && !('p' in k) && !('k' in k), 'must be a public key (no private members)')

/** RFC 7523 client authentication; shared by agent policies and resource servers. */
export const PrivateKeyJwtAuthentication = z
  .strictObject({
    method: z.literal('private_key_jwt').describe('RFC 7523 client assertion signed with one of these keys'),
    jwks: z
      .strictObject({ keys: z.array(PublicJwk).min(1).max(10).describe('the client’s public keys (1-10), inline') })
      .optional()
      .describe('the client’s public keys, inline; or `jwks_uri`'),
    jwks_uri: z
      .string()
      .refine(
        (s) => URL.canParse(s) && isAllowedUpstreamUrl(new URL(s)) && new URL(s).hash === '',
        'must be https (http only on localhost), without a fragment',
      )
      .optional()
      .describe(
        'where the client publishes its JWK set (RFC 7591 §2 `jwks_uri`), instead of `jwks`: fetched with the bounds of config `jwks` (size, key count, timeout, cache, cooldown) like an issuer’s',
      ),
  })
  .refine((a) => (a.jwks === undefined) !== (a.jwks_uri === undefined), 'give exactly one of jwks and jwks_uri')

/** Most secrets one client may hold at once: enough for a rollover, few enough to compare every one per request. */
export const MAX_CLIENT_SECRETS = 5
const SecretSha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (sha256 of the secret)')

/** RFC 6749 §2.3.1 client authentication; shared by agent policies and resource servers. */
export const ClientSecretBasicAuthentication = z.strictObject({
  method: z.literal('client_secret_basic').describe('HTTP Basic with a generated secret'),
  secret_sha256: z
    .union([
      SecretSha256,
      z
        .array(SecretSha256)
        .min(1)
        .max(MAX_CLIENT_SECRETS)
        .refine((l) => new Set(l).size === l.length, 'must not repeat a secret'),
    ])
    .describe(
      `SHA-256 of the secret, hex, or a list of up to ${MAX_CLIENT_SECRETS} (any of them is accepted: a rollover); \`mandate policy secret\` makes one, \`--rotate\` adds one to a policy`,
    ),
})

/** draft-ietf-oauth-spiffe-client-auth: a JWT-SVID as the client assertion, its SPIFFE ID naming the agent. */
const SpiffeAuthentication = z
  .strictObject({
    method: z.literal('spiffe').describe('a SPIFFE JWT-SVID sent as client_assertion (type `urn:ietf:params:oauth:client-assertion-type:jwt-spiffe`)'),
    spiffe_id: z
      .string()
      .refine((s) => parseSpiffeId(s) !== undefined, 'must be a SPIFFE ID: spiffe://<lowercase trust domain>/<path>, no port, query, fragment, `.` or `..`')
      .optional()
      .describe('the one SPIFFE ID (the SVID’s `sub`) that is this agent'),
    spiffe_id_prefix: z
      .string()
      .refine((s) => parseSpiffeIdPrefix(s) !== undefined, 'must be a SPIFFE ID ending in `/` (spiffe://example.org/ns/prod/)')
      .optional()
      .describe(
        'instead of `spiffe_id`: every SPIFFE ID under this path is this agent; ends in `/`, so it matches whole segments. An exact `spiffe_id` of another policy wins over it, and a longer prefix over a shorter one',
      ),
  })
  .refine((a) => (a.spiffe_id === undefined) !== (a.spiffe_id_prefix === undefined), 'give exactly one of spiffe_id and spiffe_id_prefix')

export const PolicyAuthentication = z.discriminatedUnion('method', [
  PrivateKeyJwtAuthentication,
  ClientSecretBasicAuthentication,
  z.strictObject({
    method: z.literal('workload_identity').describe('a token from an issuer trusted for workloads, sent as actor_token'),
    issuer: z.url().describe('the workload issuer (must be listed in config trust.workloads)'),
    subject: z.string().min(1).describe('the `sub` that identifies this agent’s workload'),
  }),
  SpiffeAuthentication,
])
export type PolicyAuthentication = z.infer<typeof PolicyAuthentication>

const UserRule = z.strictObject({
  issuer: z.string().min(1).describe('issuer of the user’s token, or of the ID-JAG naming the user (listed in config trust.subjects or trust.id_jag)'),
  claims: z
    .record(z.string().min(1), z.array(z.string()).min(1))
    .default({})
    .describe('claim → accepted values; the token’s claim must hold at least one of them'),
})

// `300s`, `10m`, `1h`: a count of 1-999999, then the unit.
const SHORT_DURATION = /^([1-9][0-9]{0,5})(s|m|h)$/
const SHORT_UNITS = { s: 1, m: 60, h: 3600 } as const

/** `300s` → 300; `undefined` when malformed (the schema refuses it first). */
export function parseShortDuration(text: string): number | undefined {
  const m = SHORT_DURATION.exec(text)
  return m === null ? undefined : Number(m[1]) * SHORT_UNITS[m[2] as keyof typeof SHORT_UNITS]
}
const ShortDuration = (max: number) =>
  z
    .string()
    .regex(SHORT_DURATION, 'must be a duration in seconds, minutes or hours, such as 300s, 10m or 1h')
    .refine((t) => (parseShortDuration(t) ?? 0) <= max, `must be at most ${max / 3600}h`)

/** Most an approval request may wait, and most an approval may be reused. */
export const MAX_APPROVAL_TIMEOUT = 24 * 3600
export const MAX_APPROVAL_REUSE = 24 * 3600

const Approval = z
  .strictObject({
    required: z.boolean().default(true).describe('false turns the approval off without deleting it'),
    approvers: z
      .union([z.enum(['user', 'owner']), z.string().regex(/^group:[A-Za-z0-9._:@/-]{1,128}$/, 'must be user, owner or group:NAME')])
      .default('user')
      .describe(
        'who decides: `user` (the person the agent acts for, same issuer and sub), `owner` (the policy’s owner), or `group:NAME` (a member of the IdP group NAME)',
      ),
    timeout: ShortDuration(MAX_APPROVAL_TIMEOUT).default('300s').describe('how long a request waits for a decision, e.g. `300s`'),
    reuse: z
      .union([z.literal('none'), ShortDuration(MAX_APPROVAL_REUSE)])
      .default('none')
      .describe('`none`, or how long an approval also covers identical requests (same agent, user, audience, scopes and details), e.g. `10m`'),
  })
  .describe('a person approves each token for this audience before it is issued (OpenID CIBA, poll mode)')

/** RFC 9396 §2: a type is a string; these keep it printable and short. */
const DetailType = z.string().regex(/^[A-Za-z0-9._:/-]{1,128}$/, 'must be 1-128 of A-Z a-z 0-9 . _ : / -')

/** Hours as policies write them (core/hours.ts): `Mon-Fri 08:00-18:00, Sat 09:00-12:00`. */
const HoursText = z.string().refine((h) => parseHours(h) !== undefined, HOURS_RULE)
const TimeZoneText = z.string().refine(isTimeZone, TIME_ZONE_RULE)

const Grant = z
  .strictObject({
    audience: AbsoluteUri.describe('resource (RFC 8707) the token is bound to'),
    scopes: z.array(ScopeToken).min(1).describe('every scope the agent may ever get there'),
    default_scopes: z.array(ScopeToken).default([]).describe('granted when a request leaves scope out'),
    approval: Approval.optional(),
    authorization_details: z
      .record(DetailType, z.record(z.string(), z.unknown()))
      .optional()
      .describe(
        'RFC 9396 types a request may carry for this audience: type → JSON Schema (2020-12) of the detail’s other members; the token carries the details as approved',
      ),
    hours: HoursText.optional().describe(
      'when this grant applies, e.g. `Mon-Fri 08:00-18:00`, in `timezone` (from 08:00 up to, not including, 18:00); outside them the audience is refused (`invalid_target`) as if not granted. Absent: always',
    ),
    timezone: TimeZoneText.optional().describe('IANA time zone of the grant’s `hours`; default: the policy’s `timezone`'),
  })
  .refine((g) => g.default_scopes.every((s) => g.scopes.includes(s)), {
    error: 'default_scopes must be a subset of scopes',
    path: ['default_scopes'],
  })

/** Seconds in each unit a rate may be given per. */
export const RATE_UNITS = { s: 1, min: 60, h: 3600 } as const
const RATE = /^([1-9][0-9]{0,5})\/(s|min|h)$/

/** `60/min` → 1 token/s; `undefined` when malformed (the schema refuses it first). */
export function parseRate(text: string): { readonly count: number; readonly perSecond: number } | undefined {
  const m = RATE.exec(text)
  if (m === null) return undefined
  const count = Number(m[1])
  return { count, perSecond: count / RATE_UNITS[m[2] as keyof typeof RATE_UNITS] }
}

const Bucket = z
  .strictObject({
    rate: z
      .string()
      .regex(RATE, 'must be <count>/<unit>: a count of 1-999999, then s, min or h (e.g. 60/min)')
      .describe('sustained rate, `<count>/s`, `/min` or `/h`, e.g. `60/min`'),
    burst: z
      .number()
      .int()
      .min(1)
      .max(999_999)
      .optional()
      .describe('requests allowed at once after a quiet spell (the bucket’s size); default: the rate’s count'),
  })
  .describe('a token bucket: `burst` requests at once, refilled at `rate`')

// `90d`, `36h`: a count of 1-9999, then the unit.
const DURATION = /^([1-9][0-9]{0,3})(d|h)$/

/** A duration as policies and the config's governance section write it: `90d`, `36h`. */
export const DurationText = z.string().regex(DURATION, 'must be a duration in days or hours, such as 90d or 36h')

/** `90d` → seconds; `undefined` when malformed (the schemas refuse it first). */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text)
  if (m === null) return undefined
  return Number(m[1]) * (m[2] === 'd' ? 86_400 : 3_600)
}

/** One anomaly rule's settings; every field optional (a policy's override the config's, which override the defaults). */
const AnomalyRuleAction = z
  .enum(['alert', 'quarantine', 'off'])
  .optional()
  .describe('`alert`: an `agent.anomaly` record; `quarantine`: also an agent kill; `off`: not evaluated (default alert)')
const Factor = z.number().min(1).max(10_000).optional().describe('trips above this many times the 7-day hourly baseline (default 10)')

/** Anomaly rules, in the config (`governance.anomalies.rules`) and in a policy (`anomalies`): docs/anomalies.md. */
export const AnomalyRules = z
  .strictObject({
    rate: z
      .strictObject({
        action: AnomalyRuleAction,
        factor: Factor,
        min_tokens: z.number().int().min(1).max(1_000_000_000).optional().describe('tokens in the current hour below which it never trips (default 100)'),
      })
      .optional()
      .describe('tokens in the current UTC hour over `factor` times the hourly mean of the 7 days before'),
    new_audience: z.strictObject({ action: AnomalyRuleAction }).optional().describe('a token for an audience the agent never had a token for'),
    denial_burst: z
      .strictObject({
        action: AnomalyRuleAction,
        count: z.number().int().min(2).max(100_000).optional().describe('denials that trip it (default 20)'),
        window_seconds: z.number().int().min(1).max(3_600).optional().describe('within this many seconds (default 60)'),
      })
      .optional()
      .describe('`count` denials of the agent within `window_seconds`'),
    user_spike: z
      .strictObject({
        action: AnomalyRuleAction,
        factor: Factor,
        min_users: z.number().int().min(1).max(1_000_000_000).optional().describe('new users in the current hour below which it never trips (default 20)'),
      })
      .optional()
      .describe('users first served in the current UTC hour over `factor` times the hourly mean of the 7 days before'),
    outside_hours: z
      .strictObject({ action: AnomalyRuleAction })
      .optional()
      .describe('a token outside the hours a policy gives the rule, else the policy’s `hours` (policies with neither are not checked)'),
  })
  .describe('anomaly rules: rate, new_audience, denial_burst, user_spike, outside_hours')
export type AnomalyRules = z.infer<typeof AnomalyRules>

/** A policy's anomaly rules: the config's, and `outside_hours` may declare the hours it expects. */
const PolicyAnomalyRules = AnomalyRules.extend({
  outside_hours: z
    .strictObject({
      action: AnomalyRuleAction,
      hours: HoursText.optional().describe('when the agent is expected to be used, e.g. `Mon-Fri 07:00-20:00`; default: the policy’s `hours`'),
      timezone: TimeZoneText.optional().describe('IANA time zone of the rule’s `hours`; default: the policy’s `timezone`'),
    })
    .optional()
    .describe('a token outside the rule’s `hours`, else the policy’s (a policy with neither is not checked)'),
})

/** The longest lifetime any policy may give a token, seconds. */
export const MAX_TOKEN_TTL = 24 * 3600

export const Policy = z
  .strictObject({
    agent: AgentIdString.describe('the agent’s id: its client_id; must match the file name'),
    owner: z.string().trim().min(1, 'is required: a person or team contact').describe('who answers for this agent'),
    purpose: z.string().trim().min(1).describe('what the agent is for, in a sentence'),
    expires: z
      .union([z.iso.datetime({ offset: true }), z.iso.date()])
      .describe('ISO 8601 date-time with offset, or date (UTC midnight); from then on the agent gets nothing'),
    authentication: PolicyAuthentication.describe('how the agent proves who it is'),
    users: z.array(UserRule).default([]).describe('which users may delegate to this agent (empty: only re-delegation from a parent agent)'),
    grants: z.array(Grant).min(1).describe('audiences and their scopes'),
    token_ttl: z
      .strictObject({
        default: z.number().int().min(1).max(MAX_TOKEN_TTL).describe('seconds, when the request does not ask (expires_in)'),
        max: z.number().int().min(1).max(MAX_TOKEN_TTL).describe('seconds; no request gets more'),
      })
      .refine((t) => t.default <= t.max, { error: 'default must not exceed max', path: ['default'] })
      .describe('lifetime of issued tokens, seconds'),
    rate_limit: z
      .strictObject({
        agent: Bucket.optional().describe('every exchange by this agent, whoever the user, counted across all instances'),
        user: Bucket.optional().describe('exchanges by this agent for one user (the subject token’s issuer and `sub`), across all instances'),
      })
      .default({})
      .describe('token-exchange rate limits; over one, the answer is 429 with Retry-After. Absent: no limit'),
    delegation: z
      .strictObject({
        max_depth: z.number().int().min(1).max(8).default(1).describe('longest chain of agents, this one included, its tokens may be part of'),
        sub_agents: z.array(AgentIdString).default([]).describe('agents this one may hand a narrower token to'),
      })
      .default({ max_depth: 1, sub_agents: [] })
      .describe('re-delegation'),
    require_dpop: z
      .boolean()
      .optional()
      .describe(
        'the agent must prove a key with a DPoP proof (RFC 9449) at every token request, and gets only tokens bound to that key (`invalid_dpop_proof` otherwise). Default: the config’s `dpop.required`',
      ),
    // Lifecycle (attestation) fields.
    attest_every: DurationText.optional().describe(
      'the owner re-attests the agent this often (`mandate agents attest`); past it plus `governance.attestation_grace` the agent gets no tokens. Absent: no attestation needed',
    ),

    // Anomaly rules, and the hours the agent may get tokens in.
    anomalies: PolicyAnomalyRules.optional().describe('anomaly rules for this agent, each field over the config’s `governance.anomalies.rules`'),
    hours: HoursText.optional().describe(
      'when the agent may get tokens, e.g. `Mon-Fri 08:00-18:00, Sat 09:00-12:00`, in `timezone` (from 08:00 up to, not including, 18:00); outside them every exchange is refused (`unauthorized_client`). Also the hours the `outside_hours` rule expects when it has none of its own. Absent: always',
    ),
    timezone: TimeZoneText.default('UTC').describe('IANA time zone of `hours`, and of a grant’s or the `outside_hours` rule’s `hours` that name none'),

    // Credential age.
    max_credential_age: z
      .string()
      .regex(AGE_DURATION, AGE_DURATION_RULE)
      .optional()
      .describe(
        'oldest a credential of this agent may be, counted from its first use (e.g. `30d`); warned `governance.credentials.warn_before` ahead, refused (`invalid_client`) after. Default: the config’s `governance.credentials.max_age` (90d)',
      ),
  })
  .superRefine((p, ctx) => {
    const seen = new Set<string>()
    p.grants.forEach((g, i) => {
      if (seen.has(g.audience)) ctx.addIssue({ code: 'custom', message: 'duplicate audience', path: ['grants', i, 'audience'] })
      seen.add(g.audience)
    })
    const rule = p.anomalies?.outside_hours
    if (rule !== undefined && rule.action !== 'off' && rule.hours === undefined && p.hours === undefined) {
      ctx.addIssue({ code: 'custom', message: 'outside_hours needs hours of its own or the policy’s', path: ['anomalies', 'outside_hours'] })
    }
    if (p.delegation.sub_agents.includes(p.agent)) {
      ctx.addIssue({ code: 'custom', message: 'an agent cannot be its own sub-agent', path: ['delegation', 'sub_agents'] })
    }
  })
export type Policy = z.infer<typeof Policy>
