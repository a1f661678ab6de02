/**
 * FOR BENCHMARKS ONLY. The inputs `npm run bench` shares between Mandate,
 * the oidc-provider reference peer (bench/support/peer.ts) and the crypto
 * floor (bench/support/floor.ts), so that all three do the same work:
 *
 *   - an IdP with an RS256 key pair (2048-bit, as a typical IdP's) and its JWKS;
 *   - N agents (default 8), each with an ES256 key pair for `private_key_jwt`
 *     and a policy in Mandate's real format, granting two APIs of a small
 *     fixed list of realistic ones;
 *   - M users (default 100);
 *   - one broker identifier (`issuer`): the `aud` of every subject token and
 *     client assertion, and the issuer every server under test is given.
 *
 * Sizes are deterministic (fixed ids, lists and key sizes); the key material
 * is fresh each time. Tokens are signed before a run by `createRequests`, so
 * a load generator never signs while it measures. `writeInputs` splits the
 * result: `server.json` holds public keys only (plus the server's own signing
 * key), `generator.json` the private keys a generator needs.
 */
import { createPrivateKey, generateKeyPairSync, randomUUID, sign, type KeyObject, type JsonWebKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
export const JWT_BEARER_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
export const DEFAULT_ISSUER = 'https://broker.bench.example'
export const DEFAULT_IDP_ISSUER = 'https://login.bench.example'

/** The APIs agents are granted, as a company's policies would name them. */
export const APIS: readonly { readonly audience: string; readonly scopes: readonly string[] }[] = [
  { audience: 'https://calendar.example.com', scopes: ['calendar:freebusy', 'calendar:events.write'] },
  { audience: 'https://mail.example.com', scopes: ['mail:read', 'mail:send'] },
  { audience: 'https://drive.example.com', scopes: ['files:read', 'files:write'] },
  { audience: 'https://crm.example.com', scopes: ['crm:contacts.read', 'crm:deals.write'] },
  { audience: 'https://tickets.example.com', scopes: ['tickets:read', 'tickets:comment'] },
]

export interface AgentGrant {
  readonly audience: string
  readonly scopes: readonly string[]
  readonly default_scopes: readonly string[]
}

/** An agent as a server sees it: public key only. */
export interface ServerAgent {
  readonly id: string
  readonly kid: string
  readonly jwks: { readonly keys: readonly JsonWebKey[] }
  readonly grants: readonly AgentGrant[]
  /** The agent's policy file (YAML, Mandate's format), to be written as `<id>.yaml`. */
  readonly policy: string
}

/** Everything a server under test needs; no private key but its own signing key. */
export interface ServerSettings {
  readonly version: 1
  readonly issuer: string
  readonly idp: { readonly issuer: string; readonly jwks: { readonly keys: readonly JsonWebKey[] } }
  readonly agents: readonly ServerAgent[]
  /** The server's own ES256 signing key (private JWK), for the tokens it issues. */
  readonly signing: { readonly kid: string; readonly privateJwk: JsonWebKey }
  /** Lifetime of issued tokens, seconds. */
  readonly tokenTtl: number
}

/** What a load generator needs to sign requests before a run: private keys, no server secret. */
export interface GeneratorSettings {
  readonly version: 1
  readonly issuer: string
  readonly idp: { readonly issuer: string; readonly kid: string; readonly privateJwk: JsonWebKey }
  readonly agents: readonly { readonly id: string; readonly kid: string; readonly privateJwk: JsonWebKey; readonly grants: readonly AgentGrant[] }[]
  readonly users: readonly string[]
}

export interface Inputs {
  readonly server: ServerSettings
  readonly generator: GeneratorSettings
}

export interface InputOptions {
  readonly agents?: number
  readonly users?: number
  readonly issuer?: string
  readonly idpIssuer?: string
}

function ecKeyPair(): { publicJwk: JsonWebKey; privateJwk: JsonWebKey } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  return { publicJwk: publicKey.export({ format: 'jwk' }), privateJwk: privateKey.export({ format: 'jwk' }) }
}

/** A policy file as an operator would write it (see policies/calendar-assistant.yaml). */
function policyText(id: string, jwk: JsonWebKey, idpIssuer: string, grants: readonly AgentGrant[]): string {
  const grantLines = grants
    .map((g) => `  - audience: ${g.audience}\n    scopes: [${g.scopes.join(', ')}]\n    default_scopes: [${g.default_scopes.join(', ')}]`)
    .join('\n')
  return `# Generated for benchmarks (bench/support/inputs.ts).
agent: ${id}
owner: bench-team@example.com
purpose: Acts for the users it works for against company APIs (benchmark agent).
expires: 2099-01-01
authentication:
  method: private_key_jwt
  jwks:
    keys:
      - ${JSON.stringify(jwk)}
users:
  - issuer: ${idpIssuer}
grants:
${grantLines}
token_ttl:
  default: 300
  max: 900
delegation:
  max_depth: 1
`
}

