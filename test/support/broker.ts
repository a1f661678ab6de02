/**
 * A broker assembled by the real composition root, with everything a test
 * needs in hand: a fixed clock, a user issuer and a workload issuer whose
 * private keys the test holds, agents of every authentication method, and the
 * memory audit log and revocation store to inspect. Keys are generated here;
 * nothing is read from the repository but the code.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { createMemoryAuditLog, type MemoryAuditLog } from '../../src/audit/memory.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { CLIENT_ASSERTION_TYPE_JWT, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../src/core/claims.js'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import type { RevocationTarget } from '../../src/revocation/port.js'
import type { RevocationService } from '../../src/revocation/service.js'
import { createLogger } from '../../src/telemetry/log.js'
import type { TelemetryExporters } from '../../src/telemetry/otel.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import type { TokenMinter } from '../../src/tokens/port.js'
import type { AdmissionStore } from '../../src/admission/port.js'
import { captureLogs } from './log-sink.js'

export const BROKER = 'https://mandate.test'
export const USER_ISSUER = 'https://idp.test'
export const WORKLOAD_ISSUER = 'https://workloads.test'
export const AUDIENCE = 'https://api.test'
export const OTHER_AUDIENCE = 'https://other.test'
export const T0 = 1_800_000_000 // epoch seconds the clock starts at
/**
 * Seconds the broker has been up at T0. Its replay memory begins at its start and refuses
 * assertions that may predate it (clock skew included), so it starts a minute early: every
 * assertion a test makes at T0 or later is after that.
 */
export const UP_BEFORE_T0 = 60

export const SECRET = 'correct-horse-battery-staple-0123456789'

/** Admin API keys configured on every test broker, one per role. */
export const ADMIN_KEYS = {
  responder: 'responder-key-5f0c1e7a9b2d4c6e8f10',
  auditor: 'auditor-key-3a9d7b1c5e2f4a6b8c0d',
  admin: 'admin-key-8e6c4a2b0d9f7e5c3a1b',
} as const
export const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

/**
 * Resource servers configured on every test broker: `rs/api` serves
 * AUDIENCE and authenticates with Basic (RS_SECRET); `rs/other` serves
 * OTHER_AUDIENCE and signs client assertions (`rsAssertion`).
 */
export const RESOURCE_SERVERS = { api: 'rs/api', other: 'rs/other' } as const
export const RS_SECRET = 'resource-server-secret-4d2a6c8e0b1f3a5c'

export interface Issuer {
  readonly iss: string
  readonly kid: string
  readonly privateKey: CryptoKey
  readonly publicJwk: JWK
  /** Signs `claims` (merged over sensible defaults) with this issuer's key. */
  sign(claims: JWTPayload, header?: Record<string, unknown>): Promise<string>
}

async function makeIssuer(iss: string, alg: 'RS256' | 'ES256', defaults: (now: number) => JWTPayload, now: () => number): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const kid = `${alg.toLowerCase()}-${Math.random().toString(36).slice(2, 8)}`
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
  return {
    iss,
    kid,
    privateKey,
    publicJwk,
    sign: (claims, header = {}) => new SignJWT({ ...defaults(now()), ...claims }).setProtectedHeader({ alg, kid, typ: 'at+jwt', ...header }).sign(privateKey),
  }
}

/** Kill-switch shortcuts over the broker's own revocation service (memory log). */
export interface TestRevocations {
  readonly service: RevocationService
  revoke(target: RevocationTarget): Promise<string>
  killAgent(agent: AgentId, _at?: number): Promise<string>
  liftAgent(agent: AgentId): Promise<void>
  /** Kills `sub` at `iss` (default the user issuer; `null`: any issuer, as kills recorded before issuers were). */
  killUser(sub: Subject, _at?: number, iss?: string | null): Promise<string>
  liftUser(sub: Subject, iss?: string | null): Promise<void>
  revokeToken(jti: Jti): Promise<string>
}

