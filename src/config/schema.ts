/**
 * The one schema of Mandate's configuration (file and environment), every
 * section with its defaults and descriptions. Over 400 lines because it is
 * one schema: split, a reader would chase a section's checks across files,
 * and the generated reference (scripts/reference.ts) reads it whole.
 */
import { isIP } from 'node:net'
import { z } from 'zod'
import { compileAuthentication, UNUSABLE_JWK } from '../policy/load.js'
import { AbsoluteUri, AnomalyRules, ClientSecretBasicAuthentication, DurationText, PrivateKeyJwtAuthentication } from '../policy/schema.js'
import { isAllowedUpstreamUrl } from '../tokens/fetch-limited.js'
import { AGE_DURATION, AGE_DURATION_RULE, parseAgeDuration } from '../core/credential-age.js'
import { WEBHOOK_EVENT_TYPES } from '../notify/events.js'
import { ASYMMETRIC_ALGORITHMS } from '../tokens/jws.js'

const isLoopback = (u: URL) => ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)

/** https, or http on a loopback host (tests, a local IdP). */
const IssuerUrl = z.url().superRefine((s, ctx) => {
  // zod still runs refinements after z.url() failed; that failure is already reported.
  if (!URL.canParse(s)) return
  const u = new URL(s)
  if (u.search !== '' || u.hash !== '') ctx.addIssue({ code: 'custom', message: 'must have no query or fragment' })
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && isLoopback(u))) {
    ctx.addIssue({ code: 'custom', message: 'must be https (http only on localhost)' })
  }
})

export const TrustedIssuerConfig = z.strictObject({
  issuer: IssuerUrl.describe('issuer identifier, compared exactly with the token’s `iss`'),
  jwks_uri: IssuerUrl.optional().describe('JWKS location; discovered from RFC 8414 / OIDC metadata when absent'),
  algorithms: z.array(z.enum(ASYMMETRIC_ALGORITHMS)).min(1).describe('signature algorithms this issuer uses; nothing else is accepted from it'),
  audience: z.string().min(1).optional().describe('value its tokens must carry in `aud`; default: the broker’s issuer'),
  typ: z
    .string()
    .min(1)
    .nullable()
    .optional()
    .describe('required JWT `typ` header; default `at+jwt` for subjects and null for workloads; null accepts no typ or `JWT`'),
})
export type TrustedIssuerConfig = z.infer<typeof TrustedIssuerConfig>

/** One SPIFFE trust domain whose JWT-SVIDs authenticate agents (draft-ietf-oauth-spiffe-client-auth). */
export const SpiffeTrustDomainConfig = z
  .strictObject({
    trust_domain: z
      .string()
      .regex(/^[a-z0-9._-]+$/, 'must be a SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_` (SPIFFE-ID §2.1)')
      .describe('the trust domain, as the SPIFFE IDs of its workloads name it (`example.org` for spiffe://example.org/…)'),
    bundle_file: z.string().min(1).optional().describe('a SPIFFE bundle (a JWK set) on disk, e.g. one written by SPIRE; read again when it changes'),
    bundle_url: IssuerUrl.optional().describe(
      'a SPIFFE bundle endpoint (https_web profile) serving the bundle; fetched within the bounds of `jwks` (size, timeout) and refreshed',
    ),
    refresh_seconds: z
      .number()
      .int()
      .min(1)
      .max(86_400)
      .default(300)
      .describe('longest time between two reads of the bundle; a shorter `spiffe_refresh_hint` in the bundle is honoured (never under 1 s)'),
  })
  .refine((t) => (t.bundle_file === undefined) !== (t.bundle_url === undefined), 'give exactly one of bundle_file and bundle_url')
export type SpiffeTrustDomainConfig = z.infer<typeof SpiffeTrustDomainConfig>

/** An issuer of user subject tokens: a trusted issuer that may also be allowed ID tokens. */
export const SubjectIssuerConfig = TrustedIssuerConfig.extend({
  accept_id_tokens: z
    .boolean()
    .default(false)
    .describe('also accept its OpenID Connect ID tokens as subject tokens (refused by default: an ID token is not an access token)'),
})
export type SubjectIssuerConfig = z.infer<typeof SubjectIssuerConfig>

/** An issuer of workload identity tokens (actor tokens): a trusted issuer that may name the claim holding the instance. */
export const WorkloadIssuerConfig = TrustedIssuerConfig.extend({
  instance_claim: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'must be a top-level claim name: letters, digits, `_`, `.`, `:`, `-`')
    .refine((c) => !['iss', 'aud', 'exp', 'nbf', 'iat', 'jti'].includes(c), 'must not be a registered claim other than sub')
    .optional()
    .describe(
      'top-level claim of its tokens that names the running copy of the agent (its instance, e.g. a pod name), a string; default `sub`. A token without it is refused',
    ),
})
export type WorkloadIssuerConfig = z.infer<typeof WorkloadIssuerConfig>

/**
 * An IdP trusted to issue Identity Assertion JWT Authorization Grants
 * (draft-ietf-oauth-identity-assertion-authz-grant) redeemed with the RFC
 * 7523 JWT bearer grant. Its own role: `typ` is fixed (`oauth-id-jag+jwt`)
 * and `aud` is always this broker's issuer.
 */