/** Generates the key pairs, agents, policies and users; sizes depend on `options` only. */
export function generateInputs(options: InputOptions = {}): Inputs {
  const agentCount = options.agents ?? 8
  const userCount = options.users ?? 100
  const issuer = options.issuer ?? DEFAULT_ISSUER
  const idpIssuer = options.idpIssuer ?? DEFAULT_IDP_ISSUER
  if (!Number.isInteger(agentCount) || agentCount < 1 || !Number.isInteger(userCount) || userCount < 1) {
    throw new TypeError('agents and users must be positive integers')
  }

  const idpKid = 'idp-rs256-1'
  const idp = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const idpPublic = { ...idp.publicKey.export({ format: 'jwk' }), kid: idpKid, alg: 'RS256', use: 'sig' }

  const serverAgents: ServerAgent[] = []
  const generatorAgents: GeneratorSettings['agents'][number][] = []
  for (let i = 0; i < agentCount; i++) {
    const id = `bench-agent-${String(i + 1).padStart(2, '0')}`
    const kid = `${id}-es256-1`
    const { publicJwk, privateJwk } = ecKeyPair()
    const jwk = { ...publicJwk, alg: 'ES256', kid }
    const grants = [APIS[i % APIS.length]!, APIS[(i + 1) % APIS.length]!].map((api) => ({
      audience: api.audience,
      scopes: [...api.scopes],
      default_scopes: [api.scopes[0]!],
    }))
    serverAgents.push({ id, kid, jwks: { keys: [jwk] }, grants, policy: policyText(id, jwk, idpIssuer, grants) })
    generatorAgents.push({ id, kid, privateJwk: { ...privateJwk, alg: 'ES256', kid }, grants })
  }

  const users = Array.from({ length: userCount }, (_, i) => `user-${String(i + 1).padStart(4, '0')}@example.com`)
  const signingKid = 'broker-es256-1'
  const signing = ecKeyPair()

  return {
    server: {
      version: 1,
      issuer,
      idp: { issuer: idpIssuer, jwks: { keys: [idpPublic] } },
      agents: serverAgents,
      signing: { kid: signingKid, privateJwk: { ...signing.privateJwk, alg: 'ES256', kid: signingKid } },
      tokenTtl: 300,
    },
    generator: {
      version: 1,
      issuer,
      idp: { issuer: idpIssuer, kid: idpKid, privateJwk: { ...idp.privateKey.export({ format: 'jwk' }), alg: 'RS256', kid: idpKid } },
      agents: generatorAgents,
      users,
    },
  }
}

/** Writes `server.json` and `generator.json` in `dir`, and each agent's policy as `policies/<id>.yaml`; returns their paths. */
export async function writeInputs(dir: string, inputs: Inputs): Promise<{ server: string; generator: string; policiesDir: string }> {
  const server = join(dir, 'server.json')
  const generator = join(dir, 'generator.json')
  const policiesDir = join(dir, 'policies')
  await mkdir(policiesDir, { recursive: true })
  await writeFile(server, JSON.stringify(inputs.server))
  await writeFile(generator, JSON.stringify(inputs.generator), { mode: 0o600 })
  for (const agent of inputs.server.agents) await writeFile(join(policiesDir, `${agent.id}.yaml`), agent.policy)
  return { server, generator, policiesDir }
}

/**
 * The settings file a bench process is started with (its first argument:
 * `server.json` or `generator.json` from `writeInputs`), parsed; without one,
 * the usage line on stderr and exit 2.
 */
export function settingsFromArgv<T extends ServerSettings | GeneratorSettings>(script: string, file: 'server.json' | 'generator.json'): T {
  const path = process.argv[2]
  if (path === undefined) {
    process.stderr.write(`usage: tsx ${script} <${file}>   (benchmarks only)\n`)
    process.exit(2)
  }
  return JSON.parse(readFileSync(path, 'utf8')) as T
}

/** Where a Mandate under test finds what `writeInputs` and the benchmark wrote, and how it listens. */
export interface MandateConfigOptions {
  readonly port: number
  readonly policiesDir: string
  readonly dataDir: string
  /** A JWK set file holding `ServerSettings.signing` (see `signingKeySet`). */
  readonly signingKeysFile: string
  /** Where the IdP's JWKS is served (http on loopback is accepted). */
  readonly idpJwksUri: string
  /** YAML appended at the end (a `--variant`'s settings). */
  readonly extra?: string | undefined
}