export interface TestBroker {
  readonly mandate: Mandate
  readonly audit: MemoryAuditLog
  readonly revocations: TestRevocations
  readonly users: Issuer
  /** The issuers of `extraUserIssuers`, in order: trusted for user subjects like `users`. */
  readonly otherUsers: readonly Issuer[]
  readonly workloads: Issuer
  /** The private key `jwt-agent` signs its assertions with. */
  readonly agentKey: { privateKey: CryptoKey; kid: string }
  /** The whole key pair, for a second broker (`agentKeys`) that must accept the same assertions. */
  readonly agentKeys: { readonly privateKey: CryptoKey; readonly publicKey: CryptoKey }
  /** Current time, epoch seconds; move it with `advance`. */
  now(): number
  advance(seconds: number): void
  /** Everything the broker logged, one parsed JSON object per line. */
  logs(): Record<string, unknown>[]
  /** The same lines as written, growing as the broker logs (cheap to read from an index on). */
  readonly logLines: readonly string[]
  /** A user token from the user issuer: `sub` alice, aud the broker, 1 h, scope `read write`. */
  userToken(claims?: JWTPayload, header?: Record<string, unknown>): Promise<string>
  /** A client assertion for `agent` (default `jwt-agent`), valid 60 s, fresh jti; a claim set to `undefined` is left out. */
  assertion(claims?: Record<string, unknown>, header?: Record<string, unknown>, key?: CryptoKey): Promise<string>
  /** The private key `rs/other` signs its assertions with. */
  readonly rsKey: { privateKey: CryptoKey; kid: string }
  /** A client assertion for `rs/other`, valid 60 s, fresh jti. */
  rsAssertion(claims?: JWTPayload, header?: Record<string, unknown>): Promise<string>
  /** POSTs a form to /oauth2/token. */
  token(form: Record<string, string | string[]>, headers?: Record<string, string>): Promise<Response>
  /** A complete, valid exchange form for `subject_token`, to be overridden field by field. */
  exchangeForm(subjectToken: string, extra?: Record<string, string | string[]>): Record<string, string | string[]>
  close(): Promise<void>
}

export function basic(id: string, secret: string): Record<string, string> {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+')
  return { authorization: `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}` }
}

export function encodeForm(form: Record<string, string | string[]>): string {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries(form)) for (const x of Array.isArray(v) ? v : [v]) p.append(k, x)
  return p.toString()
}

export interface TestBrokerOptions {
  /** Extra or replacement policy files: name → YAML text. */
  readonly policies?: Record<string, string>
  readonly dev?: boolean
  /** Log level of the captured logs (default debug). */
  readonly logLevel?: string
  /** Shared state (e.g. a Redis URL and a test-owned key prefix); in-process when absent. */
  readonly storage?: { readonly redis_url?: string; readonly key_prefix?: string }
  /** Replaces the token signer (e.g. one that fails). */
  readonly minter?: TokenMinter
  /** OpenTelemetry exporters (the SDK's in-memory ones); telemetry is off without them. */
  readonly telemetry?: TelemetryExporters
  /** More issuers trusted for user subjects (RS256 keys generated here), e.g. a second IdP whose users share names with the first's. */
  readonly extraUserIssuers?: readonly string[]
  /**
   * A PostgreSQL URL: revocations are then kept there (migrated at start) and
   * /admin/audit exists over it, as under `serve`; the audit records still go
   * to the memory log. In memory when absent.
   */
  readonly database?: string
  /**
   * Epoch seconds the broker starts at, and its clock stays at (a restarted broker).
   * Default: it starts `UP_BEFORE_T0` before T0, and the clock then reads T0.
   */
  readonly startAt?: number
  /** The key pair `jwt-agent` signs with (another broker's, to replay its assertions); new by default. */
  readonly agentKeys?: { readonly privateKey: CryptoKey; readonly publicKey: CryptoKey }
  /** Replaces the admission store (e.g. one that fails). */
  readonly admission?: AdmissionStore
  /** `listen.trusted_proxies`: peers whose X-Forwarded-For names the client. */
  readonly trustedProxies?: readonly string[]
  /**
   * Load-shedding signals. Default: an event loop that never lags, so that a
   * busy test machine never sheds a test's requests; `{}` measures the real one.
   */
  readonly loadSignals?: { readonly eventLoopLag?: () => number; readonly auditPending?: () => number }
  /** The config's `overload` section (load shedding). */
  readonly overload?: Record<string, number>
  /** How often the keys file and the policies directory are polled, in ms (compose's default otherwise). */
  readonly filePollMs?: number
  /** The config's `ssf` section (Security Event Token receivers); needs `database`. */
  readonly ssf?: Record<string, unknown>
  /** The config's `notifications` section (webhooks); needs `database` or `embedded`. */
  readonly notifications?: Record<string, unknown>
  /** PGlite under the test's data_dir, as `serve` without DATABASE_URL (ignored with `database`). */
  readonly embedded?: boolean
  /** `forward_auth.enabled` (default: the config's default, on). */
  readonly forwardAuth?: boolean
  /**
   * The broker writes its delegation log to its SQL database (`database` or
   * `embedded`), as `serve` does, instead of the memory log: append through
   * `mandate.audit`; `audit` then stays empty.
   */
  readonly sqlAudit?: boolean
  /** The config's `governance` section. */
  readonly governance?: Record<string, unknown>
  /** The config's `trust.id_jag` (issuers of ID-JAGs, their keys fetched over HTTP). */
  readonly idJag?: readonly Record<string, unknown>[]
  /** The config's `trust.spiffe` (SPIFFE trust domains and their bundles). */
  readonly spiffe?: readonly Record<string, unknown>[]
  /** The workload issuer's `instance_claim` (the claim naming the running copy; `sub` when absent). */
  readonly workloadInstanceClaim?: string
  /** The config's `dpop` section (DPoP proofs at the token endpoint). */
  readonly dpop?: Record<string, unknown>
  /** The config's `instance_id` (two brokers in one process would otherwise share host and pid). */
  readonly instanceId?: string
  /** More `admin.keys` entries besides the one key per role of `ADMIN_KEYS` (e.g. an approver's, with `approver`). */
  readonly adminKeys?: readonly Record<string, unknown>[]
}