export const IdJagIssuerConfig = z.strictObject({
  issuer: IssuerUrl.describe('issuer identifier, compared exactly with the ID-JAG’s `iss`'),
  jwks_uri: IssuerUrl.optional().describe('JWKS location; discovered from RFC 8414 / OIDC metadata when absent'),
  algorithms: z.array(z.enum(ASYMMETRIC_ALGORITHMS)).min(1).describe('signature algorithms this issuer uses; nothing else is accepted from it'),
  max_lifetime_seconds: z
    .number()
    .int()
    .min(10)
    .max(3600)
    .default(300)
    .describe('longest lifetime (`exp` − `iat`, and `exp` − now) an ID-JAG of this issuer may have; a longer one is refused'),
})
export type IdJagIssuerConfig = z.infer<typeof IdJagIssuerConfig>

/** One admin API key: its holder, the SHA-256 of the key, its roles. Items of `admin.keys` and of `admin.keys_file`. */
export const AdminKeyConfig = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9._@-]{1,64}$/)
    .describe('who holds the key; recorded with every action it takes'),
  sha256: z
    .string()
    .regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits')
    .describe('SHA-256 of the key, hex (`mandate admin-key` prints it)'),
  roles: z
    .array(z.enum(['responder', 'auditor', 'approver', 'admin']))
    .min(1)
    .describe('responder: revoke and lift; auditor: read; approver: decide approval requests; admin: everything'),
  approver: z
    .strictObject({
      issuer: z.string().min(1).describe('issuer of the person’s IdP identity'),
      sub: z.string().min(1).describe('their `sub` there'),
      email: z.string().min(3).optional().describe('their email: matched against a policy’s `owner` for `approvers: owner`'),
      groups: z.array(z.string().min(1)).default([]).describe('IdP groups they belong to, for `approvers: group:NAME`'),
    })
    .optional()
    .describe('the person holding the key, for deciding approval requests (`mandate approvals approve`); without it the key approves nothing'),
})
export type AdminKeyConfig = z.infer<typeof AdminKeyConfig>

/**
 * `rs/` and an agent-id slug: agent ids never hold a `/`, so a resource
 * server can never be named like an agent, whatever policy files appear later.
 */
export const RESOURCE_SERVER_ID = /^rs\/[a-z0-9][a-z0-9._-]{0,62}$/

/**
 * A resource server: its own identity for introspection and the revocation
 * feed, bound to the audiences it serves. Never an agent: it cannot exchange tokens.
 */
export const ResourceServerConfig = z
  .strictObject({
    id: z
      .string()
      .regex(RESOURCE_SERVER_ID, 'must be rs/ and then 1-63 of a-z 0-9 . _ - starting with a letter or digit')
      .describe('its client_id: `rs/<name>` (agent ids never hold a `/`, so it can never be an agent’s)'),
    audiences: z
      .array(AbsoluteUri)
      .min(1)
      .max(100)
      .describe('the audiences (RFC 8707 resources) it serves: it may introspect tokens whose `aud` is one of them'),
    authentication: z
      .discriminatedUnion('method', [PrivateKeyJwtAuthentication, ClientSecretBasicAuthentication])
      .describe('how it proves who it is, as in an agent policy: client_secret_basic (a hash here) or private_key_jwt (public keys here)'),
  })
  .superRefine((rs, ctx) => {
    if (rs.authentication.method !== 'private_key_jwt') return
    for (const k of compileAuthentication(rs.authentication).unusableKeys) {
      ctx.addIssue({ code: 'custom', path: ['authentication', 'jwks', 'keys', k.index], message: `${UNUSABLE_JWK}: ${k.reason}` })
    }
  })
export type ResourceServerConfig = z.infer<typeof ResourceServerConfig>

/** A receiver's push endpoint: https, or http on a loopback host (tests), as upstream fetches (tokens/fetch-limited.ts). */
const PushEndpoint = z
  .url()
  .refine((s) => URL.canParse(s) && isAllowedUpstreamUrl(new URL(s)) && new URL(s).hash === '', 'must be https (http only on localhost), without a fragment')

/**
 * An OpenID Provider people sign in with (authorization code + PKCE): approvers on the approval page
 * (docs/approval-sign-in.md), responders on the console (docs/console.md). `callback` is the path Mandate
 * must be registered with as a redirect URI.
 */
function signInProvider(callback: string, groupsFor: string) {
  return z.strictObject({
    issuer: z
      .url()
      .refine(
        (s) => URL.canParse(s) && isAllowedUpstreamUrl(new URL(s)) && new URL(s).hash === '' && new URL(s).search === '',
        'must be https (http only on localhost), without query or fragment',
      )
      .describe('the OpenID Provider’s issuer URL; its metadata is discovered from it (OpenID Connect Discovery 1.0 §4)'),
    client_id: z.string().min(1).max(256).describe(`Mandate’s client id at that provider; register Mandate’s \`issuer\` + \`${callback}\` as its redirect URI`),
    client_secret_file: z.string().min(1).describe('file holding that client’s secret (client_secret_basic); read at start, never from this YAML'),
    groups_claim: z.string().min(1).max(128).default('groups').describe(`ID token claim listing the groups the person belongs to (${groupsFor})`),
    groups_scope: z
      .string()
      .regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/, 'must be one scope token (RFC 6749 §3.3)')
      .optional()
      .describe('a scope to ask for besides `openid email`, when the provider puts the groups claim in the ID token only for it; absent: none'),
    email_claim: z.string().min(1).max(128).default('email').describe('ID token claim holding the person’s email (for `approvers: owner`)'),
  })
}