/** The private JWK set Mandate signs with: the same key the peer and the floor get. */
export function signingKeySet(server: ServerSettings): { keys: JsonWebKey[] } {
  return { keys: [server.signing.privateJwk] }
}

/** The lifetime of the generator's client assertions, seconds (see `prepareRequests`). */
export const ASSERTION_LIFETIME_SECONDS = 60

/** `over` merged into `base`, mappings key by key (a variant's `limits:` adds to the base's). */
function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(over)) {
    const b = out[k]
    const mergeable = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)
    out[k] = mergeable(b) && mergeable(v) ? deepMerge(b, v) : v
  }
  return out
}

/**
 * A production config file for `mandate serve` (no --dev) over these inputs:
 * its issuer is the one every token names, it trusts the IdP for user
 * subject tokens (RS256, through the JWKS at `idpJwksUri`), and it reads the
 * generated policy files. Client assertions may live as long as the
 * generator makes them, as the README advises for production: then none made
 * after the broker started predates its replay memory. Storage comes from the
 * environment as usual (DATABASE_URL and REDIS_URL, or embedded without
 * them). `extra` (a variant's YAML) is merged in, mapping by mapping.
 */
export function mandateConfig(server: ServerSettings, options: MandateConfigOptions): string {
  const base = {
    issuer: server.issuer,
    listen: { host: '127.0.0.1', port: options.port },
    policies_dir: options.policiesDir,
    data_dir: options.dataDir,
    signing: { keys_file: options.signingKeysFile },
    trust: { subjects: [{ issuer: server.idp.issuer, jwks_uri: options.idpJwksUri, algorithms: ['RS256'] }] },
    limits: { client_assertion_max_lifetime_seconds: ASSERTION_LIFETIME_SECONDS },
  }
  const extra: unknown = options.extra === undefined ? undefined : parseYaml(options.extra)
  if (extra !== undefined && extra !== null && (typeof extra !== 'object' || Array.isArray(extra))) throw new TypeError('a variant must be a YAML mapping')
  const config = extra === undefined || extra === null ? base : deepMerge(base, extra as Record<string, unknown>)
  return `# Generated for a benchmark (bench/support/inputs.ts).\n${stringifyYaml(config)}`
}

const signAsync = promisify(sign)
const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')

/** A compact JWS signed with a one-shot node:crypto call (thread pool). */
async function signJwt(alg: 'RS256' | 'ES256', key: KeyObject, header: object, payload: object): Promise<string> {
  const input = `${b64({ alg, ...header })}.${b64(payload)}`
  const signature = await signAsync('sha256', Buffer.from(input), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key)
  return `${input}.${signature.toString('base64url')}`
}

/** One exchange, signed in advance: the form body and what it asks for. */
export interface PreparedRequest {
  readonly agent: string
  readonly user: string
  readonly audience: string
  readonly scope: string
  readonly subjectToken: string
  readonly clientAssertion: string
  /** `application/x-www-form-urlencoded` body for the token endpoint. */
  readonly body: string
  /** A DPoP proof (RFC 9449 §4) of the agent's DPoP key for the token endpoint, when asked for. */
  readonly dpop?: string
}

/**
 * What the user's access token lets an agent act on: the sign-in scopes and
 * every API's scopes (Mandate grants an agent no scope its user's token does
 * not carry; the peer and the floor do not look).
 */
const USER_SCOPE = ['openid', 'profile', 'email', ...APIS.flatMap((a) => a.scopes)].join(' ')

/** A user's access token as the IdP issued it. */
export interface SubjectToken {
  readonly user: string
  readonly token: string
}

export interface RequestOptions {
  /** Epoch seconds the tokens are issued at; now by default. */
  readonly now?: number
  /** Key the subject tokens are signed with instead of the IdP's (for refusal tests). */
  readonly subjectKey?: KeyObject
  /** `aud` of the client assertions; the broker's issuer by default. */
  readonly assertionAudience?: string
  /** Index of the first request in the cycle of users, agents and grants (to continue a series). */
  readonly offset?: number
  /** Sign a DPoP proof for each exchange too, with a key per agent (its token is then bound to it). */
  readonly dpop?: boolean
}

/** One DPoP key per agent, made once per process: an agent instance keeps its key (RFC 9449 §2). */
const dpopKeys = new Map<string, { readonly key: KeyObject; readonly jwk: JsonWebKey }>()
function dpopKeyOf(agent: string): { readonly key: KeyObject; readonly jwk: JsonWebKey } {
  let k = dpopKeys.get(agent)
  if (k === undefined) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    // Only the public members RFC 7638 hashes: the proof's `jwk` header.
    const { kty, crv, x, y } = publicKey.export({ format: 'jwk' }) as Record<'kty' | 'crv' | 'x' | 'y', string>
    k = { key: privateKey, jwk: { kty, crv, x, y } }
    dpopKeys.set(agent, k)
  }
  return k
}

/** Runs `count` signing jobs, at most `width` at a time (a queue of 100,000 callbacks helps no one). */
async function inBatches<T>(count: number, job: (i: number) => Promise<T>, width = 2048): Promise<T[]> {
  const out: T[] = []
  for (let start = 0; start < count; start += width) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(width, count - start) }, (_, k) => job(start + k)))))
  }
  return out
}

/**
 * Signs `count` subject tokens as the IdP (RS256, `typ: at+jwt`, the user's
 * `sub`, `aud` = the broker, unique `jti`, 1 h, `scope` = USER_SCOPE), cycling through the users
 * from `offset`. Every token is distinct, so a server that caches verified
 * subject tokens gets no hit from them.
 */
export async function signSubjectTokens(settings: GeneratorSettings, count: number, options: RequestOptions = {}): Promise<SubjectToken[]> {
  const now = options.now ?? Math.floor(Date.now() / 1000)
  const offset = options.offset ?? 0
  const idpKey = options.subjectKey ?? createPrivateKey({ key: settings.idp.privateJwk, format: 'jwk' })
  return inBatches(count, async (i) => {
    const user = settings.users[(offset + i) % settings.users.length]!
    const token = await signJwt(
      'RS256',
      idpKey,
      { typ: 'at+jwt', kid: settings.idp.kid },
      {
        iss: settings.idp.issuer,
        sub: user,
        aud: settings.issuer,
        client_id: 'bench-web-app',
        scope: USER_SCOPE,
        jti: randomUUID(),
        iat: now,
        exp: now + 3600,
      },
    )
    return { user, token }
  })
}

/**
 * One exchange per subject token, in order: request `offset + i` is made by
 * agent `(offset + i) mod agents`, for the next of that agent's grants, with
 * its own freshly signed client assertion (ES256, RFC 7523: `iss` = `sub` =
 * the agent, `aud` = the broker's issuer, unique `jti`, 60 s).
 */
export async function assertRequests(settings: GeneratorSettings, subjects: readonly SubjectToken[], options: RequestOptions = {}): Promise<PreparedRequest[]> {
  const now = options.now ?? Math.floor(Date.now() / 1000)
  const offset = options.offset ?? 0
  const agentKeys = settings.agents.map((a) => createPrivateKey({ key: a.privateJwk, format: 'jwk' }))
  const assertionAudience = options.assertionAudience ?? settings.issuer
  return inBatches(subjects.length, async (i) => {
    const n = offset + i
    const { user, token: subjectToken } = subjects[i]!
    const agentIndex = n % settings.agents.length
    const agent = settings.agents[agentIndex]!
    const grant = agent.grants[Math.floor(n / settings.agents.length) % agent.grants.length]!
    const scope = grant.scopes.join(' ')
    const clientAssertion = await signJwt(
      'ES256',
      agentKeys[agentIndex]!,
      { typ: 'JWT', kid: agent.kid },
      {
        iss: agent.id,
        sub: agent.id,
        aud: assertionAudience,
        jti: randomUUID(),
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECONDS,
      },
    )
    const body = new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      client_assertion_type: JWT_BEARER_ASSERTION,
      client_assertion: clientAssertion,
      subject_token: subjectToken,
      subject_token_type: ACCESS_TOKEN_TYPE,
      resource: grant.audience,
      scope,
    }).toString()
    const prepared = { agent: agent.id, user, audience: grant.audience, scope, subjectToken, clientAssertion, body }
    if (options.dpop !== true) return prepared
    const { key, jwk } = dpopKeyOf(agent.id)
    const dpop = await signJwt('ES256', key, { typ: 'dpop+jwt', jwk }, { jti: randomUUID(), htm: 'POST', htu: `${settings.issuer}/oauth2/token`, iat: now })
    return { ...prepared, dpop }
  })
}

/**
 * Signs `count` exchanges before a run, cycling through users, agents and the
 * agents' grants: each has its own subject token (`signSubjectTokens`) and
 * its own client assertion (`assertRequests`). Requests are valid for 60 s
 * after `now`.
 */
export async function createRequests(settings: GeneratorSettings, count: number, options: RequestOptions = {}): Promise<PreparedRequest[]> {
  return assertRequests(settings, await signSubjectTokens(settings, count, options), options)
}