/**
 * The simplest policy: a `client_secret_basic` agent that users of
 * `userIssuer` may delegate `read` on `audience` to, for 300 s.
 */
export function secretAgentPolicy(
  agent: string,
  userIssuer: string,
  options: { readonly secret?: string; readonly audience?: string; readonly owner?: string; readonly expires?: string } = {},
): string {
  return `agent: ${agent}
owner: ${JSON.stringify(options.owner ?? 'security@example.com')}
purpose: test agent
expires: ${options.expires ?? '2099-01-01'}
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(options.secret ?? SECRET).toString('hex')} }
users: [{ issuer: ${userIssuer} }]
grants: [{ audience: ${options.audience ?? AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`
}

/** Policies of every kind; `{{...}}` is filled in by `startTestBroker`. */
function defaultPolicies(agentJwk: JWK): Record<string, string> {
  const secretHash = hashClientSecret(SECRET).toString('hex')
  const common = (agent: string) => `agent: ${agent}
owner: security@example.com
purpose: test agent
expires: 2030-01-01`
  return {
    'secret-agent.yaml': `${common('secret-agent')}
authentication: { method: client_secret_basic, secret_sha256: ${secretHash} }
users:
  - issuer: ${USER_ISSUER}
grants:
  - { audience: ${AUDIENCE}, scopes: [read, write, admin], default_scopes: [read] }
  - { audience: ${OTHER_AUDIENCE}, scopes: [read] }
token_ttl: { default: 300, max: 900 }
delegation: { max_depth: 3, sub_agents: [sub-agent, jwt-agent] }
`,
    'jwt-agent.yaml': `${common('jwt-agent')}
authentication:
  method: private_key_jwt
  jwks: { keys: [${JSON.stringify(agentJwk)}] }
users:
  - issuer: ${USER_ISSUER}
    claims: { groups: [engineering, sre] }
grants:
  - { audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }
token_ttl: { default: 300, max: 600 }
delegation: { max_depth: 3, sub_agents: [sub-agent] }
`,
    'workload-agent.yaml': `${common('workload-agent')}
authentication: { method: workload_identity, issuer: ${WORKLOAD_ISSUER}, subject: 'spiffe://test/ns/agents/sa/runner' }
users:
  - issuer: ${USER_ISSUER}
grants:
  - { audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }
token_ttl: { default: 300, max: 300 }
`,
    'sub-agent.yaml': `${common('sub-agent')}
authentication: { method: client_secret_basic, secret_sha256: ${secretHash} }
grants:
  - { audience: ${AUDIENCE}, scopes: [read, write] }
token_ttl: { default: 120, max: 300 }
delegation: { max_depth: 3, sub_agents: [secret-agent] }
`,
    'expired-agent.yaml': secretAgentPolicy('expired-agent', USER_ISSUER, { expires: '2020-01-01' }),
  }
}