/** The OpenID Provider approvers sign in with on the approval page (docs/approval-sign-in.md). */
export const ApprovalSignInConfig = signInProvider('/approvals/callback', 'for `approvers: group:NAME`')
export type ApprovalSignInConfig = z.infer<typeof ApprovalSignInConfig>

/** One receiver of Security Event Tokens (docs/events.md): where its SETs go and how. */
export const SsfReceiverConfig = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be 1-63 of a-z 0-9 . _ - starting with a letter or digit')
    .describe('names the receiver in the database (its cursor and queue), the logs and the metrics; renaming it starts a new stream'),
  audience: AbsoluteUri.describe('`aud` of the SETs it receives (RFC 8417 §2.2)'),
  delivery: z
    .discriminatedUnion('method', [
      z.strictObject({
        method: z.literal('push'),
        endpoint_url: PushEndpoint.describe('where SETs are POSTed (RFC 8935); redirects are not followed'),
        authorization_file: z
          .string()
          .min(1)
          .optional()
          .describe(
            'file holding the whole Authorization header value sent with each push (e.g. `Bearer …`, a mounted Secret); read at start, never from this YAML',
          ),
      }),
      z.strictObject({
        method: z.literal('poll'),
        resource_server: z
          .string()
          .regex(RESOURCE_SERVER_ID)
          .describe('the configured resource server (`resource_servers[].id`) that polls /ssf/poll with its client_secret_basic credentials (RFC 8936)'),
      }),
    ])
    .describe('push (RFC 8935) to its endpoint, or poll (RFC 8936) by one of the resource servers'),
  start: z
    .enum(['now', 'beginning'])
    .default('now')
    .describe('where a new stream starts: at the first start that knows it (`now`), or with every revocation in the log (`beginning`)'),
})
export type SsfReceiverConfig = z.infer<typeof SsfReceiverConfig>

/** One webhook (docs/notifications.md): the events it is sent, signed per Standard Webhooks. */
export const WebhookConfig = z.strictObject({
  id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be 1-63 of a-z 0-9 . _ - starting with a letter or digit')
    .describe('names the webhook in the database (its cursor and queue), `mandate webhooks list`, the logs and the metrics; renaming it starts a new queue'),
  url: PushEndpoint.describe('where events are POSTed; redirects are not followed'),
  events: z
    .array(z.enum(WEBHOOK_EVENT_TYPES))
    .min(1)
    .describe(
      'the event types sent to it (docs/notifications.md): `kill.*` from the revocation log, `agent.*` from the lifecycle and anomaly records of the delegation log, `approval.*` from its human-approval records',
    ),
  secret_file: z
    .string()
    .min(1)
    .describe('file holding the Standard Webhooks signing secret (`whsec_` and base64, 24-64 bytes); read at start, never from this YAML'),
  format: z
    .enum(['standard', 'slack'])
    .default('standard')
    .describe('`standard`: `{ type, timestamp, data }`; `slack`: `{ text, blocks }` for a Slack incoming-webhook URL (signed the same way)'),
})
export type WebhookConfig = z.infer<typeof WebhookConfig>

/** Who holds a console role: a person's email, or `group:NAME`. */
const ConsoleMembers = z
  .array(z.string().regex(/^(group:[\x21-\x7e]{1,128}|[^\s@]{1,64}@[^\s@]{1,255})$/, 'must be an email or group:NAME'))
  .max(1000)
  .default([])

/** An IPv4 or IPv6 address, or a CIDR block of either (`10.0.0.0/8`, `fd00::/8`). */
const AddressOrBlock = z.string().refine((s) => {
  const [address, bits, extra] = s.split('/')
  const family = isIP(address ?? '')
  if (family === 0 || extra !== undefined) return false
  return bits === undefined || (/^[0-9]{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128))
}, 'must be an IP address or a CIDR block')

/** The part of the config the one-role-per-issuer check reads. */
const RolesInput = z.object({
  issuer: z.string(),
  trust: z
    .object({
      subjects: z.array(z.object({ issuer: z.string() })).default([]),
      workloads: z.array(z.object({ issuer: z.string() })).default([]),
      id_jag: z.array(z.object({ issuer: z.string() })).default([]),
    })
    .prefault({}),
})

/** Retries with exponential back-off and jitter, as Shared Signals pushes and webhooks both deliver. */
function deliveryRetry(said: { readonly attempts: string; readonly age: string; readonly longest: string }) {
  return z
    .strictObject({
      max_attempts: z.number().int().min(1).max(1000).default(20).describe(said.attempts),
      max_age_seconds: z
        .number()
        .int()
        .min(1)
        .max(30 * 86_400)
        .default(86_400)
        .describe(said.age),
      initial_delay_ms: z
        .number()
        .int()
        .min(10)
        .max(60_000)
        .default(1_000)
        .describe('wait before the first retry, doubled at each; each wait is drawn between half of it and all of it (jitter)'),
      max_delay_ms: z.number().int().min(10).max(3_600_000).default(300_000).describe(said.longest),
    })
    .prefault({})
}

export const Config = z
  .strictObject({
    issuer: IssuerUrl.describe('this broker’s issuer identifier: `iss` of its tokens and the `aud` agents assert to. Env: MANDATE_ISSUER'),
    listen: z
      .strictObject({
        host: z.string().min(1).default('0.0.0.0').describe('address to bind. Env: HOST'),
        port: z.number().int().min(0).max(65535).default(8080).describe('TCP port. Env: PORT'),
        admin_port: z
          .number()
          .int()
          .min(1)
          .max(65535)
          .optional()
          .describe(
            'a second TCP port for the admin API (the kill switch and the delegation log’s queries), which then answers only there (404 on `port`, which keeps the OAuth endpoints, the revocation feed and metadata; health on both). With PostgreSQL and Redis it is served by a thread of its own, so a flood of token requests cannot delay a kill; without them, by this process’s event loop. Env: MANDATE_ADMIN_PORT',
          ),
        trusted_proxies: z
          .array(AddressOrBlock)
          .optional()
          .describe(
            'reverse proxies (addresses or CIDR blocks) whose X-Forwarded-For is believed: a request from one is taken to come from the nearest address in that header that is not a trusted proxy. The client address keys the failed-authentication back-off and is recorded in the audit log; behind a proxy not listed here, every client has the proxy’s address',
          ),
      })
      .refine((l) => l.admin_port === undefined || l.admin_port !== l.port, { path: ['admin_port'], error: 'must differ from port' })
      .prefault({})
      .describe('where the HTTP server listens'),
    http: z
      .strictObject({
        max_connections: z
          .number()
          .int()
          .min(1)
          .max(1_000_000)
          .default(1_000)
          .describe(
            'most connections this process holds open (idle keep-alive ones and revocation feeds included); one more is closed as it arrives. Per worker with --workers; keep it below the open-file limit',
          ),
        headers_timeout_ms: z
          .number()
          .int()
          .min(500)
          .max(120_000)
          .default(10_000)
          .describe('a client must send the request line and headers within this, from when it connects or its previous answer (408, then closed)'),
        request_timeout_ms: z
          .number()
          .int()
          .min(500)
          .max(600_000)
          .default(30_000)
          .describe('and the whole request, body included, within this (408, then closed); at least headers_timeout_ms'),
        keep_alive_timeout_ms: z
          .number()
          .int()
          .min(100)
          .max(600_000)
          .default(5_000)
          .describe('an idle keep-alive connection is closed after this (plus up to 1 s); a load balancer in front should drop idle connections sooner'),
        idle_timeout_ms: z
          .number()
          .int()
          .min(1_000)
          .max(3_600_000)
          .default(120_000)
          .describe(
            'a connection on which no byte moves either way for this long is closed, whatever it is doing (a client that stops reading its answer); above the slowest answer',
          ),
        max_header_bytes: z.number().int().min(1_024).max(65_536).default(16_384).describe('largest request line and headers (431 beyond)'),
      })
      .refine((h) => h.request_timeout_ms >= h.headers_timeout_ms, {
        path: ['request_timeout_ms'],
        error: 'must be at least headers_timeout_ms',
      })
      .prefault({})
      .describe('connections: limits on slow and idle clients'),
    overload: z
      .strictObject({
        max_concurrent_requests: z
          .number()
          .int()
          .min(1)
          .max(100_000)
          .default(128)
          .describe(
            'a token or introspection request is answered 503 with Retry-After, before any other work, while this many are being handled in this process',
          ),
        max_event_loop_lag_ms: z
          .number()
          .int()
          .min(5)
          .max(10_000)
          .default(100)
          .describe(
            'and while the event loop runs this far behind (a moving average of how late a 20 ms timer fires) with at least a quarter of max_concurrent_requests being handled',
          ),
        max_audit_pending: z
          .number()
          .int()
          .min(1)
          .max(1_000_000)
          .optional()
          .describe('and while this many delegation log records wait for their commit (all chains of this process). Default: twice audit.group_max_records'),
        retry_after_seconds: z.number().int().min(1).max(60).default(1).describe('the Retry-After of those answers'),
      })
      .prefault({})
      .describe('load shedding; the admin API, the revocation feed, /oauth2/revoke, health and metadata are never shed'),
    policies_dir: z.string().min(1).default('./policies').describe('directory of agent policy files (hot-reloaded). Env: MANDATE_POLICIES_DIR'),
    data_dir: z.string().min(1).default('./data').describe('directory for embedded state (generated keys). Env: MANDATE_DATA_DIR'),
    signing: z
      .strictObject({
        keys_file: z
          .string()
          .min(1)
          .optional()
          .describe('private JWK set (ES256) the broker signs with; first key signs. Default: <data_dir>/signing-keys.json. Env: MANDATE_SIGNING_KEYS_FILE'),
        generate_if_missing: z
          .boolean()
          .default(false)
          .describe('create a key set when keys_file does not exist (embedded default; never with several instances)'),
      })
      .prefault({})
      .describe('signing keys'),
    trust: z
      .strictObject({
        subjects: z.array(SubjectIssuerConfig).default([]).describe('issuers trusted for user subject tokens'),
        workloads: z.array(WorkloadIssuerConfig).default([]).describe('issuers trusted for workload identity actor tokens'),
        id_jag: z
          .array(IdJagIssuerConfig)
          .default([])
          .describe(
            'enterprise IdPs whose Identity Assertion JWT Authorization Grants (ID-JAG) agents may redeem with the JWT bearer grant; none: the grant is not served',
          ),
        spiffe: z
          .array(SpiffeTrustDomainConfig)
          .default([])
          .refine((l) => new Set(l.map((t) => t.trust_domain)).size === l.length, 'must not list a trust domain twice')
          .describe('SPIFFE trust domains whose JWT-SVIDs authenticate agents (policy `authentication.method: spiffe`), each with its bundle'),
      })
      .prefault({})
      .describe('upstream issuers, per role; an issuer may hold one role only'),
    limits: z
      .strictObject({
        clock_skew_seconds: z.number().int().min(0).max(60).default(30).describe('tolerance on exp, nbf and iat of inbound tokens'),
        max_body_bytes: z
          .number()
          .int()
          .min(1024)
          .max(1024 * 1024)
          .default(64 * 1024)
          .describe('largest request body accepted (413 beyond)'),
        client_assertion_max_lifetime_seconds: z
          .number()
          .int()
          .min(10)
          .max(600)
          .default(300)
          .describe('longest remaining lifetime a client assertion may have'),
        workload_token_max_lifetime_seconds: z
          .number()
          .int()
          .min(60)
          .max(86_400)
          .default(3600)
          .describe('longest remaining lifetime a workload identity token may have'),
        subject_cache_entries: z
          .number()
          .int()
          .min(0)
          .max(1_000_000)
          .default(10_000)
          .describe(
            "verified tokens kept until their exp, keyed by SHA-256: subject tokens, and the broker's own wherever they are checked (forward auth, introspection, revocation); 0: no cache",
          ),
        subject_token_max_age_seconds: z
          .number()
          .int()
          .min(60)
          .max(30 * 86_400)
          .default(86_400)
          .describe('user subject tokens whose exp is further ahead than this (plus the clock skew) are refused'),
      })
      .prefault({})
      .describe('request limits'),
    jwks: z
      .strictObject({
        timeout_ms: z.number().int().min(100).max(5_000).default(5_000).describe('per fetch'),
        max_bytes: z
          .number()
          .int()
          .min(1024)
          .max(256 * 1024)
          .default(256 * 1024)
          .describe('largest JWKS or metadata document'),
        max_keys: z.number().int().min(1).max(100).default(100).describe('most usable keys kept from one JWKS; later entries are cut, with a warning'),
        cooldown_seconds: z.number().int().min(1).max(3600).default(30).describe('least time between two fetches for one issuer'),
        cache_max_age_seconds: z.number().int().min(60).max(86_400).default(600).describe('refresh a key set after this'),
        stale_max_age_seconds: z.number().int().min(0).max(3600).default(3600).describe('serve the last good set this long while the issuer is down'),
      })
      .prefault({})
      .describe('fetching upstream key sets'),
    admin: z
      .strictObject({
        keys: z.array(AdminKeyConfig).default([]).describe('keys of the admin API (Authorization: Bearer <key>)'),
        keys_file: z
          .string()
          .min(1)
          .optional()
          .describe(
            'YAML (or JSON) file holding a list of further entries shaped like admin.keys (e.g. a mounted Secret), appended to them at start; read once, so a change needs a restart. Env: MANDATE_ADMIN_KEYS_FILE',
          ),
      })
      .prefault({})
      .describe('the admin API'),
    approvals: z
      .strictObject({
        max_pending_per_agent: z
          .number()
          .int()
          .min(1)
          .max(10_000)
          .default(20)
          .describe('approval requests one agent may have pending at once; past it the backchannel endpoint answers 429'),
        poll_interval: z.number().int().min(1).max(60).default(5).describe('seconds an agent waits between polls of a pending request (CIBA `interval`)'),
        sign_in: ApprovalSignInConfig.optional().describe(
          'the approver’s sign-in page: a signed one-time link to it, sign-in with this OpenID Provider (authorization code + PKCE), then approve or deny; absent: no link and no /approvals/* routes',
        ),
      })
      .prefault({})
      .describe('human approval of grants that say `approval` (OpenID CIBA, poll mode; docs/approvals.md)'),
    console: z
      .strictObject({
        enabled: z
          .boolean()
          .optional()
          .describe(
            'serve the responder console at /console (docs/console.md); absent: on under `--dev`, and when `sign_in` is set; true without `sign_in` outside `--dev` is refused',
          ),
        sign_in: signInProvider('/console/callback', 'for `roles`')
          .optional()
          .describe(
            'the OpenID Provider responders sign in with (authorization code + PKCE); under `--dev` the dev issuer’s users sign in with one click instead',
          ),
        roles: z
          .strictObject({
            viewer: ConsoleMembers.describe('may read everything: agents, kills, chains, the log, approvals'),
            responder: ConsoleMembers.describe('a viewer who may also kill and lift'),
            owner: ConsoleMembers.describe('a viewer who may also attest the agents they own (a policy’s `owner` is one of their emails or groups)'),
            admin: ConsoleMembers.describe('may do everything'),
          })
          .prefault({})
          .describe(
            'who has which role: each entry an email (the `email_claim`, verified) or `group:NAME` (the `groups_claim`); a person in none may not sign in',
          ),
        idle_timeout_seconds: z.number().int().min(60).max(86_400).default(900).describe('a session not used this long ends; each page renews it'),
        max_session_seconds: z
          .number()
          .int()
          .min(300)
          .max(7 * 86_400)
          .default(28_800)
          .describe('a session ends this long after sign-in, used or not'),
      })
      .prefault({})
      .describe('the responder console: agents, kills, chains, the delegation log and approvals in a browser, through the admin API and its roles'),
    resource_servers: z
      .array(ResourceServerConfig)
      .default([])
      .superRefine((servers, ctx) => {
        const seen = new Set<string>()
        servers.forEach((rs, i) => {
          if (seen.has(rs.id)) ctx.addIssue({ code: 'custom', path: [i, 'id'], message: 'is already used by another resource server' })
          seen.add(rs.id)
        })
      })
      .describe('resource servers that call /oauth2/introspect and /revocations/feed with credentials of their own'),
    ssf: z
      .strictObject({
        receivers: z
          .array(SsfReceiverConfig)
          .max(100)
          .default([])
          .superRefine((receivers, ctx) => {
            const names = new Set<string>()
            const pollers = new Set<string>()
            receivers.forEach((r, i) => {
              if (names.has(r.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: 'is already used by another receiver' })
              names.add(r.name)
              if (r.delivery.method !== 'poll') return
              if (pollers.has(r.delivery.resource_server)) {
                ctx.addIssue({ code: 'custom', path: [i, 'delivery', 'resource_server'], message: 'already polls for another receiver' })
              }
              pollers.add(r.delivery.resource_server)
            })
          })
          .describe('who learns of every revocation as Security Event Tokens (docs/events.md); none: nothing is sent and /ssf/poll does not exist'),
        retry: deliveryRetry({
          attempts: 'pushes of one SET before it is given up (logged, counted as failed)',
          age: 'a SET neither delivered nor acknowledged this long after it was made is given up, pushed or polled',
          longest: 'longest wait between two pushes of one SET',
        }).describe('retries of a push answered other than 202 or 400, or not answered (RFC 8935 §2.3)'),
        push_timeout_ms: z.number().int().min(100).max(60_000).default(5_000).describe('a push not answered within this is retried'),
        lease_seconds: z.number().int().min(2).max(300).default(15).describe('how long one instance holds the right to push to a receiver without renewing it'),
        scan_interval_ms: z
          .number()
          .int()
          .min(50)
          .max(60_000)
          .default(1_000)
          .describe('how often each instance reads the revocation log for revocations it was not told of (made on another instance)'),
        grace_seconds: z
          .number()
          .int()
          .min(10)
          .max(86_400)
          .default(300)
          .describe('each scan rereads this far behind its cursor, for revocations committed late or stamped by a slower clock'),
        long_poll_max_seconds: z.number().int().min(1).max(30).default(30).describe('longest /ssf/poll holds a request open with no SET to return'),
      })
      .prefault({})
      .describe('revocations as Shared Signals Security Event Tokens (RFC 8417), pushed (RFC 8935) or polled (RFC 8936); needs the SQL database'),
    governance: z
      .strictObject({
        // Lifecycle: attestation, dormancy, orphans.
        attestation_grace: DurationText.default('7d').describe(
          'an agent whose policy sets `attest_every` gets no tokens once its attestation is this long overdue (`unauthorized_client`, "attestation overdue")',
        ),
        dormant_after: DurationText.default('90d').describe(
          'an agent with no token and no attestation for this long is dormant (one never used: counted from when the broker first loaded its policy)',
        ),
        on_dormant: z
          .enum(['warn', 'suspend'])
          .default('warn')
          .describe('`warn`: a dormant agent is recorded (`agent.lifecycle`) and listed; `suspend`: it also gets no tokens until attested'),
        owners_file: z
          .string()
          .min(1)
          .optional()
          .describe(
            'a file listing the current owner identities, one a line (`#` starts a comment), re-read when it changes; an agent whose owner is not listed is orphaned. Absent: no agent is orphaned',
          ),
        on_orphan: z
          .enum(['warn', 'suspend'])
          .default('warn')
          .describe(
            '`warn`: an orphaned agent is recorded and listed; `suspend`: it also gets no tokens until its owner is listed again or its policy names a listed owner',
          ),
        lifecycle_sweep_seconds: z
          .number()
          .int()
          .min(1)
          .max(3600)
          .default(60)
          .describe(
            'how often every instance re-reads attestations and evaluates every agent’s lifecycle (an attestation reaches the other instances within this)',
          ),

        // Anomaly rules and their actions.
        anomalies: z
          .strictObject({
            rules: AnomalyRules.default({}).describe('rules for every agent; a policy’s `anomalies` override them field by field (docs/anomalies.md)'),
            cooldown_seconds: z
              .number()
              .int()
              .min(60)
              .max(30 * 86_400)
              .default(3_600)
              .describe('after a rule acted on an agent (or a quarantine it made was lifted), it does not act on that agent again for this long'),
          })
          .prefault({})
          .describe('anomaly rules evaluated from committed records and the usage summaries, off the token path; needs the SQL database'),

        // Agent credentials: age and rotation.
        credentials: z
          .strictObject({
            max_age: z
              .string()
              .regex(AGE_DURATION, AGE_DURATION_RULE)
              .default('90d')
              .describe(
                'oldest an agent credential (secret or key) may be, counted from its first use; a policy’s `max_credential_age` overrides it. Past it: `invalid_client`',
              ),
            warn_before: z
              .string()
              .regex(AGE_DURATION, AGE_DURATION_RULE)
              .default('14d')
              .describe('how long before `max_age` a credential is reported `rotate_soon` (a log line a day per credential, and the inventory)'),
            flush_interval_ms: z
              .number()
              .int()
              .min(100)
              .max(60_000)
              .default(5_000)
              .describe('how often each instance writes the first and last use of credentials it saw to the database (off the token path)'),
          })
          .refine((c) => parseAgeDuration(c.warn_before)! < parseAgeDuration(c.max_age)!, { error: 'must be shorter than max_age', path: ['warn_before'] })
          .prefault({})
          .describe('agent credentials: the ledger of their first and last use, and their maximum age'),

        // Least privilege: unused grants and shrink.
        shrink_min_tokens: z
          .number()
          .int()
          .min(1)
          .max(1_000_000_000)
          .default(100)
          .describe('fewest tokens an agent must have been issued in the window before `mandate policy unused` and `shrink` suggest removing a grant'),
      })
      .prefault({})
      .describe('agent governance: lifecycle, anomalies, credentials, least privilege'),
    notifications: z
      .strictObject({
        webhooks: z
          .array(WebhookConfig)
          .max(100)
          .default([])
          .superRefine((hooks, ctx) => {
            const ids = new Set<string>()
            hooks.forEach((h, i) => {
              if (ids.has(h.id)) ctx.addIssue({ code: 'custom', path: [i, 'id'], message: 'is already used by another webhook' })
              ids.add(h.id)
            })
          })
          .describe('webhooks told of kills, lifts and lifecycle events (docs/notifications.md); needs the SQL database'),
        retry: deliveryRetry({
          attempts: 'deliveries of one event before it is given up',
          age: 'an event not delivered this long after it was queued is given up',
          longest: 'longest wait between two deliveries of one event',
        }).describe('retries of a delivery answered other than 2xx, or not answered'),
        timeout_ms: z.number().int().min(100).max(60_000).default(5_000).describe('a delivery not answered within this is retried'),
      })
      .prefault({})
      .describe('notifications by webhook, delivered in order per webhook by one instance at a time, with the lease, scan and grace settings of `ssf`'),
    storage: z
      .strictObject({
        database_url: z
          .string()
          .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
          .optional()
          .describe('PostgreSQL for revocations and the audit log; PGlite under data_dir when absent. Env only: DATABASE_URL'),
        redis_url: z
          .string()
          .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
          .optional()
          .describe('Redis carrying the revocation list to every instance; in-process when absent. Env only: REDIS_URL'),
        key_prefix: z
          .string()
          .regex(/^[A-Za-z0-9:_-]{0,64}$/)
          .default('mandate:')
          .describe('prefix of every Redis key (instances sharing a revocation list share it). Env: MANDATE_REDIS_PREFIX'),
      })
      .prefault({})
      .describe('shared state'),
    revocation: z
      .strictObject({
        max_staleness_ms: z
          .number()
          .int()
          .min(200)
          .max(10_000)
          .default(1000)
          .describe('an instance that has not heard from Redis for this long refuses to issue (503)'),
      })
      .prefault({})
      .describe('the kill switch'),
    dpop: z
      .strictObject({
        required: z
          .boolean()
          .default(false)
          .describe(
            'every agent must send a DPoP proof (RFC 9449) at the token endpoint and gets only sender-constrained tokens, unless its policy says `require_dpop: false`',
          ),
        nonces: z
          .boolean()
          .default(false)
          .describe(
            'proofs at the token endpoint must carry a nonce the broker gave (`DPoP-Nonce`, RFC 9449 §8); without one the answer is `use_dpop_nonce`. Nonces are derived from the signing keys, so every instance accepts every other’s',
          ),
        nonce_window_seconds: z.number().int().min(10).max(3_600).default(300).describe('a nonce is good for the window it was made in and the next'),
        max_age_seconds: z.number().int().min(5).max(600).default(60).describe('oldest a proof’s `iat` may be (RFC 9449 §11.1)'),
        clock_skew_seconds: z.number().int().min(0).max(60).default(5).describe('how far in the future a proof’s `iat` may be'),
        algorithms: z
          .array(z.enum(ASYMMETRIC_ALGORITHMS))
          .min(1)
          .default(['ES256', 'ES384', 'EdDSA', 'Ed25519', 'PS256', 'RS256'])
          .describe('proof algorithms accepted, advertised as `dpop_signing_alg_values_supported`'),
      })
      .prefault({})
      .describe('sender-constrained tokens (RFC 9449 DPoP; docs/dpop.md)'),
    forward_auth: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe(
            'serve GET /forward-auth (and /forward-auth/ext-authz) on the main port: the allow/deny decision a proxy in front of a resource server asks for (nginx auth_request, Traefik forwardAuth, Envoy ext_authz). It authenticates no caller: it tells the holder of a token only what the resource server would (docs/security-model.md). false: 404',
          ),
      })
      .prefault({})
      .describe('forward authentication for proxies (docs/forward-auth.md)'),
    audit: z
      .strictObject({
        chains: z
          .number()
          .int()
          .min(1)
          .max(16)
          .default(1)
          .describe(
            'hash chains each instance writes in parallel on PostgreSQL, one group in flight on each (PGlite: always 1); more can help when commits are slow (a distant database)',
          ),
        group_max_records: z.number().int().min(1).max(5_000).default(500).describe('most records one group commit (one INSERT) carries'),
        group_max_wait_ms: z
          .number()
          .int()
          .min(0)
          .max(100)
          .default(0)
          .describe('longest an idle writer waits for more records before sending a group (0: the end of the current event-loop turn)'),
        write_timeout_ms: z.number().int().min(100).max(30_000).default(2_000).describe('a group not committed within this is answered 503 (fail closed)'),
        checkpoint_dir: z
          .string()
          .min(1)
          .optional()
          .describe(
            'where signed checkpoints of the log are written; keep it off the database host. Default: <data_dir>/checkpoints. Env: MANDATE_CHECKPOINT_DIR',
          ),
        checkpoint_interval_ms: z.number().int().min(1_000).max(60_000).default(10_000).describe('a checkpoint at least this often while records are written'),
        checkpoint_every_records: z.number().int().min(100).max(1_000_000).default(10_000).describe('and at least every this many records'),
      })
      .prefault({})
      .describe('the delegation log (PostgreSQL when DATABASE_URL is set, PGlite under data_dir otherwise)'),
    instance_id: z
      .string()
      .regex(/^[A-Za-z0-9._:@-]{1,128}$/)
      .optional()
      .describe(
        'names this instance in audit records and in where a revocation has reached (GET /admin/revocations/{id}/propagation): give each instance its own. Default: <hostname>:<pid>. Env: MANDATE_INSTANCE_ID',
      ),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Env: LOG_LEVEL'),
      })
      .prefault({})
      .describe('JSON logs on stdout'),
    telemetry: z
      .strictObject({
        otlp_endpoint: z
          .url({ protocol: /^https?$/ })
          .optional()
          .describe(
            'OTLP/HTTP collector base URL; traces go to <url>/v1/traces, metrics to <url>/v1/metrics. Absent: no OpenTelemetry SDK runs and nothing is exported. Env: OTEL_EXPORTER_OTLP_ENDPOINT',
          ),
        otlp_headers: z
          .string()
          .regex(/^\s*[^=,\s]+\s*=[^,]*(,\s*[^=,\s]+\s*=[^,]*)*$/, 'must be key=value pairs separated by commas')
          .optional()
          .describe('headers sent with every export, `key=value,key2=value2` (e.g. the collector’s API key). Env only: OTEL_EXPORTER_OTLP_HEADERS'),
        service_name: z
          .string()
          .regex(/^[A-Za-z0-9._:/-]{1,128}$/)
          .default('mandate')
          .describe('`service.name` of the exported traces and metrics. Env: OTEL_SERVICE_NAME'),
        sample_ratio: z
          .number()
          .min(0)
          .max(1)
          .default(1)
          .describe('share of new traces recorded; a caller’s `traceparent` sampled flag is followed (parent-based)'),
        metrics_interval_ms: z.number().int().min(1_000).max(300_000).default(60_000).describe('how often metrics are exported'),
        prometheus: z
          .strictObject({
            port: z
              .number()
              .int()
              .min(0)
              .max(65535)
              .describe(
                'TCP port of `GET /metrics` for Prometheus: the metrics OTLP exports, beside it or alone, on a port apart from the broker’s (9464 is Prometheus’ registered default; 0 picks a free one, logged). Unset: not served. Served by the main broker, not the admin thread; `serve --workers` refuses it. Env: MANDATE_PROMETHEUS_PORT',
              ),
            host: z
              .string()
              .min(1)
              .default('127.0.0.1')
              .describe(
                'address to bind; the endpoint has no authentication, so loopback unless a scraper on another host needs it (0.0.0.0 in a container). Env: MANDATE_PROMETHEUS_HOST',
              ),
          })
          .optional()
          .describe(
            'metrics for Prometheus to scrape (text format, cumulative); absent: off. `serve --workers` refuses to start with it: each process counts on its own, and a scrape would reach one of them',
          ),
      })
      .prefault({})
      .describe('OpenTelemetry traces and metrics (OTLP/HTTP), and metrics for Prometheus'),
  })
  .refine(
    ({ listen, telemetry }) =>
      telemetry.prometheus === undefined || telemetry.prometheus.port === 0 || ![listen.port, listen.admin_port].includes(telemetry.prometheus.port),
    { path: ['telemetry', 'prometheus', 'port'], error: 'must differ from listen.port and listen.admin_port' },
  )
  .superRefine(({ ssf, resource_servers }, ctx) => {
    const servers = new Set(resource_servers.map((rs) => rs.id))
    ssf.receivers.forEach((r, i) => {
      if (r.delivery.method === 'poll' && !servers.has(r.delivery.resource_server)) {
        ctx.addIssue({ code: 'custom', path: ['ssf', 'receivers', i, 'delivery', 'resource_server'], message: 'is not a configured resource server' })
      }
    })
  })
  .superRefine(checkRoles, {
    // Run even when other fields failed, so that every issue is reported at once.
    when: (payload) => RolesInput.safeParse(payload.value).success,
  })
export type Config = z.infer<typeof Config>

function checkRoles(c: z.infer<typeof RolesInput>, ctx: z.RefinementCtx): void {
  {
    const roles = new Map<string, string>()
    for (const role of ['subjects', 'workloads', 'id_jag'] as const) {
      c.trust[role].forEach((t, i) => {
        const other = roles.get(t.issuer)
        if (other !== undefined || t.issuer === c.issuer) {
          ctx.addIssue({
            code: 'custom',
            path: ['trust', role, i, 'issuer'],
            message: t.issuer === c.issuer || other === undefined ? 'is this broker itself' : `is already trusted for ${other}; an issuer holds one role only`,
          })
        }
        roles.set(t.issuer, role)
      })
    }
  }
}