export async function startTestBroker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  let now = options.startAt ?? T0 - UP_BEFORE_T0
  const dir = await mkdtemp(join(tmpdir(), 'mandate-test-'))
  const policiesDir = join(dir, 'policies')
  await (await import('node:fs/promises')).mkdir(policiesDir)

  const agentKeys = options.agentKeys ?? (await generateKeyPair('ES256', { extractable: true }))
  const agentKid = 'agent-key-1'
  const agentJwk = { ...(await exportJWK(agentKeys.publicKey)), kid: agentKid, alg: 'ES256' }
  const rsKeys = await generateKeyPair('ES256', { extractable: true })
  const rsKid = 'rs-key-1'
  const rsJwk = { ...(await exportJWK(rsKeys.publicKey)), kid: rsKid, alg: 'ES256' }
  const files = { ...defaultPolicies(agentJwk), ...options.policies }
  for (const [name, text] of Object.entries(files)) await writeFile(join(policiesDir, name), text)

  const users = await makeIssuer(
    USER_ISSUER,
    'RS256',
    (t) => ({
      iss: USER_ISSUER,
      sub: 'alice',
      aud: BROKER,
      iat: t,
      exp: t + 3600,
      jti: `u-${Math.random()}`,
      scope: 'read write',
    }),
    () => now,
  )
  const otherUsers = await Promise.all(
    (options.extraUserIssuers ?? []).map((iss) =>
      makeIssuer(
        iss,
        'RS256',
        (t) => ({ iss, sub: 'alice', aud: BROKER, iat: t, exp: t + 3600, jti: `u-${Math.random()}`, scope: 'read write' }),
        () => now,
      ),
    ),
  )
  const workloads = await makeIssuer(
    WORKLOAD_ISSUER,
    'ES256',
    (t) => ({
      iss: WORKLOAD_ISSUER,
      sub: 'spiffe://test/ns/agents/sa/runner',
      aud: BROKER,
      iat: t,
      exp: t + 600,
    }),
    () => now,
  )

  const { lines, stream: sink } = captureLogs('test broker (in process)')
  const config = Config.parse({
    issuer: BROKER,
    policies_dir: policiesDir,
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    log: { level: 'debug' },
    ...(options.instanceId === undefined ? {} : { instance_id: options.instanceId }),
    ...(options.storage === undefined && options.database === undefined
      ? {}
      : { storage: { ...options.storage, ...(options.database === undefined ? {} : { database_url: options.database }) } }),
    resource_servers: [
      {
        id: RESOURCE_SERVERS.api,
        audiences: [AUDIENCE],
        authentication: { method: 'client_secret_basic', secret_sha256: hashClientSecret(RS_SECRET).toString('hex') },
      },
      { id: RESOURCE_SERVERS.other, audiences: [OTHER_AUDIENCE], authentication: { method: 'private_key_jwt', jwks: { keys: [rsJwk] } } },
    ],
    ...(options.trustedProxies === undefined ? {} : { listen: { trusted_proxies: options.trustedProxies } }),
    ...(options.overload === undefined ? {} : { overload: options.overload }),
    ...(options.ssf === undefined ? {} : { ssf: options.ssf }),
    ...(options.notifications === undefined ? {} : { notifications: options.notifications }),
    ...(options.forwardAuth === undefined ? {} : { forward_auth: { enabled: options.forwardAuth } }),
    ...(options.governance === undefined ? {} : { governance: options.governance }),
    ...(options.dpop === undefined ? {} : { dpop: options.dpop }),
    ...(options.idJag === undefined && options.spiffe === undefined
      ? {}
      : { trust: { ...(options.idJag === undefined ? {} : { id_jag: options.idJag }), ...(options.spiffe === undefined ? {} : { spiffe: options.spiffe }) } }),
    admin: {
      keys: [
        ...Object.entries(ADMIN_KEYS).map(([role, key]) => ({
          name: `${role}-holder`,
          sha256: createHash('sha256').update(key).digest('hex'),
          roles: [role],
        })),
        ...(options.adminKeys ?? []),
      ],
    },
  })
  const audit = createMemoryAuditLog()
  const mandate = await composeMandate(config, {
    dev: options.dev ?? false,
    logger: createLogger(options.logLevel ?? 'debug', sink),
    clock: () => now * 1000,
    ...(options.sqlAudit === true ? {} : { audit }),
    ...(options.minter === undefined ? {} : { minter: options.minter }),
    ...(options.admission === undefined ? {} : { admission: options.admission }),
    ...(options.telemetry === undefined ? {} : { telemetry: options.telemetry }),
    loadSignals: options.loadSignals ?? { eventLoopLag: () => 0 },
    ...(options.database === undefined && options.embedded !== true ? { revocationLog: createMemoryRevocationLog() } : {}),
    localSubjectIssuers: [users, ...otherUsers].map((u) => ({
      trusted: { issuer: u.iss, jwksUri: undefined, algorithms: ['RS256'], audience: BROKER, typ: ['at+jwt'] },
      jwks: { keys: [u.publicJwk] },
    })),
    ...(options.filePollMs === undefined ? {} : { filePollMs: options.filePollMs }),
    localWorkloadIssuers: [
      {
        trusted: {
          issuer: WORKLOAD_ISSUER,
          jwksUri: undefined,
          algorithms: ['ES256'],
          audience: BROKER,
          typ: [undefined, 'jwt'],
          ...(options.workloadInstanceClaim === undefined ? {} : { instanceClaim: options.workloadInstanceClaim }),
        },
        jwks: { keys: [workloads.publicJwk] },
      },
    ],
  }).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true })
    throw err
  })
  now = options.startAt ?? T0
  if (options.storage?.redis_url !== undefined) {
    // The clock moved on from the start: wait for the revocation mirror to hear from Redis at the new time.
    const deadline = Date.now() + 5_000
    while (!mandate.revocations.fresh() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  }

  const service = mandate.revocations
  const kills = new Map<string, string[]>()
  const revoke = async (target: RevocationTarget) => (await service.revoke({ target, reason: 'test', createdBy: 'test' })).id
  const kill = async (key: string, target: RevocationTarget) => {
    const id = await revoke(target)
    kills.set(key, [...(kills.get(key) ?? []), id])
    return id
  }
  const liftAll = async (key: string) => {
    for (const id of kills.get(key) ?? []) await service.lift(id, 'test')
    kills.delete(key)
  }
  const revocations: TestRevocations = {
    service,
    revoke,
    killAgent: (agent) => kill(`agent:${agent}`, { kind: 'agent', agent }),
    liftAgent: (agent) => liftAll(`agent:${agent}`),
    killUser: (sub, _at, iss = USER_ISSUER) => kill(`sub:${String(iss)}:${sub}`, { kind: 'sub', sub, iss }),
    liftUser: (sub, iss = USER_ISSUER) => liftAll(`sub:${String(iss)}:${sub}`),
    revokeToken: (jti) => revoke({ kind: 'jti', jti }),
  }

  let jtiCounter = 0
  return {
    mandate,
    audit,
    revocations,
    users,
    otherUsers,
    workloads,
    agentKey: { privateKey: agentKeys.privateKey, kid: agentKid },
    agentKeys,
    now: () => now,
    advance: (s) => {
      now += s
    },
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    logLines: lines,
    userToken: (claims, header) => users.sign(claims ?? {}, header),
    assertion: (claims = {}, header = {}, key = agentKeys.privateKey) =>
      new SignJWT({ iss: 'jwt-agent', sub: 'jwt-agent', aud: BROKER, jti: `a-${++jtiCounter}-${Math.random()}`, iat: now, exp: now + 60, ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: agentKid, ...header })
        .sign(key),
    rsKey: { privateKey: rsKeys.privateKey, kid: rsKid },
    rsAssertion: (claims = {}, header = {}) =>
      new SignJWT({
        iss: RESOURCE_SERVERS.other,
        sub: RESOURCE_SERVERS.other,
        aud: BROKER,
        jti: `r-${++jtiCounter}-${Math.random()}`,
        iat: now,
        exp: now + 60,
        ...claims,
      })
        .setProtectedHeader({ alg: 'ES256', kid: rsKid, ...header })
        .sign(rsKeys.privateKey),
    token: (form, headers = {}) =>
      Promise.resolve(
        mandate.app.request('/oauth2/token', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
          body: encodeForm(form),
        }),
      ),
    exchangeForm: (subjectToken, extra = {}) => ({
      grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: TOKEN_TYPE.accessToken,
      audience: AUDIENCE,
      ...extra,
    }),
    close: async () => {
      await mandate.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

export { CLIENT_ASSERTION_TYPE_JWT, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE }
