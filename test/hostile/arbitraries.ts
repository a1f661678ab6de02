/**
 * Generators of hostile requests. Every case starts from a request the
 * broker must accept and applies faults to it, each of which knows the
 * answer it calls for, so that the expected answer is derived from what was
 * built and never from what the broker said. Faults hold a slot (the part of
 * the request they change): two faults of one case never share one, so each
 * still stands after the other is applied, and the case is right to get the
 * answer of any of them. Two stages come first whatever else is wrong: a
 * content type other than a form, and a body over the limit (413).
 *
 * JWTs are built from their parts and signed by the keys the test holds
 * (the user, workload and agent issuers of test/support/broker.ts) when the
 * case needs a valid signature, so that only the fault can refuse them.
 */
import {
  constants,
  createHmac,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  KeyObject,
  randomUUID,
  sign as cryptoSign,
  type JsonWebKey,
} from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { AUDIT_EVENTS, MAX_INSTANT, MAX_PAGE } from '../../src/audit/port.js'
import { AGENT_STATES, INVENTORY_SORTS } from '../../src/core/inventory.js'
import { MAX_AGENTS_PAGE } from '../../src/http/routes/admin-agents.js'
import { MAX_JWT_LENGTH } from '../../src/tokens/jws.js'
import {
  ADMIN_KEYS,
  AUDIENCE,
  basic,
  BROKER,
  CLIENT_ASSERTION_TYPE_JWT,
  GRANT_TYPE_TOKEN_EXCHANGE,
  OTHER_AUDIENCE,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  TOKEN_TYPE,
  USER_ISSUER,
  WORKLOAD_ISSUER,
  type TestBroker,
} from '../support/broker.js'
import type { IdentityContext } from './identity.js'
import { error, hostileCase, INVALID_CLIENT, INVALID_REQUEST, TOO_LARGE, type HostileCase, type Outcome } from './harness.js'

export const AGENTS = ['secret-agent', 'jwt-agent', 'workload-agent'] as const
export type Agent = (typeof AGENTS)[number]
/**
 * Holders of minted tokens: the agents, and sub-agent, which gets its tokens
 * by re-delegation only and which no generated client authentication names,
 * so that no wrongly accepted one can revoke its tokens under other cases.
 */
const OWNERS = [...AGENTS, 'sub-agent'] as const
type Owner = (typeof OWNERS)[number]

const WORKLOAD_SUB = 'spiffe://test/ns/agents/sa/runner'
const UNSUPPORTED_GRANT = error(400, 'unsupported_grant_type')
const INVALID_SCOPE = error(400, 'invalid_scope')
const INVALID_TARGET = error(400, 'invalid_target')
const UNAUTHORIZED_CLIENT = error(400, 'unauthorized_client')
const INACTIVE: Outcome = { kind: 'inactive' }
const ADMIN_INVALID = error(400, 'invalid_request')
const ADMIN_UNAUTHORIZED = error(401, 'unauthorized')
const ADMIN_FORBIDDEN = error(403, 'forbidden')
const ADMIN_NOT_FOUND = error(404, 'not_found')

// ---------------------------------------------------------------------------
// What the generators hold: keys, valid tokens, the broker's limits

export interface Signer {
  readonly alg: 'RS256' | 'ES256'
  readonly kid: string
  readonly privateKey: KeyObject
  readonly publicJwk: Record<string, unknown>
}

export interface HostileContext {
  /** The broker's clock, epoch seconds (fixed: the suite never moves it). */
  readonly now: number
  readonly skew: number
  readonly maxBodyBytes: number
  readonly assertionMaxLifetime: number
  readonly workloadMaxLifetime: number
  /** Longest a subject token may still be valid (a configured maximum age; 24 h by default). */
  readonly subjectMaxAge: number
  readonly users: Signer
  readonly workloads: Signer
  readonly agentKey: Signer
  /** The broker's own signing key (from its keys file): Mandate tokens built from parts. */
  readonly broker: Signer
  /** Keys nobody trusts, one per algorithm. */
  readonly strangers: Readonly<Record<'RS256' | 'ES256', Signer>>
  /** Valid user tokens that every agent may exchange (signed once: RSA signing is the costly part). */
  readonly userTokens: readonly string[]
  /** Tokens this broker minted, per holder (live for the whole run: the clock stands still). */
  readonly minted: Readonly<Record<Owner, readonly string[]>>
  /** Client assertions of jwt-agent already used once. */
  readonly usedAssertions: readonly string[]
  /** A number not handed out before (jti values). */
  readonly next: () => number
  /** DPoP keys, bound tokens, SVID and ID-JAG issuers: on the `identity` group's broker only. */
  readonly identity?: IdentityContext
}

export function signerOf(alg: 'RS256' | 'ES256', kid: string, privateKey: KeyObject): Signer {
  return { alg, kid, privateKey, publicJwk: { ...createPublicKey(privateKey).export({ format: 'jwk' }), kid, alg } }
}

const toKeyObject = (key: unknown): KeyObject => (key instanceof KeyObject ? key : KeyObject.from(key as Parameters<typeof KeyObject.from>[0]))

/** The key the broker signs with, read from its keys file (the test broker generates it in its own directory). */
async function brokerSigner(b: TestBroker): Promise<Signer> {
  const { config } = b.mandate
  const file = config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json')
  const set = JSON.parse(await readFile(file, 'utf8')) as { keys: (JsonWebKey & { kid: string })[] }
  const jwk = set.keys[0]!
  return signerOf('ES256', jwk.kid, createPrivateKey({ key: jwk, format: 'jwk' }))
}

/**
 * Keys and tokens for the generators, from a running test broker: its
 * issuers' keys, strangers' keys, and tokens minted through valid exchanges.
 */
export async function hostileContext(b: TestBroker): Promise<HostileContext> {
  const limits = b.mandate.config.limits as typeof b.mandate.config.limits & { readonly subject_token_max_age_seconds?: number }
  let counter = 0
  const next = () => ++counter
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const users = signerOf('RS256', b.users.kid, toKeyObject(b.users.privateKey))
  // Everything but the tokens, which are made with it.
  const keys: HostileContext = {
    now: b.now(),
    skew: limits.clock_skew_seconds,
    maxBodyBytes: limits.max_body_bytes,
    assertionMaxLifetime: limits.client_assertion_max_lifetime_seconds,
    workloadMaxLifetime: limits.workload_token_max_lifetime_seconds,
    subjectMaxAge: limits.subject_token_max_age_seconds ?? 86_400,
    users,
    workloads: signerOf('ES256', b.workloads.kid, toKeyObject(b.workloads.privateKey)),
    agentKey: signerOf('ES256', b.agentKey.kid, toKeyObject(b.agentKey.privateKey)),
    broker: await brokerSigner(b),
    strangers: { RS256: signerOf('RS256', users.kid, rsa.privateKey), ES256: signerOf('ES256', b.agentKey.kid, ec.privateKey) },
    next,
    userTokens: [],
    minted: { 'secret-agent': [], 'jwt-agent': [], 'workload-agent': [], 'sub-agent': [] },
    usedAssertions: [],
  }
  const userTokens = Array.from({ length: 12 }, () => buildJwt(subjectRole(keys, 'secret-agent')).token)
  const minted: Record<Owner, string[]> = { 'secret-agent': [], 'jwt-agent': [], 'workload-agent': [], 'sub-agent': [] }
  const usedAssertions: string[] = []
  const exchange = async (d: FormDraft, holder: Owner) => {
    const c = finishForm(d, keys)
    const res = await b.mandate.app.request(c.request.path, { method: 'POST', headers: c.request.headers, body: c.request.body! })
    const body = (await res.json()) as { access_token?: string }
    if (res.status !== 200 || typeof body.access_token !== 'string') {
      throw new Error(`the hostile suite's setup exchange for ${holder} failed: ${res.status} ${JSON.stringify(body)}`)
    }
    minted[holder].push(body.access_token)
  }
  for (let i = 0; i < 4; i++) {
    for (const agent of AGENTS) {
      const d = tokenBaseDraft({ ...keys, userTokens }, agent)
      if (agent === 'jwt-agent') usedAssertions.push(param(d, 'client_assertion')!)
      await exchange(d, agent)
    }
    // RFC 8693 §1.1 delegation: secret-agent's token, exchanged by the sub-agent its policy names.
    const d = tokenBaseDraft({ ...keys, userTokens }, 'secret-agent')
    setParam(d, 'subject_token', minted['secret-agent'][i]!)
    setParam(d, 'scope', 'read')
    d.headers['authorization'] = basic('sub-agent', SECRET)['authorization']!
    await exchange(d, 'sub-agent')
  }
  return { ...keys, userTokens, minted, usedAssertions }
}

// ---------------------------------------------------------------------------
// JWTs from parts

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const enc = (v: string | Uint8Array) => Buffer.from(v).toString('base64url')
type Part = Record<string, unknown> | Uint8Array
export const partText = (p: Part) => enc(p instanceof Uint8Array ? p : JSON.stringify(p))

/** A signature over `input`: RS256, PS256, ES256 with a private key, HS256/384/512 with a secret. */
function signature(input: string, alg: string, key: KeyObject | Uint8Array): string {
  if (key instanceof Uint8Array)
    return createHmac(`sha${/^HS(384|512)$/.exec(alg)?.[1] ?? '256'}`, key)
      .update(input)
      .digest('base64url')
  const data = Buffer.from(input)
  if (alg === 'ES256') return cryptoSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')
  if (alg === 'PS256') return cryptoSign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }).toString('base64url')
  return cryptoSign('sha256', data, key).toString('base64url')
}

/** A compact JWS over exactly these parts, signed as `signer` says (or with a given signature text). */
export function compact(
  header: Part,
  payload: Part,
  signer: { readonly alg: string; readonly key: KeyObject | Uint8Array } | { readonly signature: string },
): string {
  const input = `${partText(header)}.${partText(payload)}`
  return `${input}.${'signature' in signer ? signer.signature : signature(input, signer.alg, signer.key)}`
}

/** Merges overrides into a claim or header set; an `undefined` value removes the member. */
export function merge(base: Record<string, unknown>, over: Record<string, unknown> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete out[k]
    else out[k] = v
  }
  return out
}

/** A JWT's role in a request: who signs it, what it must carry, and what a refusal of it is answered with. */
export interface JwtRole {
  readonly field: 'subject_token' | 'client_assertion' | 'actor_token' | 'access_token' | 'assertion'
  readonly signer: Signer
  readonly refused: readonly Outcome[]
  header(): Record<string, unknown>
  claims(): Record<string, unknown>
  readonly required: readonly string[]
  /** Registered claims that must be strings in this role. */
  readonly stringClaims: readonly string[]
  /** Longest remaining lifetime (seconds) the broker may accept for this role. */
  readonly maxLifetime: number
  readonly validTyps: readonly (string | undefined)[]
  readonly wrongTyps: readonly unknown[]
  readonly wrongIssuers: readonly Record<string, unknown>[]
  readonly wrongAudiences: readonly unknown[]
  /** Valid tokens of other roles. */
  foreign(): string[]
  /** Faults only this role has. */
  readonly own: readonly fc.Arbitrary<JwtFault>[]
}

/** A faulty (or, for a base, valid) JWT; `token()` builds it (fresh `jti`, fresh signature) each time it is sent. */
export interface JwtFault {
  readonly label: string
  token(): string
}

export function buildJwt(
  role: JwtRole,
  o: { header?: Record<string, unknown>; claims?: Record<string, unknown>; signer?: Signer; alg?: string } = {},
): { header: Record<string, unknown>; claims: Record<string, unknown>; token: string } {
  const header = merge(role.header(), o.header)
  const claims = merge(role.claims(), o.claims)
  const signer = o.signer ?? role.signer
  return { header, claims, token: compact(header, claims, { alg: o.alg ?? signer.alg, key: signer.privateKey }) }
}

/** The user token a subject must be: RS256 by the user issuer, `typ: at+jwt`, in the groups every test agent admits. */
export function subjectRole(ctx: HostileContext, agent: Agent): JwtRole {
  const own: fc.Arbitrary<JwtFault>[] = [
    // RFC 8417: a Security Event Token (a logout token, say) is no access token.
    fc
      .constantFrom<Record<string, unknown>>(
        { 'http://schemas.openid.net/event/backchannel-logout': {} },
        { 'https://schemas.openid.net/secevent/risc/event-type/account-disabled': { subject: { format: 'opaque', id: 'x' } } },
        {},
      )
      .map((events) => jwt('an events claim (a security event token)', () => buildJwt(role, { claims: { events } }).token)),
    // OIDC Core §2 and the marks real IdPs put on ID and refresh tokens.
    fc
      .constantFrom<[string, unknown]>(
        ['nonce', 'n-0S6_WzA2Mj'],
        ['at_hash', 'HK6E_P6Dh8Y93mRNtsDB1Q'],
        ['c_hash', 'LDktKdoQak3Pk0cnXxCltA'],
        ['s_hash', 'bOhtX8F73IMjSPeVAqxyTQ'],
        ['token_use', 'id'],
        ['typ', 'ID'],
        ['typ', 'Refresh'],
        ['typ', 'Offline'],
        ['typ', 'Logout'],
      )
      .map(([name, value]) => jwt(`an ID/refresh-token claim (${name}: ${JSON.stringify(value)})`, () => buildJwt(role, { claims: { [name]: value } }).token)),
    // RFC 8693 §4.1, §4.4: an already delegated token, or one whose user named someone else.
    fc
      .constantFrom<[string, unknown]>(
        ['act', { sub: 'someone-else' }],
        ['act', 'x'],
        ['may_act', { sub: 'someone-else' }],
        ['may_act', { sub: agent, iss: 'https://evil.test' }],
        ['may_act', 'secret-agent'],
        ['may_act', []],
        ['may_act', { sub: 5 }],
        ['may_act', null],
      )
      .map(([name, value]) => jwt(`subject ${name} ${JSON.stringify(value)}`, () => buildJwt(role, { claims: { [name]: value } }).token)),
  ]
  if (agent === 'jwt-agent') {
    own.push(
      fc
        .constantFrom<unknown>(['marketing'], 'marketing', [], [1], undefined)
        .map((groups) =>
          jwt(`a user jwt-agent's policy does not admit (groups ${JSON.stringify(groups)})`, () => buildJwt(role, { claims: { groups } }).token),
        ),
    )
  }
  const role: JwtRole = {
    field: 'subject_token',
    signer: ctx.users,
    refused: [INVALID_REQUEST],
    header: () => ({ alg: 'RS256', kid: ctx.users.kid, typ: 'at+jwt' }),
    claims: () => ({
      iss: USER_ISSUER,
      sub: 'alice',
      aud: BROKER,
      iat: ctx.now,
      exp: ctx.now + 3600,
      jti: `u-${ctx.next()}`,
      scope: 'read write',
      groups: ['engineering'],
    }),
    required: ['iss', 'sub', 'aud', 'exp', 'iat'],
    stringClaims: ['iss', 'sub', 'jti', 'scope'],
    maxLifetime: ctx.subjectMaxAge,
    validTyps: ['at+jwt', 'application/at+jwt', 'AT+JWT', 'Application/At+Jwt'],
    wrongTyps: [
      'JWT',
      'jwt',
      'application/jwt',
      'id_token+jwt',
      'logout+jwt',
      'secevent+jwt',
      'refresh+jwt',
      'at+jwt ',
      'at-jwt',
      'JOSE',
      '',
      1,
      null,
      ['at+jwt'],
      undefined,
    ],
    wrongIssuers: [
      { iss: 'https://evil.test' },
      { iss: `${USER_ISSUER}/` },
      { iss: USER_ISSUER.toUpperCase() },
      { iss: BROKER },
      { iss: WORKLOAD_ISSUER },
      { iss: '' },
    ],
    wrongAudiences: [OTHER_AUDIENCE, [OTHER_AUDIENCE], `${BROKER}/`, BROKER.toUpperCase(), `${BROKER}/oauth2/token`, AUDIENCE],
    foreign: () => [buildJwt(assertionRole(ctx)).token, buildJwt(workloadRole(ctx)).token],
    own,
  }
  return role
}

/** jwt-agent's private_key_jwt client assertion (RFC 7523): ES256, `aud` the broker's issuer only, fresh `jti`. */
export function assertionRole(ctx: HostileContext): JwtRole {
  return {
    field: 'client_assertion',
    signer: ctx.agentKey,
    refused: [INVALID_CLIENT],
    header: () => ({ alg: 'ES256', kid: ctx.agentKey.kid }),
    claims: () => ({ iss: 'jwt-agent', sub: 'jwt-agent', aud: BROKER, jti: `a-${ctx.next()}-${randomUUID()}`, iat: ctx.now, exp: ctx.now + 60 }),
    required: ['iss', 'sub', 'aud', 'exp', 'jti'],
    stringClaims: ['iss', 'sub', 'jti'],
    maxLifetime: ctx.assertionMaxLifetime,
    validTyps: [undefined, 'JWT', 'jwt', 'client-authentication+jwt', 'application/client-authentication+jwt'],
    wrongTyps: ['at+jwt', 'application/at+jwt', 'logout+jwt', 'secevent+jwt', 'JOSE', '', 1, null, ['JWT']],
    wrongIssuers: [
      { iss: 'secret-agent', sub: 'secret-agent' },
      { iss: 'nobody', sub: 'nobody' },
      { iss: 'JWT-AGENT', sub: 'JWT-AGENT' },
      { sub: 'secret-agent' },
      { iss: 'https://evil.test', sub: 'https://evil.test' },
      { iss: '' },
    ],
    wrongAudiences: [[BROKER], `${BROKER}/oauth2/token`, `${BROKER}/`, OTHER_AUDIENCE, USER_ISSUER],
    foreign: () => [ctx.userTokens[0]!, buildJwt(workloadRole(ctx)).token],
    own: [],
  }
}

/** workload-agent's workload identity token, sent as `actor_token` and its only client authentication. */
export function workloadRole(ctx: HostileContext): JwtRole {
  const role: JwtRole = {
    field: 'actor_token',
    signer: ctx.workloads,
    refused: [INVALID_CLIENT],
    header: () => ({ alg: 'ES256', kid: ctx.workloads.kid }),
    claims: () => ({ iss: WORKLOAD_ISSUER, sub: WORKLOAD_SUB, aud: BROKER, iat: ctx.now, exp: ctx.now + 600 }),
    required: ['iss', 'sub', 'aud', 'exp', 'iat'],
    stringClaims: ['iss', 'sub', 'jti'],
    maxLifetime: ctx.workloadMaxLifetime,
    validTyps: [undefined, 'JWT', 'jwt', 'application/jwt'],
    wrongTyps: ['at+jwt', 'logout+jwt', 'secevent+jwt', 'id_token+jwt', 'JOSE', '', 1, null],
    wrongIssuers: [{ iss: USER_ISSUER }, { iss: 'https://evil.test' }, { iss: `${WORKLOAD_ISSUER}/` }, { iss: BROKER }],
    wrongAudiences: [OTHER_AUDIENCE, [OTHER_AUDIENCE], `${BROKER}/`, `${BROKER}/oauth2/token`],
    foreign: () => [ctx.userTokens[0]!, buildJwt(assertionRole(ctx)).token],
    own: [
      fc
        .constantFrom(`${WORKLOAD_SUB}/`, 'spiffe://test/ns/agents/sa/other', WORKLOAD_SUB.toUpperCase())
        .map((sub) => jwt(`a workload no policy names (sub ${sub})`, () => buildJwt(role, { claims: { sub } }).token)),
    ],
  }
  return role
}

export const jwt = (label: string, token: () => string): JwtFault => ({ label, token })

/** The last base64url character with unused low bits set: the same bytes, a second spelling (RFC 4648 §3.5). */
function nonCanonical(part: string, k: number): string | undefined {
  const unused = [0, 0, 4, 2][part.length % 4]!
  if (unused === 0) return undefined
  const mask = (1 << unused) - 1
  const v = B64URL.indexOf(part.at(-1)!)
  return `${part.slice(0, -1)}${B64URL.charAt((v & ~mask) | (1 + (k % mask)))}`
}

export const HOSTILE_CHARS = ['\u0000', '\ud800', '\udbff', '\udc00', '\udfff'] as const
export const INVALID_UTF8: readonly (readonly number[])[] = [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]]
export const MARK = 'HOSTILE-MARK-7f3a'

/** `base` with `bytes` where MARK was in its JSON text. */
export function withBytes(base: Record<string, unknown>, bytes: readonly number[]): Uint8Array {
  const [before, after] = JSON.stringify(base).split(MARK) as [string, string]
  return Buffer.concat([Buffer.from(before), Buffer.from(bytes), Buffer.from(after)])
}

const insertAt = (s: string, at: number, ch: string) => {
  const i = at % (s.length + 1)
  return `${s.slice(0, i)}${ch}${s.slice(i)}`
}

/**
 * JWT faults about the token's form: encoding, structure, header, key and
 * signature. Every one must be refused with the role's answer.
 */
export function jwtFormFaults(ctx: HostileContext, role: JwtRole): fc.Arbitrary<JwtFault> {
  const valid = () => buildJwt(role).token
  const other = role.signer.alg === 'RS256' ? ctx.strangers.RS256 : ctx.strangers.ES256
  return fc.oneof(
    fc
      .record({ part: fc.integer({ min: 0, max: 2 }), at: fc.nat(), ch: fc.constantFrom('+', '/', '=', ' ', '!', '*', '~', '%', '\\', '"', ',', 'é', '\t') })
      .map(({ part, at, ch }) =>
        jwt(`bad base64url (${JSON.stringify(ch)} in part ${part})`, () => {
          const parts = valid().split('.')
          parts[part] = insertAt(parts[part]!, at, ch)
          return parts.join('.')
        }),
      ),
    fc.record({ part: fc.integer({ min: 0, max: 2 }), k: fc.nat() }).map(({ part, k }) =>
      jwt(`non-canonical base64url (part ${part})`, () => {
        const parts = valid().split('.')
        const changed = nonCanonical(parts[part]!, k)
        // Header and payload may have no spare bits; the signature (ES256 and RS256 alike) always has.
        if (changed === undefined) parts[2] = nonCanonical(parts[2]!, k)!
        else parts[part] = changed
        return parts.join('.')
      }),
    ),
    fc.constantFrom('two parts', 'four parts', 'five parts (JWE shape)', 'empty payload part', 'leading space', 'trailing newline', 'dots only').map((shape) =>
      jwt(`not a compact JWS: ${shape}`, () => {
        const t = valid()
        const [h, p, s] = t.split('.') as [string, string, string]
        switch (shape) {
          case 'two parts':
            return `${h}.${p}`
          case 'four parts':
            return `${t}.${s}`
          case 'five parts (JWE shape)':
            return `${h}.${p}.${s}.${p}.${s}`
          case 'empty payload part':
            return `${h}..${s}`
          case 'leading space':
            return ` ${t}`
          case 'trailing newline':
            return `${t}\n`
          default:
            return '..'
        }
      }),
    ),
    fc.record({ alg: fc.constantFrom('none', 'None', 'NONE', 'nOnE'), sig: fc.constantFrom('empty', 'original', 'junk') }).map(({ alg, sig }) =>
      jwt(`alg ${alg} (${sig} signature)`, () => {
        const { claims, token } = buildJwt(role)
        const s = sig === 'empty' ? '' : sig === 'original' ? token.split('.')[2]! : 'AAAA'
        return compact(merge(role.header(), { alg }), claims, { signature: s })
      }),
    ),
    fc
      .record({ alg: fc.constantFrom('HS256', 'HS384', 'HS512'), secret: fc.constantFrom('public key PEM', 'public JWK', 'empty', 'guessable') })
      .map(({ alg, secret }) =>
        jwt(`${alg} signed with ${secret} (algorithm confusion)`, () => {
          const key =
            secret === 'public key PEM'
              ? Buffer.from(createPublicKey(role.signer.privateKey).export({ type: 'spki', format: 'pem' }) as string)
              : secret === 'public JWK'
                ? Buffer.from(JSON.stringify(role.signer.publicJwk))
                : Buffer.from(secret === 'empty' ? '' : 'secret')
          return compact(merge(role.header(), { alg }), role.claims(), { alg, key })
        }),
      ),
    fc
      .constantFrom<unknown>(
        'RS1',
        'ES256K',
        'EdDSA',
        'Ed25519',
        'PS256',
        'PS512',
        'ES384',
        'ES512',
        'RS384',
        'RS512',
        'A128KW',
        'dir',
        'RSA-OAEP',
        'rs256',
        'es256',
        `${role.signer.alg} `,
        '',
        256,
        null,
        true,
        [role.signer.alg],
        {},
        undefined,
      )
      .filter((alg) => alg !== role.signer.alg)
      .map((alg) =>
        jwt(
          `alg ${JSON.stringify(alg) ?? 'absent'}`,
          () => buildJwt(role, { header: { alg }, alg: role.signer.alg === 'RS256' && alg === 'PS256' ? 'PS256' : role.signer.alg }).token,
        ),
      ),
    fc
      .record({ crit: fc.constantFrom<unknown>(['exp'], ['b64'], [], ['x-ext'], 'exp', {}, [1]), b64: fc.boolean() })
      .map(({ crit, b64 }) =>
        jwt(
          `crit ${JSON.stringify(crit)}${b64 ? ' with b64: false' : ''}`,
          () => buildJwt(role, { header: { crit, 'x-ext': 1, ...(b64 ? { b64: false } : {}) } }).token,
        ),
      ),
    fc.constant(null).map(() => jwt('b64: false without crit', () => buildJwt(role, { header: { b64: false } }).token)),
    fc.constantFrom('jku', 'x5u', 'jwk (a stranger key that signed)', 'jwk (the real public key)', 'x5c').map((which) =>
      jwt(`key-carrying header ${which}`, () => {
        switch (which) {
          case 'jku':
            return buildJwt(role, { header: { jku: 'https://evil.test/jwks.json' } }).token
          case 'x5u':
            return buildJwt(role, { header: { x5u: 'https://evil.test/cert.pem' } }).token
          case 'jwk (a stranger key that signed)':
            return buildJwt(role, { header: { jwk: other.publicJwk }, signer: other }).token
          case 'jwk (the real public key)':
            return buildJwt(role, { header: { jwk: role.signer.publicJwk } }).token
          default:
            return buildJwt(role, { header: { x5c: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'] } }).token
        }
      }),
    ),
    fc
      .oneof(
        fc.string({ minLength: 1, maxLength: 40 }),
        fc.constantFrom<unknown>(
          '',
          `${role.signer.kid}x`,
          role.signer.kid.toUpperCase(),
          '../../../etc/passwd',
          "kid' OR 1=1 --",
          1,
          null,
          {},
          [role.signer.kid],
          true,
        ),
      )
      .filter((kid) => kid !== role.signer.kid)
      .map((kid) => jwt(`wrong kid ${JSON.stringify(kid)}`, () => buildJwt(role, { header: { kid } }).token)),
    fc
      .boolean()
      .map((withKid) =>
        jwt(
          `signed by a stranger's key (${withKid ? 'the real kid' : 'no kid'})`,
          () => buildJwt(role, { header: withKid ? {} : { kid: undefined }, signer: other }).token,
        ),
      ),
    fc.constantFrom('altered', 'truncated', 'empty', 'another token’s', 'extended').map((how) =>
      jwt(`${how} signature`, () => {
        const [h, p, s] = valid().split('.') as [string, string, string]
        const i = Math.floor(s.length / 2)
        switch (how) {
          case 'altered':
            return `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`
          case 'truncated':
            return `${h}.${p}.${s.slice(0, -6)}`
          case 'empty':
            return `${h}.${p}.`
          case 'another token’s':
            return `${h}.${p}.${buildJwt(role, { claims: { x_other: 1 } }).token.split('.')[2]!}`
          default:
            return `${h}.${p}.${s}AAAA`
        }
      }),
    ),
    fc.record({ where: fc.constantFrom('header', 'payload'), extra: fc.integer({ min: 0, max: MAX_JWT_LENGTH }) }).map(({ where, extra }) =>
      jwt(`huge ${where} (over ${MAX_JWT_LENGTH} characters)`, () => {
        const pad = { 'x-pad': 'a'.repeat(MAX_JWT_LENGTH + extra) }
        return buildJwt(role, where === 'header' ? { header: pad } : { claims: pad }).token
      }),
    ),
    fc.constantFrom('a JWS as a JSON string', 'the bytes of a JWS', 'the bytes of a JWS, cty JWT').map((how) =>
      jwt(`nested JWS payload (${how})`, () => {
        const inner = valid()
        const payload = how === 'a JWS as a JSON string' ? Buffer.from(JSON.stringify(inner)) : Buffer.from(inner)
        const header = merge(role.header(), how.endsWith('cty JWT') ? { cty: 'JWT' } : {})
        return compact(header, payload, { alg: role.signer.alg, key: role.signer.privateKey })
      }),
    ),
    fc
      .record({
        where: fc.constantFrom('header', 'payload'),
        raw: fc.constantFrom('[]', '[{"iss":"x"}]', '1', 'null', '"x"', 'true', '{', '{"alg":', '\u00ff\u00fe', ' '),
      })
      .map(({ where, raw }) =>
        jwt(`${where} is not a JSON object (${JSON.stringify(raw)})`, () => {
          const bytes = Buffer.from(raw, 'latin1')
          return where === 'header'
            ? compact(bytes, role.claims(), { alg: role.signer.alg, key: role.signer.privateKey })
            : compact(role.header(), bytes, { alg: role.signer.alg, key: role.signer.privateKey })
        }),
      ),
    fc.constantFrom(...role.wrongTyps).map((typ) => jwt(`typ ${JSON.stringify(typ) ?? 'absent'}`, () => buildJwt(role, { header: { typ } }).token)),
    fc.integer({ min: 0, max: 1 }).map((i) => jwt(`a valid token of another role (${i === 0 ? 'first' : 'second'})`, () => role.foreign()[i]!)),
  )
}

/**
 * JWT faults about the claims (RFC 7519 §4.1, RFC 8725 §3): missing, of the
 * wrong type, out of range, naming the wrong party, or holding bytes no
 * identifier may hold. The signature is valid: only the claims can refuse them.
 */
export function jwtClaimFaults(ctx: HostileContext, role: JwtRole): fc.Arbitrary<JwtFault> {
  const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) => buildJwt(role, { claims, header }).token
  const now = ctx.now
  const dates = fc.constantFrom('exp', 'iat', 'nbf')
  return fc.oneof(
    fc.constantFrom(...role.required).map((name) => jwt(`no ${name} claim`, () => sign({ [name]: undefined }))),
    fc
      .tuple(dates, fc.constantFrom<unknown>(String(now + 60), null, true, [now + 60], {}, '', 'Infinity', '1e3'))
      .map(([name, value]) => jwt(`${name} is ${JSON.stringify(value)} (not a NumericDate)`, () => sign({ [name]: value }))),
    fc.tuple(dates, fc.constantFrom('1e400', '-1e400')).map(([name, raw]) =>
      jwt(`${name} is ${raw} (not finite)`, () => {
        const claims = merge(role.claims(), { [name]: MARK })
        const text = JSON.stringify(claims).replace(`"${MARK}"`, raw)
        return compact(role.header(), Buffer.from(text), { alg: role.signer.alg, key: role.signer.privateKey })
      }),
    ),
    fc.tuple(dates, fc.constantFrom(-1, -0.5, -1e9, -(2 ** 53))).map(([name, value]) => jwt(`${name} is negative (${value})`, () => sign({ [name]: value }))),
    // A role with no maximum lifetime (the broker's own tokens) has no exp too far ahead.
    ...(Number.isFinite(role.maxLifetime)
      ? [
          fc
            .oneof(
              fc.integer({ min: 1, max: 1e9 }).map((k) => now + role.maxLifetime + 3600 + k),
              fc.constantFrom(1e15, Number.MAX_SAFE_INTEGER, 1e300, Number.MAX_VALUE),
            )
            .map((exp) => jwt(`exp too far ahead (${exp - now} s, the role allows ${role.maxLifetime} s)`, () => sign({ exp }))),
        ]
      : []),
    fc
      .integer({ min: 1, max: 1e9 })
      .map((k) => jwt(`expired (exp ${ctx.skew + k} s ago)`, () => sign({ exp: now - ctx.skew - k, iat: now - ctx.skew - k - 60 }))),
    fc.integer({ min: 31, max: 1e9 }).map((k) => jwt(`iat in the future (${ctx.skew + k} s)`, () => sign({ iat: now + ctx.skew + k }))),
    fc.integer({ min: 31, max: 1e9 }).map((k) => jwt(`nbf in the future (${ctx.skew + k} s)`, () => sign({ nbf: now + ctx.skew + k }))),
    fc
      .tuple(fc.constantFrom(...role.stringClaims), fc.constantFrom<unknown>('array', 'object', 5, true, null, ''))
      // An empty scope is a scope that grants nothing, not a malformed one (RFC 6749 §3.3).
      .filter(([name, shape]) => !(name === 'scope' && shape === ''))
      .map(([name, shape]) =>
        jwt(`${name} is ${shape === 'array' ? 'an array' : shape === 'object' ? 'an object' : JSON.stringify(shape)}`, () => {
          const base = role.claims()[name] ?? 'x'
          const value = shape === 'array' ? [base] : shape === 'object' ? { value: base } : shape
          return sign({ [name]: value })
        }),
      ),
    fc.constantFrom<unknown>([[BROKER]], [], [1], {}, 5, true, null).map((aud) => jwt(`aud is ${JSON.stringify(aud)}`, () => sign({ aud }))),
    fc.constantFrom(...role.wrongIssuers).map((over) => jwt(`wrong issuer ${JSON.stringify(over)}`, () => sign(over))),
    fc.constantFrom(...role.wrongAudiences).map((aud) => jwt(`wrong audience ${JSON.stringify(aud)}`, () => sign({ aud }))),
    fc
      .record({
        where: fc.constantFrom(...role.stringClaims.filter((n) => n !== 'iss'), 'a custom claim', 'a claim name', 'a header parameter'),
        ch: fc.constantFrom(...HOSTILE_CHARS),
        at: fc.nat(),
      })
      .map(({ where, ch, at }) =>
        jwt(`${JSON.stringify(ch)} in ${where}`, () => {
          switch (where) {
            case 'a custom claim':
              return sign({ x_note: insertAt('hello', at, ch) })
            case 'a claim name':
              return sign({ [insertAt('x_note', at, ch)]: 'hello' })
            case 'a header parameter':
              return sign({}, { 'x-note': insertAt('hello', at, ch) })
            default: {
              const claim = role.claims()[where]
              return sign({ [where]: insertAt(typeof claim === 'string' ? claim : 'value', at, ch) })
            }
          }
        }),
      ),
    fc.record({ where: fc.constantFrom('payload', 'header'), bytes: fc.constantFrom(...INVALID_UTF8) }).map(({ where, bytes }) =>
      jwt(`invalid UTF-8 (${Buffer.from(bytes).toString('hex')}) in the ${where}`, () => {
        const key = { alg: role.signer.alg, key: role.signer.privateKey }
        return where === 'payload'
          ? compact(role.header(), withBytes(merge(role.claims(), { x_note: MARK }), bytes), key)
          : compact(withBytes(merge(role.header(), { 'x-note': MARK }), bytes), role.claims(), key)
      }),
    ),
    ...role.own,
  )
}

/**
 * A token of the role the broker must accept, with variations that change
 * nothing: `typ` spellings, unknown header parameters and claims (RFC 7515
 * §4, RFC 7519 §4.3), a fractional NumericDate (RFC 7519 §2).
 */
export function validJwt(ctx: HostileContext, role: JwtRole): fc.Arbitrary<JwtFault> {
  const extraClaims = fc.dictionary(
    fc.string({ maxLength: 8 }).map((s) => `x_${s}`),
    fc.jsonValue({ maxDepth: 2 }),
    { maxKeys: 3 },
  )
  return fc
    .record({
      typ: fc.constantFrom(...role.validTyps),
      claims: extraClaims,
      header: fc.option(fc.constantFrom({ 'x-note': 'hi' }, { cty: 'json' }), { nil: undefined }),
      fractional: fc.boolean(),
    })
    .map(({ typ, claims, header, fractional }) =>
      jwt(
        `valid (typ ${JSON.stringify(typ) ?? 'absent'}${Object.keys(claims).length > 0 ? ', extra claims' : ''}${header === undefined ? '' : ', extra header'}${fractional ? ', fractional exp' : ''})`,
        () => {
          const base = role.claims()
          return buildJwt(role, {
            header: { typ, ...header },
            claims: { ...claims, ...(fractional ? { exp: (base['exp'] as number) + 0.5 } : {}) },
          }).token
        },
      ),
    )
}

// ---------------------------------------------------------------------------
// Forms (RFC 6749 §4 / appendix B encoding) and the faults that change them

export const FORM_TYPES = [
  'application/x-www-form-urlencoded',
  'application/x-www-form-urlencoded; charset=UTF-8',
  'APPLICATION/X-WWW-FORM-URLENCODED',
  'Application/x-www-form-urlencoded;charset=utf-8',
  'application/x-www-form-urlencoded ; charset=utf-8',
] as const

/** A form request under construction. Faults change it; `finishForm` turns it into a case. */
export interface FormDraft {
  readonly path: string
  params: [string, string][]
  headers: Record<string, string>
  labels: string[]
  /** The answers the faults call for; empty: the request must get `valid`. */
  answers: Outcome[]
  valid: readonly Outcome[]
  /** Hostile bytes put into one parameter's encoded name or value. */
  inject?: { readonly index: number; readonly where: 'name' | 'value'; readonly end: boolean; readonly bytes: Uint8Array }
  /** The whole body, replacing the encoded parameters. */
  rawBody?: Uint8Array
  contentTypeFault?: boolean
  /** Pad the body past the limit once every fault is applied. */
  oversize?: number
  declaredOversize?: boolean
}

/** A change to a form request; faults of one case never share a `slot`. */
export interface FormFault {
  readonly slot: string
  apply(d: FormDraft): void
}

export const param = (d: FormDraft, name: string) => d.params.find(([n]) => n === name)?.[1]
export const removeParam = (d: FormDraft, name: string) => {
  d.params = d.params.filter(([n]) => n !== name)
}
export const setParam = (d: FormDraft, name: string, value: string) => {
  removeParam(d, name)
  d.params.push([name, value])
}
export const fault = (slot: string, label: string, answers: readonly Outcome[], change: (d: FormDraft) => void): FormFault => ({
  slot,
  apply(d) {
    d.labels.push(label)
    d.answers.push(...answers)
    change(d)
  },
})

const CREDENTIAL_PARAMS = ['subject_token', 'actor_token', 'client_assertion', 'client_secret', 'token', 'assertion', 'subject_token_dpop']
const CLIENT_PARAMS = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type', 'actor_token', 'actor_token_type']
const KNOWN_PARAMS = new Set([
  'grant_type',
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'requested_token_type',
  'audience',
  'resource',
  'scope',
  'expires_in',
  'token',
  'token_type_hint',
  ...CLIENT_PARAMS,
])

function stripClientAuth(d: FormDraft): void {
  delete d.headers['authorization']
  d.params = d.params.filter(([n]) => !CLIENT_PARAMS.includes(n))
}

/** The credentials a case carries: long enough to be recognisable, and a JWS's signature on its own too. */
function credentials(d: FormDraft): string[] {
  const out = new Set<string>()
  const add = (v: string) => {
    if (v.length >= 16) out.add(v)
    const parts = v.split('.')
    if (parts.length === 3 && parts[2]!.length >= 16) out.add(parts[2]!)
  }
  for (const [n, v] of d.params) if (CREDENTIAL_PARAMS.includes(n)) add(v)
  // A DPoP proof (RFC 9449 §4.1) is no secret, but no answer or log line has any business repeating it.
  if (d.headers['dpop'] !== undefined) add(d.headers['dpop'])
  const auth = d.headers['authorization']
  if (auth !== undefined) {
    const value = auth.replace(/^\S+\s+/, '')
    add(value)
    if (/^basic /i.test(auth)) {
      const decoded = Buffer.from(value, 'base64').toString('latin1')
      const colon = decoded.indexOf(':')
      if (colon >= 0 && decoded.length - colon - 1 >= 12) out.add(decoded.slice(colon + 1))
    }
  }
  return [...out]
}

function encodeForm(d: FormDraft): Uint8Array {
  const segments = d.params.map(([n, v]) => {
    const s = new URLSearchParams([[n, v]]).toString()
    return { text: s, nameEnd: s.indexOf('=') }
  })
  const inject = d.inject
  if (inject === undefined) return Buffer.from(segments.map((s) => s.text).join('&'))
  if (inject.index % (segments.length + 1) === segments.length) segments.push({ text: 'x=', nameEnd: 1 })
  const target = inject.index % segments.length
  const parts: Buffer[] = []
  segments.forEach((s, i) => {
    if (i > 0) parts.push(Buffer.from('&'))
    if (i !== target) return parts.push(Buffer.from(s.text))
    const at = inject.where === 'name' ? (inject.end ? s.nameEnd : 0) : inject.end ? s.text.length : s.nameEnd + 1
    parts.push(Buffer.from(s.text.slice(0, at)), Buffer.from(inject.bytes), Buffer.from(s.text.slice(at)))
  })
  return Buffer.concat(parts)
}

/**
 * The case a draft stands for. A content type other than a form and a body
 * over the limit are answered before the body is parsed, so they decide
 * alone; otherwise the answer of any fault applied is right.
 */
export function finishForm(d: FormDraft, ctx: Pick<HostileContext, 'maxBodyBytes'>): HostileCase {
  let body = d.rawBody ?? encodeForm(d)
  if (d.oversize !== undefined && body.length <= ctx.maxBodyBytes) {
    const pad = `${body.length > 0 ? '&' : ''}x-pad=${'p'.repeat(ctx.maxBodyBytes - body.length + d.oversize)}`
    body = Buffer.concat([body, Buffer.from(pad)])
  }
  const oversize = body.length > ctx.maxBodyBytes || d.declaredOversize === true
  const expected: Outcome[] =
    d.contentTypeFault === true || oversize
      ? [...(d.contentTypeFault === true ? [INVALID_REQUEST] : []), ...(oversize ? [TOO_LARGE] : [])]
      : d.answers.length > 0
        ? d.answers
        : [...d.valid]
  const unique = [...new Map(expected.map((o) => [JSON.stringify(o), o])).values()]
  return hostileCase({
    label: d.labels.length === 0 ? 'valid request' : d.labels.join(' + '),
    request: { method: 'POST', path: d.path, headers: { ...d.headers }, body },
    expected: unique,
    secrets: credentials(d),
  })
}

/** Junk in headers Mandate reads only for logs and tracing, or not at all: none of it changes the answer. */
export const neutralHeaders: fc.Arbitrary<Record<string, string>> = (() => {
  const latin1 = fc.string({
    unit: fc
      .integer({ min: 1, max: 255 })
      .filter((c) => c !== 10 && c !== 13)
      .map((c) => String.fromCharCode(c)),
    maxLength: 80,
  })
  const small = fc.record(
    {
      'x-request-id': fc.oneof(
        fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/),
        latin1,
        fc.constantFrom('', ' ', 'a'.repeat(65), 'id with spaces', '"><script>', '../../etc', 'ünïcode', 'a\tb'),
      ),
      traceparent: fc.oneof(
        fc.constantFrom(
          '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          `00-${'0'.repeat(32)}-b7ad6b7169203331-01`,
          'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          '00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01',
          '00-xyz',
          '',
        ),
        latin1,
      ),
      tracestate: latin1,
      'x-forwarded-for': fc.oneof(latin1, fc.constantFrom('127.0.0.1, 10.0.0.1', '::1', 'unknown')),
      'user-agent': latin1,
      cookie: latin1,
      'x-hostile': latin1,
    },
    { requiredKeys: [] },
  )
  // One huge header at most, within Node's default limit (16 KiB for all of them): beyond it the server answers 431 before the app.
  const huge = fc.tuple(fc.constantFrom('x-request-id', 'traceparent', 'tracestate', 'cookie', 'x-hostile'), fc.integer({ min: 1_000, max: 12_000 }))
  return fc
    .tuple(small, fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: huge }))
    .map(([headers, big]) => (big === undefined ? headers : { ...headers, [big[0]]: 'h'.repeat(big[1]) }))
})()

/** An unknown parameter (RFC 6749 §3.1: ignored), well-formed text only. */
const neutralParam: fc.Arbitrary<[string, string]> = fc.tuple(
  fc.string({ minLength: 1, maxLength: 12 }).filter((n) => !KNOWN_PARAMS.has(n)),
  fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'grapheme', maxLength: 20 }).filter((s) => !s.includes('\u0000') && s.isWellFormed()),
    fc.webUrl(),
    fc.integer({ min: 100, max: 20_000 }).map((n) => 'v'.repeat(n)),
  ),
)

const SCOPES: Record<Agent, readonly (string | undefined)[]> = {
  'secret-agent': [undefined, 'read', 'write', 'read write', 'write read'],
  'jwt-agent': [undefined, 'read', 'write', 'read write'],
  'workload-agent': [undefined, 'read'],
}

function clientAuth(
  ctx: HostileContext,
  agent: Agent,
  d: FormDraft,
  v: { scheme?: string; clientId?: boolean; actorType?: string; credential?: string },
): void {
  switch (agent) {
    case 'secret-agent':
      d.headers['authorization'] = basic('secret-agent', SECRET)['authorization']!.replace(/^Basic/, v.scheme ?? 'Basic')
      return
    case 'jwt-agent':
      d.params.push(['client_assertion_type', CLIENT_ASSERTION_TYPE_JWT], ['client_assertion', v.credential ?? buildJwt(assertionRole(ctx)).token])
      if (v.clientId === true) d.params.push(['client_id', 'jwt-agent'])
      return
    case 'workload-agent':
      d.params.push(['actor_token', v.credential ?? buildJwt(workloadRole(ctx)).token], ['actor_token_type', v.actorType ?? TOKEN_TYPE.jwt])
      if (v.clientId === true) d.params.push(['client_id', 'workload-agent'])
  }
}

/** A plain valid exchange for `agent` (used to mint the tokens of the context). */
function tokenBaseDraft(ctx: HostileContext, agent: Agent): FormDraft {
  const d: FormDraft = {
    path: '/oauth2/token',
    params: [
      ['grant_type', GRANT_TYPE_TOKEN_EXCHANGE],
      ['subject_token', ctx.userTokens[0]!],
      ['subject_token_type', TOKEN_TYPE.accessToken],
      ['audience', AUDIENCE],
    ],
    headers: { 'content-type': FORM_TYPES[0] },
    labels: [],
    answers: [],
    valid: [{ kind: 'token' }],
  }
  clientAuth(ctx, agent, d, {})
  return d
}

export type DraftMaker = () => FormDraft

/** A valid token-exchange request (RFC 8693 §2.1) for `agent`, with variations that change nothing. */
export function tokenBase(ctx: HostileContext, agent: Agent): fc.Arbitrary<DraftMaker> {
  const subject = subjectRole(ctx, agent)
  const client =
    agent === 'jwt-agent' ? validJwt(ctx, assertionRole(ctx)) : agent === 'workload-agent' ? validJwt(ctx, workloadRole(ctx)) : fc.constant(undefined)
  return fc
    .record({
      scope: fc.constantFrom(...SCOPES[agent]),
      expiresIn: fc.option(fc.integer({ min: 1, max: 999_999 }).map(String), { nil: undefined }),
      target: fc.constantFrom('audience', 'resource', 'both', 'audience twice'),
      subjectType: fc.constantFrom(TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt),
      requested: fc.constantFrom(undefined, TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt),
      subject: fc.oneof(
        { weight: 5, arbitrary: fc.constantFrom(...ctx.userTokens).map((t) => jwt('pooled', () => t)) },
        { weight: 1, arbitrary: validJwt(ctx, subject) },
      ),
      client,
      scheme: fc.constantFrom('Basic', 'basic', 'BASIC'),
      clientId: fc.boolean(),
      actorType: fc.constantFrom(TOKEN_TYPE.jwt, TOKEN_TYPE.accessToken),
      extras: fc.array(neutralParam, { maxLength: 2 }),
      reversed: fc.boolean(),
      contentType: fc.constantFrom(...FORM_TYPES),
      headers: neutralHeaders,
    })
    .map((v) => () => {
      const d: FormDraft = {
        path: '/oauth2/token',
        params: [
          ['grant_type', GRANT_TYPE_TOKEN_EXCHANGE],
          ['subject_token', v.subject.token()],
          ['subject_token_type', v.subjectType],
        ],
        headers: { ...v.headers, 'content-type': v.contentType },
        labels: [],
        answers: [],
        valid: [{ kind: 'token' }],
      }
      if (v.target !== 'resource') d.params.push(['audience', AUDIENCE])
      if (v.target !== 'audience') d.params.push([v.target === 'audience twice' ? 'audience' : 'resource', AUDIENCE])
      if (v.scope !== undefined) d.params.push(['scope', v.scope])
      if (v.expiresIn !== undefined) d.params.push(['expires_in', v.expiresIn])
      if (v.requested !== undefined) d.params.push(['requested_token_type', v.requested])
      clientAuth(ctx, agent, d, {
        scheme: v.scheme,
        clientId: v.clientId,
        actorType: v.actorType,
        ...(v.client === undefined ? {} : { credential: v.client.token() }),
      })
      d.params.push(...v.extras)
      if (v.reversed) d.params.reverse()
      return d
    })
}

/** Single-valued parameters a base request for `agent` always carries (RFC 6749 §3.2: they must not repeat). */
function singleParams(agent: Agent): string[] {
  const client = agent === 'jwt-agent' ? ['client_assertion', 'client_assertion_type'] : agent === 'workload-agent' ? ['actor_token', 'actor_token_type'] : []
  return ['grant_type', 'subject_token', 'subject_token_type', ...client]
}

/** Faults in the token request's parameters (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 8707 §2). */
export function tokenParamFaults(agent: Agent): fc.Arbitrary<FormFault> {
  const junk = fc.string({ minLength: 1, maxLength: 40 })
  return fc.oneof(
    fc
      .record({ name: fc.constantFrom('grant_type', 'subject_token', 'subject_token_type'), empty: fc.boolean() })
      .map(({ name, empty }) =>
        fault(name, `${name} ${empty ? 'empty' : 'missing'}`, [INVALID_REQUEST], (d) => (empty ? setParam(d, name, '') : removeParam(d, name))),
      ),
    fc.constant(null).map(() =>
      fault('audience', 'neither audience nor resource', [INVALID_REQUEST], (d) => {
        removeParam(d, 'audience')
        removeParam(d, 'resource')
      }),
    ),
    fc
      .record({
        name: fc.constantFrom(...singleParams(agent), 'scope', 'expires_in', 'requested_token_type'),
        second: fc.oneof(fc.constant(undefined), fc.constant(''), junk),
      })
      .map(({ name, second }) =>
        fault(CLIENT_PARAMS.includes(name) ? 'client' : name, `${name} repeated`, [INVALID_REQUEST], (d) => {
          const first = param(d, name) ?? { scope: 'read', expires_in: '60', requested_token_type: TOKEN_TYPE.accessToken }[name] ?? 'x'
          setParam(d, name, first)
          d.params.push([name, second ?? first])
        }),
      ),
    fc
      .oneof(
        fc.constantFrom(
          'client_credentials',
          'authorization_code',
          'password',
          'refresh_token',
          `${GRANT_TYPE_TOKEN_EXCHANGE} `,
          GRANT_TYPE_TOKEN_EXCHANGE.toUpperCase(),
          'urn:ietf:params:oauth:grant-type:jwt-bearer',
          `${GRANT_TYPE_TOKEN_EXCHANGE}2`,
        ),
        junk.filter((g) => g !== GRANT_TYPE_TOKEN_EXCHANGE),
      )
      .map((g) => fault('grant_type', `grant_type ${JSON.stringify(g)}`, [UNSUPPORTED_GRANT], (d) => setParam(d, 'grant_type', g))),
    fc
      .oneof(
        fc.constantFrom(
          TOKEN_TYPE.idToken,
          'urn:ietf:params:oauth:token-type:saml2',
          'urn:ietf:params:oauth:token-type:refresh_token',
          `${TOKEN_TYPE.accessToken}x`,
        ),
        junk,
      )
      .map((t) => fault('subject_token_type', `subject_token_type ${JSON.stringify(t)}`, [INVALID_REQUEST], (d) => setParam(d, 'subject_token_type', t))),
    fc
      .oneof(fc.constantFrom(TOKEN_TYPE.idToken, 'urn:ietf:params:oauth:token-type:refresh_token', 'urn:ietf:params:oauth:token-type:saml2'), junk)
      .filter((t) => t !== TOKEN_TYPE.accessToken && t !== TOKEN_TYPE.jwt)
      .map((t) => fault('requested_token_type', `requested_token_type ${JSON.stringify(t)}`, [INVALID_REQUEST], (d) => setParam(d, 'requested_token_type', t))),
    fc
      .oneof(
        fc.constantFrom('0', '-1', '1e3', '1.5', ' 60', '60 ', '0x10', '1000000', 'abc', '٣', '+60', '060', '１'),
        junk.filter((s) => !/^[1-9][0-9]{0,5}$/.test(s)),
      )
      .map((e) => fault('expires_in', `expires_in ${JSON.stringify(e)}`, [INVALID_REQUEST], (d) => setParam(d, 'expires_in', e))),
    fc
      .constantFrom('read  write', ' read', 'read ', '"', 'a\\b', 'é', 'read\twrite', 'read\nwrite')
      .map((s) => fault('scope', `malformed scope ${JSON.stringify(s)} (RFC 6749 §3.3)`, [INVALID_SCOPE], (d) => setParam(d, 'scope', s))),
    fc
      .constantFrom('admin', 'delete', 'read admin', 'openid', 'READ', ...(agent === 'workload-agent' ? ['write'] : []))
      .map((s) => fault('scope', `scope beyond the grant (${s})`, [INVALID_SCOPE], (d) => setParam(d, 'scope', s))),
    fc
      .oneof(
        fc.constantFrom('https://evil.test', `${AUDIENCE}/`, AUDIENCE.toUpperCase(), 'api', BROKER, USER_ISSUER),
        fc.webUrl().filter((u) => u !== AUDIENCE && u !== OTHER_AUDIENCE),
        junk.filter((u) => u !== AUDIENCE && u !== OTHER_AUDIENCE),
      )
      .map((a) => fault('audience', `audience not granted (${a})`, [INVALID_TARGET], (d) => setParam(d, 'audience', a))),
    fc
      .constantFrom('https://evil.test', 'https://other.test')
      .map((a) => fault('audience', `two audiences (${AUDIENCE}, ${a})`, [INVALID_TARGET], (d) => d.params.push(['audience', AUDIENCE], ['audience', a]))),
    fc
      .constantFrom('relative/path', '/api', `${AUDIENCE}#frag`, `${AUDIENCE}#`, 'not a uri', 'api.test')
      .map((r) => fault('audience', `resource ${JSON.stringify(r)} (RFC 8707 §2)`, [INVALID_TARGET], (d) => setParam(d, 'resource', r))),
    fc
      .record({
        name: fc.constantFrom('grant_type', 'subject_token', 'subject_token_type', 'audience', 'scope', 'expires_in', 'requested_token_type'),
        n: fc.integer({ min: 1_000, max: 70_000 }),
      })
      .map(({ name, n }) => {
        const [value, answer] = {
          grant_type: ['g'.repeat(n), UNSUPPORTED_GRANT],
          subject_token: ['t'.repeat(n), INVALID_REQUEST],
          subject_token_type: [`urn:${'t'.repeat(n)}`, INVALID_REQUEST],
          audience: [`${AUDIENCE}/${'a'.repeat(n)}`, INVALID_TARGET],
          scope: ['s'.repeat(n), INVALID_SCOPE],
          expires_in: ['9'.repeat(n), INVALID_REQUEST],
          requested_token_type: [`urn:${'r'.repeat(n)}`, INVALID_REQUEST],
        }[name] as [string, Outcome]
        return fault(name, `huge ${name} (${n} bytes)`, [answer], (d) => setParam(d, name, value))
      }),
  )
}

/** RFC 3986 §2.1 misuse, NUL, lone surrogates and invalid UTF-8 (raw or percent-encoded) in any form field: 400. */
export function formByteFaults(): fc.Arbitrary<FormFault> {
  const percent = fc.constantFrom('%00', '%FF', '%C0%80', '%ED%A0%80', '%ED%BF%BF', '%F4%90%80%80', '%E2%82', '%80', '%F8%88%80%80%80')
  const raw = fc.constantFrom(...INVALID_UTF8, [0x00])
  const where = { index: fc.nat(), where: fc.constantFrom<'name' | 'value'>('name', 'value'), end: fc.boolean() }
  return fc.oneof(
    fc.record({ ...where, text: percent }).map(({ text, ...at }) =>
      fault('bytes', `${text} in a ${at.where}`, [INVALID_REQUEST], (d) => {
        d.inject = { ...at, bytes: Buffer.from(text) }
      }),
    ),
    fc.record({ ...where, bytes: raw }).map(({ bytes, ...at }) =>
      fault('bytes', `raw bytes ${Buffer.from(bytes).toString('hex')} in a ${at.where}`, [INVALID_REQUEST], (d) => {
        d.inject = { ...at, bytes: Buffer.from(bytes) }
      }),
    ),
    fc.record({ ...where, text: fc.constantFrom('%g', '%G1', '%1g', '%%', '%zz', '%-1', '%\u00e9') }).map(({ text, ...at }) =>
      fault('bytes', `malformed percent-encoding ${JSON.stringify(text)} in a ${at.where}`, [INVALID_REQUEST], (d) => {
        d.inject = { ...at, bytes: Buffer.from(text) }
      }),
    ),
  )
}

/** Faults in the body as a whole and in its framing headers. `junk` answers: what a body of no parameter can get here. */
export function formBodyFaults(ctx: Pick<HostileContext, 'maxBodyBytes'>, junkAnswers: readonly Outcome[]): fc.Arbitrary<FormFault> {
  return fc.oneof(
    fc
      .constantFrom(
        undefined,
        'application/json',
        'text/plain',
        'text/plain;charset=UTF-8',
        'multipart/form-data; boundary=x',
        'application/x-www-form-urlencodedx',
        'application/x-www-form-urlencoded-v2',
        'x-www-form-urlencoded',
        'application/xml',
        '',
        'application/x-www-form-urlencoded, application/json',
      )
      .map((type) =>
        fault('content-type', `content type ${JSON.stringify(type) ?? 'absent'}`, [], (d) => {
          d.contentTypeFault = true
          if (type === undefined) delete d.headers['content-type']
          else d.headers['content-type'] = type
        }),
      ),
    fc.integer({ min: 1, max: 64 * 1024 }).map((over) =>
      fault('size', `body ${over} bytes over the limit`, [], (d) => {
        d.oversize = over
      }),
    ),
    fc.constantFrom('65537', '1048577', '99999999999').map((length) =>
      fault('size', `declared Content-Length ${length}`, [], (d) => {
        d.headers['content-length'] = length
        d.declaredOversize = Number(length) > ctx.maxBodyBytes
      }),
    ),
    fc.constant(null).map(() =>
      fault('body', 'empty body', junkAnswers, (d) => {
        d.rawBody = new Uint8Array(0)
      }),
    ),
    fc
      .oneof(
        fc.uint8Array({ minLength: 1, maxLength: 400 }),
        fc
          .string({ unit: fc.constantFrom('%', '&', '=', '+', 'a', 'grant_type', 'subject_token', 'token', '0', 'F', ';', ' ', '\u00e9'), maxLength: 80 })
          .map((s) => Buffer.from(s)),
        fc.jsonValue({ maxDepth: 3 }).map((j) => Buffer.from(JSON.stringify(j) ?? 'null')),
        fc.constant(Buffer.from('--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\nclient_credentials\r\n--x--')),
      )
      // A junk body that happens to spell `token=<something>` is a request with a (bad) token, not one of no parameter.
      .filter((bytes) => (new URLSearchParams(bytes.toString('latin1')).get('token') ?? '') === '')
      .map((bytes) =>
        fault('body', `a body of no parameter (${bytes.length} bytes)`, junkAnswers, (d) => {
          d.rawBody = bytes
        }),
      ),
  )
}

/** The token endpoint's answers to a body without a grant_type (RFC 6749 §5.2). */
export const TOKEN_JUNK_ANSWERS: readonly Outcome[] = [INVALID_REQUEST, UNSUPPORTED_GRANT]

const b64 = (s: string | Uint8Array) => Buffer.from(s).toString('base64')
const BASIC_AGENTS = new Set(['secret-agent', 'sub-agent', 'expired-agent'])

/**
 * Faults in client authentication (RFC 6749 §2.3, §5.2; RFC 7523 §3;
 * RFC 8693 §2.1 actor_token as a workload identity), for the token,
 * introspection and revocation endpoints alike: each replaces the client
 * authentication of the base request. Faulty assertions and workload tokens
 * are `clientJwtFaults`.
 */
export function clientFaults(ctx: HostileContext, endpoint: 'token' | 'introspect' | 'revoke'): fc.Arbitrary<FormFault> {
  const replace = (label: string, answers: readonly Outcome[], set: (d: FormDraft) => void) =>
    fault('client', label, answers, (d) => {
      stripClientAuth(d)
      set(d)
    })
  const assertion = () => buildJwt(assertionRole(ctx)).token
  const workload = () => buildJwt(workloadRole(ctx)).token
  const basicOf = (id: string, secret: string) => basic(id, secret)['authorization']!
  const list: fc.Arbitrary<FormFault>[] = [
    fc.constant(null).map(() => replace('no client authentication', [INVALID_CLIENT], () => {})),
    fc
      .oneof(fc.string({ maxLength: 40 }), fc.constant(`${SECRET}x`), fc.constant(SECRET.toUpperCase()), fc.constant(SECRET.slice(0, -1)))
      .filter((s) => s !== SECRET && s !== '')
      .map((secret) => replace('Basic: wrong secret', [INVALID_CLIENT], (d) => void (d.headers['authorization'] = basicOf('secret-agent', secret)))),
    fc
      .oneof(fc.string({ minLength: 1, maxLength: 30 }), fc.constantFrom('SECRET-AGENT', 'secret-agent ', ' secret-agent', 'jwt-agent', 'workload-agent'))
      .filter((id) => !BASIC_AGENTS.has(id))
      .map((id) => replace(`Basic: client ${JSON.stringify(id)}`, [INVALID_CLIENT], (d) => void (d.headers['authorization'] = basicOf(id, SECRET)))),
    fc
      .constantFrom(
        'Basic',
        'Basic ',
        'Basic !!!!',
        `Basic ${b64('secret-agent')}`,
        `Basic ${b64(`:${SECRET}`)}`,
        `Basic ${b64('secret-agent:')}`,
        `Basic ${b64(`secret-agent:${SECRET}`)}===`,
        `Basic ${b64(`secret-agent:${SECRET}`)}, Basic ${b64('other:x')}`,
        `Basic\t${b64(`secret-agent:${SECRET}`)}`,
        // At the introspection endpoint an admin key is an auditor's credential, not a malformed one.
        endpoint === 'introspect' ? `Bearer ${ADMIN_KEYS.admin}x` : `Bearer ${ADMIN_KEYS.admin}`,
        'Digest username="secret-agent", realm="mandate"',
        'Negotiate YIIB',
        'basic',
        '=',
      )
      .map((value) =>
        replace(`malformed Authorization ${JSON.stringify(value.slice(0, 40))}`, [INVALID_CLIENT], (d) => void (d.headers['authorization'] = value)),
      ),
    fc
      .integer({ min: 1_000, max: 12_000 })
      .map((n) =>
        replace(`huge Basic credentials (${n} bytes)`, [INVALID_CLIENT], (d) => void (d.headers['authorization'] = basicOf('secret-agent', 's'.repeat(n)))),
      ),
    fc
      .constant(null)
      .map(() =>
        replace('Bearer <a user token> as client authentication', [INVALID_CLIENT], (d) => void (d.headers['authorization'] = `Bearer ${ctx.userTokens[1]!}`)),
      ),
    // Hostile bytes in decoded Basic credentials: 400, as anywhere else a caller controls.
    fc
      .record({
        part: fc.constantFrom('id', 'secret'),
        bytes: fc.constantFrom<readonly number[]>(
          [0x00],
          ...INVALID_UTF8,
          [...Buffer.from('%00')],
          [...Buffer.from('%ED%A0%80')],
          [...Buffer.from('%FF')],
          [...Buffer.from('%zz')],
        ),
      })
      .map(({ part, bytes }) =>
        replace(`Basic: bytes ${Buffer.from(bytes).toString('hex')} in the client ${part}`, [INVALID_REQUEST], (d) => {
          const id = part === 'id' ? Buffer.concat([Buffer.from('secret-agent'), Buffer.from(bytes)]) : Buffer.from('secret-agent')
          const secret = part === 'secret' ? Buffer.concat([Buffer.from(SECRET), Buffer.from(bytes)]) : Buffer.from(SECRET)
          d.headers['authorization'] = `Basic ${b64(Buffer.concat([id, Buffer.from(':'), secret]))}`
        }),
      ),
    fc.constantFrom('Basic and client_assertion', 'Basic and actor_token', 'client_assertion and actor_token').map((pair) =>
      replace(`two client authentication methods (${pair})`, [INVALID_REQUEST], (d) => {
        if (pair.startsWith('Basic')) d.headers['authorization'] = basicOf('secret-agent', SECRET)
        if (pair.includes('client_assertion')) d.params.push(['client_assertion_type', CLIENT_ASSERTION_TYPE_JWT], ['client_assertion', assertion()])
        if (pair.includes('actor_token')) d.params.push(['actor_token', workload()], ['actor_token_type', TOKEN_TYPE.jwt])
      }),
    ),
    fc.constant(null).map(() =>
      replace('client credentials in two places (Basic and client_secret)', [INVALID_REQUEST], (d) => {
        d.headers['authorization'] = basicOf('secret-agent', SECRET)
        d.params.push(['client_secret', SECRET])
      }),
    ),
    fc
      .constant(null)
      .map(() =>
        replace('client_secret_post (not supported)', [INVALID_CLIENT], (d) => void d.params.push(['client_id', 'secret-agent'], ['client_secret', SECRET])),
      ),
    fc.constantFrom('jwt-agent', 'nobody').map((id) =>
      replace(`Basic and a body client_id naming ${id}`, [INVALID_CLIENT, INVALID_REQUEST], (d) => {
        d.headers['authorization'] = basicOf('secret-agent', SECRET)
        d.params.push(['client_id', id])
      }),
    ),
    fc
      .constantFrom(
        undefined,
        'urn:ietf:params:oauth:client-assertion-type:saml2-bearer',
        'x',
        `${CLIENT_ASSERTION_TYPE_JWT} `,
        CLIENT_ASSERTION_TYPE_JWT.toUpperCase(),
      )
      .map((type) =>
        replace(`client_assertion_type ${JSON.stringify(type) ?? 'absent'}`, [INVALID_CLIENT], (d) => {
          if (type !== undefined) d.params.push(['client_assertion_type', type])
          d.params.push(['client_assertion', assertion()])
        }),
      ),
    fc
      .constant(null)
      .map(() =>
        replace(
          'client_assertion_type without client_assertion',
          [INVALID_CLIENT],
          (d) => void d.params.push(['client_assertion_type', CLIENT_ASSERTION_TYPE_JWT]),
        ),
      ),
    fc
      .constantFrom('secret-agent', 'JWT-AGENT', 'nobody')
      .map((id) =>
        replace(
          `client_id ${id} with jwt-agent's assertion`,
          [INVALID_CLIENT],
          (d) => void d.params.push(['client_id', id], ['client_assertion_type', CLIENT_ASSERTION_TYPE_JWT], ['client_assertion', assertion()]),
        ),
      ),
    fc
      .constantFrom('secret-agent', 'nobody')
      .map((id) =>
        replace(
          `client_id ${id} with workload-agent's actor_token`,
          [INVALID_CLIENT],
          (d) => void d.params.push(['client_id', id], ['actor_token', workload()], ['actor_token_type', TOKEN_TYPE.jwt]),
        ),
      ),
    // Malformed or unsupported actor_token framing: a malformed request, or a failed authentication.
    fc.constantFrom('actor_token without actor_token_type', 'actor_token_type without actor_token').map((what) =>
      replace(what, [INVALID_REQUEST, INVALID_CLIENT], (d) => {
        if (what.startsWith('actor_token ')) d.params.push(['actor_token', workload()])
        else d.params.push(['actor_token_type', TOKEN_TYPE.jwt])
      }),
    ),
    fc
      .constantFrom(TOKEN_TYPE.idToken, 'urn:ietf:params:oauth:token-type:saml2', 'x')
      .map((type) =>
        replace(
          `actor_token_type ${type}`,
          [INVALID_REQUEST, INVALID_CLIENT],
          (d) => void d.params.push(['actor_token', workload()], ['actor_token_type', type]),
        ),
      ),
    fc
      .nat()
      .map((i) =>
        replace(
          'a replayed client assertion (RFC 7523 §3)',
          [INVALID_CLIENT],
          (d) =>
            void d.params.push(['client_assertion_type', CLIENT_ASSERTION_TYPE_JWT], ['client_assertion', ctx.usedAssertions[i % ctx.usedAssertions.length]!]),
        ),
      ),
  ]
  if (endpoint === 'token') {
    list.push(
      fc
        .constant(null)
        .map(() =>
          replace('an agent whose policy expired', [UNAUTHORIZED_CLIENT], (d) => void (d.headers['authorization'] = basicOf('expired-agent', SECRET))),
        ),
      fc
        .constant(null)
        .map(() => replace('an agent no user may delegate to', [INVALID_REQUEST], (d) => void (d.headers['authorization'] = basicOf('sub-agent', SECRET)))),
    )
  }
  return fc.oneof(...list)
}

/** A faulty client assertion or workload token as the request's only client authentication. */
function clientJwtFault(f: JwtFault, role: JwtRole): FormFault {
  return fault('client', `${role.field}: ${f.label}`, role.refused, (d) => {
    stripClientAuth(d)
    if (role.field === 'client_assertion') d.params.push(['client_assertion_type', CLIENT_ASSERTION_TYPE_JWT], ['client_assertion', f.token()])
    else d.params.push(['actor_token', f.token()], ['actor_token_type', TOKEN_TYPE.jwt])
  })
}

/** The client-authentication faults of one JWT role only (form or claims), for a property of their own. */
export function clientJwtFaults(ctx: HostileContext, which: 'assertion' | 'workload', kind: 'form' | 'claims'): fc.Arbitrary<FormFault> {
  const role = which === 'assertion' ? assertionRole(ctx) : workloadRole(ctx)
  const faults = kind === 'form' ? jwtFormFaults(ctx, role) : jwtClaimFaults(ctx, role)
  return faults.map((f) => clientJwtFault(f, role))
}

/** A faulty `subject_token` (RFC 8693 §2.2.2: invalid_request). */
export function subjectFaults(ctx: HostileContext, agent: Agent, kind: 'form' | 'claims'): fc.Arbitrary<FormFault> {
  const role = subjectRole(ctx, agent)
  const own: fc.Arbitrary<JwtFault>[] =
    kind === 'form'
      ? [
          // A token this broker minted, altered: the own-token path refuses it as firmly.
          fc
            .record({ i: fc.nat(), how: fc.constantFrom('altered signature', 'alg none', 'kid changed', 'typ changed') })
            .map(({ i, how }) =>
              jwt(`a Mandate token with ${how}`, () => alterMinted(ctx.minted['secret-agent'][i % ctx.minted['secret-agent'].length]!, how)),
            ),
        ]
      : []
  const faults = kind === 'form' ? fc.oneof(jwtFormFaults(ctx, role), ...own) : jwtClaimFaults(ctx, role)
  return faults.map((f) => fault('subject_token', `subject_token: ${f.label}`, role.refused, (d) => setParam(d, 'subject_token', f.token())))
}

/** A token this broker minted, changed so that its signature no longer holds. */
export function alterMinted(token: string, how: string): string {
  const [h, p, s] = token.split('.') as [string, string, string]
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>
  const i = Math.floor(s.length / 2)
  switch (how) {
    case 'altered signature':
      return `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`
    case 'alg none':
      return `${partText({ ...header, alg: 'none' })}.${p}.`
    case 'kid changed':
      return `${partText({ ...header, kid: `${String(header['kid'])}x` })}.${p}.${s}`
    case 'payload swapped':
      return `${h}.${partText({ ...(JSON.parse(Buffer.from(p, 'base64url').toString()) as object), scope: 'read write admin' })}.${s}`
    default:
      return `${partText({ ...header, typ: 'JWT' })}.${p}.${s}`
  }
}

/**
 * A token request for one of the agents with `faults` applied; no fault:
 * a valid request. The expected answer follows `finishForm`.
 */
export function tokenCase(ctx: HostileContext, faults: (agent: Agent) => fc.Arbitrary<readonly FormFault[]>): fc.Arbitrary<HostileCase> {
  // Built once per agent: chain() calls its function for every case.
  const perAgent = new Map(AGENTS.map((agent) => [agent, fc.tuple(tokenBase(ctx, agent), faults(agent))]))
  return fc
    .constantFrom(...AGENTS)
    .chain((agent) => perAgent.get(agent)!)
    .map(([make, fs]) => {
      const d = make()
      for (const f of fs) f.apply(d)
      return finishForm(d, ctx)
    })
}

/** One fault of one family. */
export const one = (family: fc.Arbitrary<FormFault>) => family.map((f) => [f] as const)

/** Two or three faults from the families, in distinct slots. */
export const several = (...families: fc.Arbitrary<FormFault>[]) =>
  fc.uniqueArray(fc.oneof(...families), { minLength: 2, maxLength: 3, selector: (f) => f.slot })

// ---------------------------------------------------------------------------
// /oauth2/introspect (RFC 7662) and /oauth2/revoke (RFC 7009)

/** Tokens that are not live Mandate tokens: introspection answers `{"active": false}`, revocation 200. */
export function deadToken(ctx: HostileContext): fc.Arbitrary<JwtFault> {
  return fc.oneof(
    fc
      .record({
        owner: fc.constantFrom(...OWNERS),
        i: fc.nat(),
        how: fc.constantFrom('altered signature', 'alg none', 'kid changed', 'typ changed', 'payload swapped'),
      })
      .map(({ owner, i, how }) => jwt(`a Mandate token with ${how}`, () => alterMinted(ctx.minted[owner][i % ctx.minted[owner].length]!, how))),
    fc.nat().map((i) => jwt('a user token (not Mandate’s)', () => ctx.userTokens[i % ctx.userTokens.length]!)),
    fc.constant(null).map(() => jwt('a workload token', () => buildJwt(workloadRole(ctx)).token)),
    fc.constant(null).map(() => jwt('a client assertion', () => buildJwt(assertionRole(ctx)).token)),
    fc.string({ minLength: 1, maxLength: 200 }).map((s) => jwt('a random string', () => s)),
    fc.base64String({ minLength: 4, maxLength: 400 }).map((s) => jwt('random base64', () => s)),
    fc.integer({ min: 1_000, max: 70_000 }).map((n) => jwt(`a huge token (${n} bytes)`, () => `eyJ${'A'.repeat(n)}`)),
  )
}

type Caller = Agent | 'auditor' | 'admin'

/**
 * A valid introspection or revocation request with variations that change
 * nothing. Introspection (as this broker defines it): an agent sees
 * `active: true` only for tokens issued to it, an auditor (admin key with
 * read permission) for any token, and everything else is inactive; a
 * revocation by an agent of a token issued to another is refused, of a dead
 * token a 200 (RFC 7009 §2.2). Revocations that would take effect are not
 * generated: they would change the broker under the other cases.
 */
export function tokenRouteBase(ctx: HostileContext, endpoint: 'introspect' | 'revoke'): fc.Arbitrary<DraftMaker> {
  const callers: Caller[] = endpoint === 'introspect' ? [...AGENTS, 'auditor', 'admin'] : [...AGENTS]
  return fc
    .record({
      caller: fc.constantFrom(...callers),
      // Revocation: only sub-agent's tokens, which no request here can authenticate for (see OWNERS).
      owner: endpoint === 'revoke' ? fc.constant<Owner>('sub-agent') : fc.constantFrom(...OWNERS),
      i: fc.nat(),
      dead: fc.option(deadToken(ctx), { nil: undefined, freq: 2 }),
      hint: fc.constantFrom(undefined, 'access_token', 'refresh_token', 'junk'),
      scheme: fc.constantFrom('Basic', 'basic'),
      clientId: fc.boolean(),
      extras: fc.array(neutralParam, { maxLength: 2 }),
      reversed: fc.boolean(),
      contentType: fc.constantFrom(...FORM_TYPES),
      headers: neutralHeaders,
    })
    .map((v) => () => {
      const { owner } = v
      const token = v.dead?.token() ?? ctx.minted[owner][v.i % ctx.minted[owner].length]!
      const d: FormDraft = {
        path: `/oauth2/${endpoint}`,
        params: [['token', token]],
        headers: { ...v.headers, 'content-type': v.contentType },
        labels: v.dead === undefined ? [] : [`token: ${v.dead.label}`],
        answers: [],
        valid:
          endpoint === 'revoke'
            ? [v.dead === undefined ? UNAUTHORIZED_CLIENT : { kind: 'ok', status: 200 }]
            : v.dead !== undefined || (v.caller !== 'auditor' && v.caller !== 'admin' && v.caller !== owner)
              ? [INACTIVE]
              : [{ kind: 'active', clientId: owner }],
      }
      if (v.hint !== undefined) d.params.push(['token_type_hint', v.hint])
      if (v.caller === 'auditor' || v.caller === 'admin') d.headers['authorization'] = `Bearer ${ADMIN_KEYS[v.caller]}`
      else clientAuth(ctx, v.caller, d, { scheme: v.scheme, clientId: v.clientId })
      d.params.push(...v.extras)
      if (v.reversed) d.params.reverse()
      return d
    })
}

/** Faults in the `token` parameter itself (RFC 7662 §2.1, RFC 7009 §2.1: required, once). */
export function tokenParamFaultsOf(): fc.Arbitrary<FormFault> {
  return fc.oneof(
    fc
      .boolean()
      .map((empty) =>
        fault('token', `token ${empty ? 'empty' : 'missing'}`, [INVALID_REQUEST], (d) => (empty ? setParam(d, 'token', '') : removeParam(d, 'token'))),
      ),
    fc.constantFrom('same', 'empty', 'other').map((second) =>
      fault('token', `token repeated (${second})`, [INVALID_REQUEST], (d) => {
        const first = param(d, 'token') ?? 'x'
        d.params.push(['token', second === 'same' ? first : second === 'empty' ? '' : 'other-token'])
      }),
    ),
  )
}

/** Admin keys presented where they do not authenticate (RFC 6750 §2.1 form, wrong key or role). */
export function bearerFaults(endpoint: 'introspect' | 'revoke'): fc.Arbitrary<FormFault> {
  const refused = (label: string, answers: readonly Outcome[], value: string) =>
    fault('client', label, answers, (d) => {
      stripClientAuth(d)
      d.headers['authorization'] = value
    })
  // A responder key authenticates an admin, not an auditor: no claims either way. Revocation takes agents only.
  const keys = endpoint === 'introspect' ? [ADMIN_KEYS.responder] : [ADMIN_KEYS.responder, ADMIN_KEYS.auditor, ADMIN_KEYS.admin]
  return fc.oneof(
    fc
      .constantFrom(...keys)
      .map((key) =>
        refused('Bearer: an admin key that may not do this', endpoint === 'introspect' ? [INVALID_CLIENT, INACTIVE] : [INVALID_CLIENT], `Bearer ${key}`),
      ),
    fc
      .constantFrom(
        'Bearer',
        'Bearer ',
        `Bearer ${ADMIN_KEYS.auditor}x`,
        `Bearer ${ADMIN_KEYS.auditor.slice(0, -1)}`,
        `Bearer ${'k'.repeat(600)}`,
        `Bearer ${ADMIN_KEYS.auditor}, Bearer x`,
        'Bearer a b',
      )
      .map((value) => refused(`Bearer: ${JSON.stringify(value.slice(0, 30))}`, [INVALID_CLIENT], value)),
  )
}

/** An introspection or revocation request with `faults` applied. */
export function tokenRouteCase(ctx: HostileContext, endpoint: 'introspect' | 'revoke', faults: fc.Arbitrary<readonly FormFault[]>): fc.Arbitrary<HostileCase> {
  return fc.tuple(tokenRouteBase(ctx, endpoint), faults).map(([make, fs]) => {
    const d = make()
    for (const f of fs) f.apply(d)
    return finishForm(d, ctx)
  })
}

/** What an introspection or revocation body without a token can get: no token, or no client authentication. */
export const TOKEN_ROUTE_JUNK_ANSWERS: readonly Outcome[] = [INVALID_REQUEST, INVALID_CLIENT]

// ---------------------------------------------------------------------------
// The admin API

type KeyChoice = 'responder' | 'auditor' | 'admin' | 'none' | 'unknown' | 'malformed'

const adminKey = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<KeyChoice>('responder', 'auditor', 'admin') },
  { weight: 2, arbitrary: fc.constantFrom<KeyChoice>('none', 'unknown', 'malformed') },
)
const malformedBearer = fc.constantFrom(
  'Bearer',
  'Bearer x',
  `Basic ${b64(ADMIN_KEYS.admin)}`,
  `Bearer ${ADMIN_KEYS.admin.slice(0, -1)}`,
  `Bearer ${'k'.repeat(600)}`,
  `Bearer ${ADMIN_KEYS.admin}, Bearer ${ADMIN_KEYS.admin}`,
  `Bearer ${ADMIN_KEYS.admin}x`,
  `Token ${ADMIN_KEYS.admin}`,
  ADMIN_KEYS.admin,
)

/** The Authorization header for a key choice, and the refusal it gets for a permission (undefined: allowed). */
function adminAuth(
  choice: KeyChoice,
  malformed: string,
  permission: 'revoke' | 'read' | 'attest',
): { headers: Record<string, string>; refusal: Outcome | undefined } {
  switch (choice) {
    case 'none':
      return { headers: {}, refusal: ADMIN_UNAUTHORIZED }
    case 'unknown':
      return { headers: { authorization: 'Bearer not-a-key-0123456789abcdef' }, refusal: ADMIN_UNAUTHORIZED }
    case 'malformed':
      return { headers: { authorization: malformed }, refusal: ADMIN_UNAUTHORIZED }
    default: {
      // Only the admin role attests.
      const allowed = choice === 'admin' || (permission !== 'attest' && (choice === 'responder') === (permission === 'revoke'))
      return { headers: { authorization: `Bearer ${ADMIN_KEYS[choice]}` }, refusal: allowed ? undefined : ADMIN_FORBIDDEN }
    }
  }
}

const adminSecrets = (headers: Record<string, string>) => {
  const v = headers['authorization']?.replace(/^\S+\s+/, '')
  return v !== undefined && v.length >= 16 ? [v] : []
}

/** A JSON value as text, with `bytes` where MARK is. */
const jsonWith = (value: unknown, bytes?: readonly number[]) =>
  bytes === undefined ? Buffer.from(JSON.stringify(value)) : withBytes(value as Record<string, unknown>, bytes)

/**
 * POST /admin/revocations with a body the broker must refuse (400; 413 over
 * the limit), under every kind of key. Never a valid body with a key that
 * may revoke: that would change the broker under the other cases.
 */
export function adminRevokeCase(ctx: HostileContext): fc.Arbitrary<HostileCase> {
  const target = fc.constantFrom<Record<string, string>>({ sub: 'hostile-nobody' }, { jti: 'hostile-jti' }, { chain: 'hostile-chain' })
  const reason = 'hostile suite'
  const body: fc.Arbitrary<{ label: string; bytes: Uint8Array }> = fc.oneof(
    fc
      .oneof(
        fc.string({ maxLength: 60 }).filter((s) => {
          try {
            JSON.parse(s)
            return false
          } catch {
            return true
          }
        }),
        fc.tuple(target, fc.nat()).map(([t, n]) => {
          const text = JSON.stringify({ ...t, reason })
          return text.slice(0, n % text.length)
        }),
      )
      .map((s) => ({ label: `not JSON (${JSON.stringify(s.slice(0, 30))})`, bytes: Buffer.from(s) })),
    fc
      .jsonValue({ maxDepth: 2 })
      .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v))
      .map((v) => ({ label: `JSON ${JSON.stringify(v)?.slice(0, 30)} (not an object)`, bytes: jsonWith(v) })),
    fc
      .tuple(target, fc.constantFrom<unknown>(undefined, 5, null, [], {}, '', '   ', '\t\n', 'r'.repeat(501), true))
      .map(([t, r]) => ({ label: `reason ${r === undefined ? 'missing' : JSON.stringify(r).slice(0, 20)}`, bytes: jsonWith({ ...t, reason: r }) })),
    fc
      .constantFrom<Record<string, unknown>>(
        {},
        { jti: 'a', sub: 'b' },
        { chain: 'a', agent: 'secret-agent' },
        { jti: 'a', chain: 'b' },
        { jti: 'a', agent: 'secret-agent', sub: 'b' },
        { agent: 'secret-agent', sub: 'b', chain: 'c' },
      )
      .map((t) => ({ label: `targets ${Object.keys(t).join('+') || 'none'}`, bytes: jsonWith({ ...t, reason }) })),
    fc
      .tuple(
        target,
        fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !['jti', 'chain', 'agent', 'sub', 'reason'].includes(k)),
        fc.jsonValue({ maxDepth: 1 }),
      )
      .map(([t, k, v]) => ({ label: `unknown member ${JSON.stringify(k)}`, bytes: jsonWith({ ...t, reason, [k]: v }) })),
    fc.tuple(target, fc.constantFrom('__proto__', 'constructor', 'prototype')).map(([t, k]) => ({
      label: `member ${k}`,
      bytes: Buffer.from(`{"${k}":{"sub":"x"},${JSON.stringify({ ...t, reason }).slice(1)}`),
    })),
    fc
      .tuple(fc.constantFrom('jti', 'chain', 'sub'), fc.constantFrom<unknown>('', 'a b', 'x\u0001', 'x'.repeat(257), 'é', '\u0000', 'a\ud800', 5, null, [], {}))
      .map(([k, v]) => ({ label: `${k} ${JSON.stringify(v).slice(0, 20)}`, bytes: jsonWith({ [k]: v, reason }) })),
    fc
      .constantFrom<unknown>('Secret-Agent', '-x', '', 'a'.repeat(64), 'a b', 'é', 5, '../x')
      .map((v) => ({ label: `agent ${JSON.stringify(v).slice(0, 20)}`, bytes: jsonWith({ agent: v, reason }) })),
    // NUL, lone surrogates and invalid UTF-8 in the reason: 400 like anywhere a caller controls.
    fc
      .tuple(target, fc.constantFrom(...HOSTILE_CHARS), fc.nat())
      .map(([t, ch, at]) => ({ label: `${JSON.stringify(ch)} in the reason`, bytes: jsonWith({ ...t, reason: insertAt(reason, at, ch) }) })),
    fc
      .tuple(target, fc.constantFrom(...INVALID_UTF8))
      .map(([t, bytes]) => ({ label: `invalid UTF-8 (${Buffer.from(bytes).toString('hex')}) in the reason`, bytes: jsonWith({ ...t, reason: MARK }, bytes) })),
    fc.record({ n: fc.integer({ min: 100, max: 20_000 }), array: fc.boolean() }).map(({ n, array }) => ({
      label: `nested ${n} deep`,
      bytes: Buffer.from(array ? `${'['.repeat(n)}${']'.repeat(n)}` : `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`),
    })),
    fc.integer({ min: 1, max: 64 * 1024 }).map((over) => ({
      label: `body ${over} bytes over the limit`,
      bytes: jsonWith({ sub: 'hostile-nobody', reason: 'r'.repeat(ctx.maxBodyBytes + over) }),
    })),
  )
  return fc
    .record({
      key: adminKey,
      malformed: malformedBearer,
      body,
      type: fc.constantFrom(undefined, 'application/json', 'application/json; charset=utf-8', 'text/plain'),
      headers: neutralHeaders,
    })
    .map(({ key, malformed, body, type, headers }) => {
      const auth = adminAuth(key, malformed, 'revoke')
      const oversize = body.bytes.length > ctx.maxBodyBytes
      const expected = auth.refusal !== undefined ? [auth.refusal, ...(oversize ? [TOO_LARGE] : [])] : [oversize ? TOO_LARGE : ADMIN_INVALID]
      return hostileCase({
        label: `POST /admin/revocations as ${key}: ${body.label}`,
        request: {
          method: 'POST',
          path: '/admin/revocations',
          headers: { ...headers, ...(type === undefined ? {} : { 'content-type': type }), ...auth.headers },
          body: body.bytes,
        },
        expected,
        secrets: adminSecrets(auth.headers),
      })
    })
}

/** A query parameter: its encoded text, and whether the route must accept it. */
interface QueryValue {
  readonly text: string
  readonly ok: boolean
  /** For from/to: the instant it names. */
  readonly at?: number
}
const good = (value: string, at?: number): QueryValue => ({ text: encodeURIComponent(value), ok: true, ...(at === undefined ? {} : { at }) })
const bad = (value: string): QueryValue => ({ text: encodeURIComponent(value), ok: false })
/** Already percent-encoded (hostile bytes cannot be spelt otherwise). */
const badRaw = (text: string): QueryValue => ({ text, ok: false })
const HOSTILE_QUERY = ['%00', '%FF', '%ED%A0%80', '%C0%80', 'a%00b', 'x%E2%82']

function queryCase(
  label: string,
  path: string,
  params: fc.Arbitrary<Record<string, QueryValue | undefined>>,
  extraCheck: (p: Record<string, QueryValue | undefined>) => boolean = () => true,
): fc.Arbitrary<HostileCase> {
  return fc
    .record({ key: adminKey, malformed: malformedBearer, params, headers: neutralHeaders, reversed: fc.boolean() })
    .map(({ key, malformed, params, headers, reversed }) => {
      const auth = adminAuth(key, malformed, 'read')
      const present = Object.entries(params).filter((e): e is [string, QueryValue] => e[1] !== undefined)
      if (reversed) present.reverse()
      const query = present.map(([k, v]) => `${encodeURIComponent(k)}=${v.text}`).join('&')
      const valid = present.every(([, v]) => v.ok) && extraCheck(params)
      return hostileCase({
        label: `${label} as ${key}: ${present.map(([k, v]) => `${JSON.stringify(k)}${v.ok ? '' : '(bad)'}`).join(' ') || 'no parameters'}`,
        request: { method: 'GET', path: `${path}${query === '' ? '' : `?${query}`}`, headers: { ...headers, ...auth.headers } },
        expected: [auth.refusal ?? (valid ? { kind: 'ok', status: 200 } : ADMIN_INVALID)],
        secrets: adminSecrets(auth.headers),
      })
    })
}

/** A parameter present half the time. */
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined, freq: 2 })
/** Mostly a good value, so that a fair share of the queries is valid and reaches the database. */
const mostlyGood = (goodValues: fc.Arbitrary<QueryValue>, ...badValues: fc.Arbitrary<QueryValue>[]) =>
  fc.oneof({ weight: 3 * badValues.length, arbitrary: goodValues }, ...badValues.map((arbitrary) => ({ weight: 1, arbitrary })))
const uuid = fc.uuid({ version: 4 })

/** GET /admin/revocations with query junk: `limit` 1–1000, `before` a revocation id. */
export function adminListCase(): fc.Arbitrary<HostileCase> {
  const limit = mostlyGood(
    fc.integer({ min: 1, max: 1000 }).map((n) => good(String(n))),
    fc.constantFrom('0', '01', '1001', '1e2', '-5', 'abc', '', ' 5', '5 ', '１', '5.0').map(bad),
    fc.constantFrom(...HOSTILE_QUERY).map(badRaw),
  )
  const before = mostlyGood(
    uuid.map((u) => good(u)),
    fc
      .oneof(
        uuid.map((u) => u.toUpperCase()),
        uuid.map((u) => `${u}0`),
        fc.constantFrom('x', '', 'x'.repeat(300)),
      )
      .map(bad),
    fc.constantFrom(...HOSTILE_QUERY).map(badRaw),
  )
  // Unknown parameters are ignored by this route.
  const other = fc.string({ maxLength: 20 }).map((v) => good(v))
  return queryCase('GET /admin/revocations', '/admin/revocations', fc.record({ limit: opt(limit), before: opt(before), x: opt(other) }))
}

/** GET /admin/audit with query junk: filters, instants, page size and cursor; unknown parameters refused. */
export function adminAuditCase(): fc.Arbitrary<HostileCase> {
  const text = mostlyGood(
    fc
      .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
      // eslint-disable-next-line no-control-regex -- the good values are those without control characters
      .filter((s) => s.isWellFormed() && !/[\u0000-\u001f\u007f]/.test(s))
      .map((s) => good(s)),
    fc.constantFrom('', 'x'.repeat(1025), 'a\u0001b', '\u007f', 'a\nb').map(bad),
    fc.constantFrom(...HOSTILE_QUERY).map(badRaw),
  )
  const families = ['token.*', 'revocation.*', 'policy.*', 'key.*', 'admin.*', 'admin.revocations.*']
  const event = mostlyGood(
    fc.constantFrom(...AUDIT_EVENTS, ...families).map((e) => good(e)),
    fc.constantFrom('token', 'x.*', '*', '.*', 'token.issued.*', 'TOKEN.ISSUED', ' token.issued', '', 'token.issued,token.denied').map(bad),
    fc.constantFrom(...HOSTILE_QUERY).map(badRaw),
  )
  const instant = mostlyGood(
    fc.integer({ min: 0, max: MAX_INSTANT }).map((n) => good(String(n), n)),
    fc
      .integer({ min: 0, max: MAX_INSTANT - 86_400 })
      .chain((n) => fc.constantFrom(good(new Date(n * 1000).toISOString(), n), good(new Date((n + 7200) * 1000).toISOString().replace('Z', '+02:00'), n))),
    fc
      .constantFrom('-1', '1e5', '1.5', String(MAX_INSTANT + 1), '9'.repeat(13), '2024-13-01T00:00:00Z', '2024-01-01', 'now', '', '2024-01-01T00:00:00')
      .map(bad),
    fc.constantFrom(...HOSTILE_QUERY).map(badRaw),
  )
  const limit = mostlyGood(
    fc.integer({ min: 1, max: MAX_PAGE }).map((n) => good(String(n))),
    fc.constantFrom('0', String(MAX_PAGE + 1), '01', 'x', '', '1.0').map(bad),
  )
  const before = mostlyGood(
    fc.bigInt({ min: 1n, max: 10n ** 18n - 1n }).map((n) => good(String(n))),
    fc.constantFrom('0', '-1', 'abc', '1'.repeat(19), '').map(bad),
  )
  const names = ['agent', 'sub', 'jti', 'event', 'from', 'to', 'limit', 'before']
  // A parameter the route does not know is refused, whatever its value.
  const unknown = fc.string({ minLength: 1, maxLength: 10 }).filter((k) => !names.includes(k))
  const params = fc
    .tuple(
      fc.record({
        agent: opt(text),
        sub: opt(text),
        jti: opt(text),
        event: opt(event),
        from: opt(instant),
        to: opt(instant),
        limit: opt(limit),
        before: opt(before),
      }),
      fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: unknown }),
    )
    .map(([known, name]): Record<string, QueryValue | undefined> => (name === undefined ? known : { ...known, [name]: { text: '1', ok: false } }))
  const ordered = (p: Record<string, QueryValue | undefined>) => p['from']?.at === undefined || p['to']?.at === undefined || p['from'].at <= p['to'].at
  return queryCase('GET /admin/audit', '/admin/audit', params, ordered)
}

/** GET /admin/agents with query junk: owner, state, expiring, sort, limit, offset; unknown parameters refused. */
export function adminAgentsCase(): fc.Arbitrary<HostileCase> {
  const owner = mostlyGood(
    fc
      .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
      // eslint-disable-next-line no-control-regex -- the good values are those without control characters
      .filter((s) => s.isWellFormed() && !/[\u0000-\u001f\u007f]/.test(s))
      .map((s) => good(s)),
    fc.constantFrom('', 'x'.repeat(257), 'a\u0001b', '\u007f', 'a\nb').map(bad),
    fc.constantFrom(...HOSTILE_QUERY).map(badRaw),
  )
  const state = mostlyGood(
    fc.constantFrom(...AGENT_STATES).map((v) => good(v)),
    fc.constantFrom('ACTIVE', 'active ', 'all', '', 'killed,active', '*').map(bad),
  )
  const duration = mostlyGood(
    fc.tuple(fc.integer({ min: 1, max: 9999 }), fc.constantFrom('d', 'h')).map(([n, u]) => good(`${n}${u}`)),
    fc.constantFrom('0d', '14', '14m', '10000d', '-1d', '1.5d', 'd', '', '14D', ' 14d').map(bad),
  )
  const sort = mostlyGood(
    fc.constantFrom(...INVENTORY_SORTS).map((v) => good(v)),
    fc.constantFrom('AGENT', 'tokens', '-agent', '', 'agent,owner').map(bad),
  )
  const limit = mostlyGood(
    fc.integer({ min: 1, max: MAX_AGENTS_PAGE }).map((n) => good(String(n))),
    fc.constantFrom('0', String(MAX_AGENTS_PAGE + 1), '01', 'x', '', '1.0', '-1').map(bad),
  )
  const offset = mostlyGood(
    fc.integer({ min: 0, max: 1_000_000 }).map((n) => good(String(n))),
    fc.constantFrom('-1', '1000001', '01', 'x', '', '1e3').map(bad),
  )
  const names = ['owner', 'state', 'expiring', 'sort', 'limit', 'offset']
  const unknown = fc.string({ minLength: 1, maxLength: 10 }).filter((k) => !names.includes(k))
  const params = fc
    .tuple(
      fc.record({ owner: opt(owner), state: opt(state), expiring: opt(duration), sort: opt(sort), limit: opt(limit), offset: opt(offset) }),
      fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: unknown }),
    )
    .map(([known, name]): Record<string, QueryValue | undefined> => (name === undefined ? known : { ...known, [name]: { text: '1', ok: false } }))
  return queryCase('GET /admin/agents', '/admin/agents', params)
}

/** GET /admin/agents/:id: the test broker's agents (200), ids nothing names (404), ids that are no id (400, or 404 for the router). */
export function adminAgentCase(): fc.Arbitrary<HostileCase> {
  const id = fc.oneof(
    fc
      .constantFrom('secret-agent', 'jwt-agent', 'workload-agent', 'sub-agent', 'expired-agent')
      .map((path) => ({ path, answers: [{ kind: 'ok', status: 200 } satisfies Outcome] })),
    fc
      .stringMatching(/^[a-z][a-z0-9-]{0,40}$/)
      .filter((s) => !['secret-agent', 'jwt-agent', 'workload-agent', 'sub-agent', 'expired-agent'].includes(s))
      .map((s) => ({ path: `nobody-${s}`, answers: [ADMIN_NOT_FOUND] })),
    fc.constantFrom('a'.repeat(257), 'a%20b', '%C3%A9t%C3%A9', 'a%09b').map((path) => ({ path, answers: [ADMIN_INVALID] })),
    fc.constantFrom(...HOSTILE_QUERY).map((path) => ({ path, answers: [ADMIN_INVALID, ADMIN_NOT_FOUND] })),
    fc.constantFrom('%zz', '%', 'a%2Fb').map((path) => ({ path, answers: [ADMIN_INVALID, ADMIN_NOT_FOUND] })),
  )
  return fc.record({ key: adminKey, malformed: malformedBearer, id, headers: neutralHeaders }).map(({ key, malformed, id, headers }) => {
    const auth = adminAuth(key, malformed, 'read')
    return hostileCase({
      label: `GET /admin/agents/<id> as ${key}`,
      request: { method: 'GET', path: `/admin/agents/${id.path}`, headers: { ...headers, ...auth.headers } },
      expected: auth.refusal !== undefined ? [auth.refusal] : id.answers,
      secrets: adminSecrets(auth.headers),
    })
  })
}

/**
 * POST /admin/policy/explain with bodies good (200: an explanation, granted or denied; it mints and spends
 * nothing) and bad (400; 413 over the limit), under every kind of key.
 */
export function adminExplainCase(ctx: HostileContext): fc.Arbitrary<HostileCase> {
  const base = { agent: 'secret-agent', iss: USER_ISSUER, sub: 'hostile-user', audience: AUDIENCE }
  const goodBody = fc
    .record({
      agent: fc.constantFrom('secret-agent', 'jwt-agent', 'sub-agent', 'expired-agent', 'nobody-agent'),
      scope: opt(fc.constantFrom('read', 'read write', 'admin', 'x')),
      ttl: opt(fc.integer({ min: 1, max: 31_536_000 })),
      chain: opt(fc.array(fc.constantFrom('secret-agent', 'jwt-agent', 'workload-agent'), { maxLength: 3 })),
      claims: opt(
        fc.record({
          scope: opt(fc.constantFrom('read', 'read write', '')),
          iat: opt(fc.oneof(fc.integer({ min: 0, max: 2 ** 40 }), fc.constant(1e300), fc.constant(-1))),
          exp: opt(fc.oneof(fc.integer({ min: 0, max: 2 ** 40 }), fc.constant(1e300))),
          groups: opt(fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 })),
        }),
      ),
    })
    .map((over) => ({ label: 'a good body', bytes: jsonWith(JSON.parse(JSON.stringify({ ...base, ...over }))), ok: true }))
  const badBody = fc
    .oneof(
      fc.constantFrom<[string, unknown]>(
        ['agent missing', { iss: USER_ISSUER, sub: 'u', audience: AUDIENCE }],
        ['agent not an id', { ...base, agent: 'Not An Id' }],
        ['agent a number', { ...base, agent: 7 }],
        ['iss with a space', { ...base, iss: 'https://idp .test' }],
        ['sub empty', { ...base, sub: '' }],
        ['sub 1025 characters', { ...base, sub: 'u'.repeat(1025) }],
        ['audience missing', { agent: 'secret-agent', iss: USER_ISSUER, sub: 'u' }],
        ['scope with two spaces', { ...base, scope: 'read  write' }],
        ['scope with a quote', { ...base, scope: 'read "write"' }],
        ['ttl 0', { ...base, ttl: 0 }],
        ['ttl fractional', { ...base, ttl: 1.5 }],
        ['ttl a string', { ...base, ttl: '60' }],
        ['chain of 33', { ...base, chain: Array.from({ length: 33 }, () => 'jwt-agent') }],
        ['chain not an array', { ...base, chain: 'jwt-agent' }],
        ['claims an array', { ...base, claims: [] }],
        ['claim name of 257 characters', { ...base, claims: { ['c'.repeat(257)]: 1 } }],
        ['an unknown member', { ...base, depth: 2 }],
        ['an array', [base]],
        ['null', null],
      ),
    )
    .map(([label, value]) => ({ label, bytes: jsonWith(value), ok: false }))
  const junk = fc.oneof(
    fc
      .constantFrom('', '{', '{"agent":', 'agent=secret-agent', '\u0000', '{"agent":"a\u0000b"}')
      .map((t) => ({ label: `not JSON: ${JSON.stringify(t)}`, bytes: Buffer.from(t), ok: false })),
    fc.constant({ label: 'over the body limit', bytes: Buffer.alloc(ctx.maxBodyBytes + 1, 0x20), ok: false }),
  )
  return fc
    .record({
      key: adminKey,
      malformed: malformedBearer,
      body: fc.oneof({ weight: 3, arbitrary: goodBody }, { weight: 3, arbitrary: badBody }, { weight: 1, arbitrary: junk }),
      headers: neutralHeaders,
    })
    .map(({ key, malformed, body, headers }) => {
      const auth = adminAuth(key, malformed, 'read')
      const oversize = body.bytes.length > ctx.maxBodyBytes
      const expected =
        auth.refusal !== undefined
          ? [auth.refusal, ...(oversize ? [TOO_LARGE] : [])]
          : [oversize ? TOO_LARGE : body.ok ? ({ kind: 'ok', status: 200 } as Outcome) : ADMIN_INVALID]
      return hostileCase({
        label: `POST /admin/policy/explain as ${key}: ${body.label}`,
        request: {
          method: 'POST',
          path: '/admin/policy/explain',
          headers: { ...headers, ...auth.headers, 'content-type': 'application/json' },
          body: body.bytes,
        },
        expected,
        secrets: adminSecrets(auth.headers),
      })
    })
}

/**
 * POST /admin/agents/:id/attest with ids good, unknown and hostile, and bodies good (none, or a note: 200 for
 * an agent a policy names, 404 for one nothing names) and bad (400; 413 over the limit), under every kind of key.
 * An attestation only records and reinstates: it changes no other case's answer.
 */
export function adminAttestCase(ctx: HostileContext): fc.Arbitrary<HostileCase> {
  const id = fc.oneof(
    fc.constantFrom('secret-agent', 'jwt-agent', 'workload-agent', 'sub-agent', 'expired-agent').map((path) => ({ path, known: true, hostile: false })),
    fc.stringMatching(/^[a-z][a-z0-9-]{0,40}$/).map((s) => ({ path: `nobody-${s}`, known: false, hostile: false })),
    fc.constantFrom('a'.repeat(257), 'a%20b', '%C3%A9t%C3%A9', 'a%09b', '%zz').map((path) => ({ path, known: false, hostile: true })),
  )
  const body = fc.oneof(
    fc.constant({ label: 'no body', bytes: Buffer.alloc(0), ok: true }),
    fc
      .oneof(
        // eslint-disable-next-line no-control-regex -- control characters but line breaks are what the route refuses
        fc.string({ minLength: 1, maxLength: 200 }).filter((t) => !/[\u0000-\u0009\u000b-\u001f\u007f]/.test(t)),
        fc.constant('line one\nline two'),
      )
      .map((note) => ({ label: 'a note', bytes: jsonWith({ note }), ok: true })),
    fc
      .constantFrom<[string, unknown]>(
        ['note empty', { note: '' }],
        ['note 1025 characters', { note: 'n'.repeat(1025) }],
        ['note a number', { note: 7 }],
        ['note with a tab', { note: 'a\tb' }],
        ['note with a NUL', { note: 'a\u0000b' }],
        ['an unknown member', { note: 'n', by: 'someone-else' }],
        ['an array', [{ note: 'n' }]],
        ['null', null],
      )
      .map(([label, value]) => ({ label, bytes: jsonWith(value), ok: false })),
    fc.constantFrom('{', 'note=x', '\u0000').map((t) => ({ label: `not JSON: ${JSON.stringify(t)}`, bytes: Buffer.from(t), ok: false })),
    fc.constant({ label: 'over the body limit', bytes: Buffer.alloc(ctx.maxBodyBytes + 1, 0x20), ok: false }),
  )
  return fc.record({ key: adminKey, malformed: malformedBearer, id, body, headers: neutralHeaders }).map(({ key, malformed, id, body, headers }) => {
    const auth = adminAuth(key, malformed, 'attest')
    const oversize = body.bytes.length > ctx.maxBodyBytes
    // The router may not match a hostile id at all (404); a hostile one it matches is refused (400).
    const answers: Outcome[] = oversize
      ? [TOO_LARGE]
      : id.hostile
        ? [ADMIN_INVALID, ADMIN_NOT_FOUND]
        : !body.ok
          ? [ADMIN_INVALID]
          : id.known
            ? [{ kind: 'ok', status: 200 }]
            : [ADMIN_NOT_FOUND]
    return hostileCase({
      label: `POST /admin/agents/<id>/attest as ${key}: ${body.label}`,
      request: {
        method: 'POST',
        path: `/admin/agents/${id.path}/attest`,
        headers: { ...headers, ...auth.headers, ...(body.bytes.length === 0 ? {} : { 'content-type': 'application/json' }) },
        body: body.bytes,
      },
      expected: auth.refusal !== undefined ? [auth.refusal, ...(oversize ? [TOO_LARGE] : []), ...(id.hostile ? [ADMIN_NOT_FOUND] : [])] : answers,
      secrets: adminSecrets(auth.headers),
    })
  })
}

/** DELETE /admin/revocations/:id for ids that name no revocation: 404 (400 for hostile bytes is right too). */
export function adminLiftCase(): fc.Arbitrary<HostileCase> {
  const id = fc.oneof(
    uuid.map((u) => ({ path: u, answers: [ADMIN_NOT_FOUND] })),
    fc
      .oneof(
        uuid.map((u) => u.toUpperCase()),
        uuid.map((u) => `${u}x`),
        fc.string({ minLength: 1, maxLength: 60 }),
        fc.integer({ min: 300, max: 20_000 }).map((n) => 'i'.repeat(n)),
      )
      .filter((s) => s !== '.' && s !== '..')
      .map((s) => ({ path: encodeURIComponent(s), answers: [ADMIN_NOT_FOUND] })),
    fc.constantFrom('%zz', '%', 'a%2Fb').map((raw) => ({ path: raw, answers: [ADMIN_NOT_FOUND] })),
    fc.constantFrom(...HOSTILE_QUERY).map((raw) => ({ path: raw, answers: [ADMIN_INVALID, ADMIN_NOT_FOUND] })),
  )
  return fc.record({ key: adminKey, malformed: malformedBearer, id, headers: neutralHeaders }).map(({ key, malformed, id, headers }) => {
    const auth = adminAuth(key, malformed, 'revoke')
    return hostileCase({
      label: `DELETE /admin/revocations/<id> as ${key}`,
      request: { method: 'DELETE', path: `/admin/revocations/${id.path}`, headers: { ...headers, ...auth.headers } },
      expected: auth.refusal !== undefined ? [auth.refusal] : id.answers,
      secrets: adminSecrets(auth.headers),
    })
  })
}

// ---------------------------------------------------------------------------
// Every route: wrong methods, unknown paths, junk queries

/** Each route and the methods it answers (HEAD rides on GET). */
export const ROUTES: readonly { readonly path: string; readonly allow: readonly string[] }[] = [
  { path: '/.well-known/oauth-authorization-server', allow: ['GET'] },
  { path: '/.well-known/jwks.json', allow: ['GET'] },
  { path: '/healthz', allow: ['GET'] },
  { path: '/readyz', allow: ['GET'] },
  { path: '/oauth2/token', allow: ['POST'] },
  { path: '/oauth2/introspect', allow: ['POST'] },
  { path: '/oauth2/revoke', allow: ['POST'] },
  { path: '/admin/revocations', allow: ['GET', 'POST'] },
  { path: '/admin/revocations/6f1c1c39-5a55-4b1e-8f3e-0c8f0a8a2b1d', allow: ['GET', 'DELETE'] },
  { path: '/admin/audit', allow: ['GET'] },
  { path: '/admin/audit/chains/some-jti', allow: ['GET'] },
  { path: '/admin/agents', allow: ['GET'] },
  { path: '/admin/agents/secret-agent', allow: ['GET'] },
  { path: '/admin/agents/secret-agent/attest', allow: ['POST'] },
  { path: '/admin/policy/explain', allow: ['POST'] },
  { path: '/admin/webhooks', allow: ['GET'] },
  { path: '/revocations/feed', allow: ['GET', 'POST'] },
  { path: '/forward-auth', allow: ['GET'] },
  { path: '/forward-auth/ext-authz', allow: ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] },
]
const PUBLIC_GET = ROUTES.filter((r) => r.path.startsWith('/.well-known/') || r.path === '/healthz' || r.path === '/readyz')
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'FOO', 'PROPFIND', 'M-SEARCH', 'get', 'post', 'delete', 'Put', 'options']
/** The method as a fetch Request spells it (it upper-cases the six standard ones only). */
const normalized = (m: string) => new Request('http://x/', { method: m }).method

/**
 * A request to any route: a method it does not answer (405 with `Allow`,
 * RFC 9110 §15.5.6), a path no route has (404), or a public GET with junk
 * in its query (200).
 */
export function routeCase(): fc.Arbitrary<HostileCase> {
  const query = fc.oneof(
    fc.constant(''),
    fc.string({ maxLength: 60 }).map((s) => `?${encodeURIComponent(s)}`),
    fc.string({ unit: fc.constantFrom('%', '&', '=', '+', 'a', '?', '%zz', ';', '#'), maxLength: 30 }).map((s) => `?${s.replace('#', '%23')}`),
  )
  const wrongMethod = fc
    .record({
      route: fc.constantFrom(...ROUTES),
      method: fc.constantFrom(...METHODS),
      body: fc.option(fc.uint8Array({ maxLength: 64 }), { nil: undefined }),
      key: fc.boolean(),
    })
    .filter(({ route, method }) => {
      const m = normalized(method)
      return !route.allow.includes(m) && !(m === 'HEAD' && route.allow.includes('GET'))
    })
    .map(({ route, method, body, key }) => {
      const m = normalized(method)
      return hostileCase({
        label: `${method} ${route.path}`,
        request: {
          method,
          path: route.path,
          headers: key ? { authorization: `Bearer ${ADMIN_KEYS.admin}` } : {},
          ...(body === undefined || m === 'HEAD' || m === 'GET' ? {} : { body }),
        },
        expected: [{ kind: 'method_not_allowed', allow: route.allow }],
        secrets: key ? [ADMIN_KEYS.admin] : [],
      })
    })
  const unknownPath = fc
    .record({
      path: fc.oneof(
        fc.string({ maxLength: 40 }).map((s) => `/x-${encodeURIComponent(s)}`),
        fc.constantFrom('/oauth2/token/x', '/admin/revocations/a/b', '/.well-known/openid-configuration', '/healthz/x', '/oauth2', '/admin', '/dev/jwks.json'),
      ),
      method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT'),
    })
    .map(({ path, method }) =>
      hostileCase({ label: `${method} ${path} (no such route)`, request: { method, path, headers: {} }, expected: [error(404, 'not_found')], secrets: [] }),
    )
  const publicGet = fc
    .record({ route: fc.constantFrom(...PUBLIC_GET), method: fc.constantFrom('GET', 'HEAD', 'get'), query, headers: neutralHeaders })
    .map(({ route, method, query, headers }) =>
      hostileCase({
        label: `${method} ${route.path} with a junk query`,
        request: { method, path: `${route.path}${query}`, headers },
        expected: [{ kind: 'ok', status: 200 }],
        secrets: [],
      }),
    )
  return fc.oneof({ weight: 3, arbitrary: wrongMethod }, { weight: 1, arbitrary: unknownPath }, { weight: 2, arbitrary: publicGet })
}

// ---------------------------------------------------------------------------
// GET /forward-auth and /forward-auth/ext-authz (RFC 6750 §2.1, §3.1)

const INVALID_TOKEN = error(401, 'invalid_token')
/** RFC 6750 §3.1: no Bearer credentials at all, a bare challenge (the body says `unauthorized`). */
const NO_BEARER = error(401, 'unauthorized')
const INSUFFICIENT_SCOPE = error(403, 'insufficient_scope')

/** The claims of a token the test holds (it built or was handed it): what a fault is judged against, never the answer. */
function claimsOf(token: string): { aud: string; scope: string; client_id: string } {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { aud: string; scope: string; client_id: string }
}

/**
 * A Mandate access token as the broker mints them (RFC 9068), signed with
 * the broker's own key, so that only the fault can refuse one built from it.
 * Its own tokens have no maximum lifetime to exceed.
 */
export function mandateRole(ctx: HostileContext): JwtRole {
  const role: JwtRole = {
    field: 'access_token',
    signer: ctx.broker,
    refused: [INVALID_TOKEN],
    header: () => ({ alg: 'ES256', kid: ctx.broker.kid, typ: 'at+jwt' }),
    claims: () => ({
      iss: BROKER,
      sub: 'alice',
      sub_id: { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' },
      aud: AUDIENCE,
      client_id: 'secret-agent',
      act: { sub: 'secret-agent' },
      scope: 'read write',
      jti: `m-${ctx.next()}-${randomUUID()}`,
      iat: ctx.now,
      exp: ctx.now + 300,
    }),
    required: ['iss', 'sub', 'sub_id', 'aud', 'exp', 'iat', 'jti', 'client_id', 'act', 'scope'],
    stringClaims: ['iss', 'sub', 'jti', 'aud', 'client_id', 'scope'],
    maxLifetime: Infinity,
    validTyps: ['at+jwt', 'application/at+jwt', 'AT+JWT'],
    wrongTyps: [undefined, 'JWT', 'jwt', 'application/jwt', 'secevent+jwt', 'at+jwt ', '', 5, null, ['at+jwt']],
    wrongIssuers: [{ iss: USER_ISSUER }, { iss: `${BROKER}/` }, { iss: BROKER.toUpperCase() }, { iss: 'https://evil.test' }],
    wrongAudiences: [OTHER_AUDIENCE, `${AUDIENCE}/`, AUDIENCE.toUpperCase(), BROKER, ''],
    foreign: () => [ctx.userTokens[0]!, buildJwt(workloadRole(ctx)).token],
    own: [
      fc
        .constantFrom<unknown>(
          { format: 'opaque', iss: USER_ISSUER, sub: 'alice' },
          { format: 'iss_sub', iss: USER_ISSUER, sub: 'bob' },
          { format: 'iss_sub', sub: 'alice' },
          { format: 'iss_sub', iss: 5, sub: 'alice' },
          'alice',
          null,
          [],
        )
        .map((subId) => jwt(`sub_id ${JSON.stringify(subId)}`, () => buildJwt(role, { claims: { sub_id: subId } }).token)),
      fc
        .oneof(
          fc.constantFrom<unknown>('secret-agent', null, [], { sub: 5 }, { act: { sub: 'x' } }, { sub: 'a', act: 'b' }),
          fc.integer({ min: 17, max: 200 }).map((n) => {
            let act: Record<string, unknown> = { sub: 'deepest' }
            for (let i = 0; i < n; i++) act = { sub: `a${i}`, act }
            return act
          }),
        )
        .map((act) => jwt(`act ${JSON.stringify(act).slice(0, 40)}`, () => buildJwt(role, { claims: { act } }).token)),
      fc.constantFrom<unknown>('j-1', [1], [null], {}).map((chain) => jwt(`chain ${JSON.stringify(chain)}`, () => buildJwt(role, { claims: { chain } }).token)),
    ],
  }
  return role
}

/** A Bearer credential as an Authorization header can carry it: what a header cannot hold (CR, LF, NUL, beyond Latin-1) and edge whitespace, which a header loses, become `!`, which no b64token holds. */
const inHeader = (token: string) =>
  token
    .replace(/[\0\n\r]|[^\0-\xff]/g, '!') // what an HTTP field value may not hold
    .replace(/^[\t ]+|[\t ]+$/g, (ws) => '!'.repeat(ws.length))

/** The Authorization header of a forward-auth case, and the answer it calls for when nothing in the query refuses first. */
interface BearerChoice {
  readonly label: string
  /** undefined: no Authorization header. */
  readonly header: string | undefined
  /** undefined: a live token of `holder`, judged on audience and scope. */
  readonly answer: Outcome | undefined
  readonly token: string | undefined
}

/** A live token the broker minted (the base of every case), or a Mandate token built from its parts. */
function liveBearer(ctx: HostileContext): fc.Arbitrary<() => { label: string; token: string }> {
  return fc.oneof(
    {
      weight: 3,
      arbitrary: fc
        .record({ owner: fc.constantFrom(...OWNERS), i: fc.nat() })
        .map(({ owner, i }) => () => ({ label: `${owner}'s token`, token: ctx.minted[owner][i % ctx.minted[owner].length]! })),
    },
    { weight: 1, arbitrary: validJwt(ctx, mandateRole(ctx)).map((f) => () => ({ label: `built: ${f.label}`, token: f.token() })) },
  )
}

/** Authorization headers that are not a live Bearer token, each with the answer it calls for. */
export function bearerHeaderFaults(ctx: HostileContext): fc.Arbitrary<(live: string) => BearerChoice> {
  const role = mandateRole(ctx)
  const choice = (label: string, header: string | undefined, answer: Outcome, token?: string) => ({ label, header, answer, token })
  const jwtFault = (f: JwtFault) => () => {
    const token = inHeader(f.token())
    return choice(`Bearer ${f.label}`, `Bearer ${token}`, INVALID_TOKEN, token)
  }
  return fc.oneof(
    fc.constant(() => choice('no Authorization', undefined, NO_BEARER)),
    fc
      .constantFrom(
        () => `Basic ${b64(`secret-agent:${SECRET}`)}`,
        (t: string) => `Token ${t}`,
        (t: string) => `MAC ${t}`,
        (t: string) => `Digest username="x", response="${t.slice(0, 20)}"`,
        (t: string) => `Negotiate ${t}`,
        (t: string) => `Bearerx ${t}`,
        (t: string) => `Bearer-${t}`,
        (t: string) => t,
        () => 'Basic',
        () => '',
        (t: string) => `Bearer,${t}`,
      )
      .map((make) => (live: string) => {
        const header = make(live)
        return choice(`another scheme (${JSON.stringify(header.slice(0, 12))})`, header, NO_BEARER, live)
      }),
    fc
      .constantFrom(
        () => 'Bearer',
        () => 'bearer ',
        (t: string) => `Bearer ${t}, Bearer ${t}`,
        (t: string) => `Bearer ${t} ${t}`,
        (t: string) => `Bearer\t${t}`,
        (t: string) => `Bearer ${t} x`,
        (t: string) => `Bearer "${t}"`,
        (t: string) => `Bearer ${t};`,
        (t: string) => `Bearer ==${t}`,
        (t: string) => `Bearer ${t.replace('.', '=.')}`,
        (t: string) => `Bearer ${t}\u0001`,
        (t: string) => `Bearer ${t}\u007f`,
        (t: string) => `Bearer ${t}\u00e9`,
      )
      .map((make) => (live: string) => {
        const header = make(live)
        return choice(`malformed Bearer (${JSON.stringify(header.replace(live, '<token>').slice(0, 24))})`, header, INVALID_TOKEN, live)
      }),
    fc
      .record({ at: fc.nat(), ch: fc.constantFrom('!', '"', ',', ';', '\\', '%', '@', '(', '*', '\u0001', '\u007f', '\u00e9', ' ', '\t', '=') })
      .map(({ at, ch }) => (live: string) => {
        // Inside the token: not at its edges, where whitespace would only be more separator.
        const i = 1 + (at % (live.length - 1))
        const token = `${live.slice(0, i)}${ch}${live.slice(i)}`
        return choice(`${JSON.stringify(ch)} inside the token (bad b64token)`, `Bearer ${token}`, INVALID_TOKEN, live)
      }),
    fc.integer({ min: 1_000, max: 70_000 }).map((n) => () => choice(`a huge token (${n} bytes)`, `Bearer eyJ${'A'.repeat(n)}`, INVALID_TOKEN)),
    deadToken(ctx).map((f) => () => {
      const token = inHeader(f.token())
      return choice(`Bearer ${f.label}`, `Bearer ${token}`, INVALID_TOKEN, token)
    }),
    jwtFormFaults(ctx, role)
      // A JWS with a leading space or a trailing newline is, in a header, just the JWS: no fault there.
      .filter((f) => !f.label.includes('leading space') && !f.label.includes('trailing newline'))
      .map(jwtFault),
    jwtClaimFaults(ctx, role).map(jwtFault),
  )
}

/** A query parameter's text as sent (percent-encoded) and, when it is bad, that it is. */
interface FwdParam {
  readonly text: string
  readonly bad: boolean
  readonly label: string
}
const fwdGood = (value: string, label = 'ok'): FwdParam => ({ text: encodeURIComponent(value), bad: false, label })
const fwdBad = (text: string, label: string): FwdParam => ({ text, bad: true, label })

/**
 * A forward-auth request (GET /forward-auth, or /forward-auth/ext-authz with
 * any method and Envoy's `&path=` tail): a live token with junk around it,
 * and faults in the query (400 `invalid_request`, decided first: it is the
 * proxy's configuration), the Authorization header (401, a bare challenge
 * when there are no Bearer credentials at all: RFC 6750 §3.1), the audience
 * (401 `invalid_token`) and the scopes (403 `insufficient_scope`).
 */
export function forwardAuthCase(ctx: HostileContext, faults: { query: boolean; bearer: boolean; target: boolean }): fc.Arbitrary<HostileCase> {
  const hostileValue = fc.oneof(fc.constantFrom(...HOSTILE_QUERY, '%zz', '%', '%2', 'a%G0', '%E2%82%28').map((raw) => ({ raw, label: `bad escape ${raw}` })))
  const audienceFault: fc.Arbitrary<FwdParam[]> = fc.oneof(
    fc.constant([]).map(() => [] as FwdParam[]),
    fc.constant<FwdParam[]>([fwdBad('', 'audience empty')]),
    fc
      .constantFrom(AUDIENCE, '', 'https://other.test')
      .map((second) => [fwdGood(AUDIENCE), { ...fwdGood(second), bad: true, label: `audience repeated (${second || 'empty'})` }]),
    fc
      .constantFrom(
        `${AUDIENCE} x`,
        `${AUDIENCE}\u00e9`,
        `${AUDIENCE}\u0001`,
        `\u007f`,
        ' ',
        `${AUDIENCE}\t`,
        'a'.repeat(2049),
        `https://${'a'.repeat(20_000)}`,
      )
      .map((v) => [{ ...fwdGood(v), bad: true, label: `audience ${JSON.stringify(v.slice(0, 20))} (${v.length} chars)` }]),
    hostileValue.map(({ raw, label }) => [fwdBad(`${encodeURIComponent(AUDIENCE)}${raw}`, `audience with ${label}`)]),
    fc.constant<FwdParam[]>([fwdBad(`${encodeURIComponent(AUDIENCE)}+x`, 'audience with + (a space in a query)')]),
  )
  const scopeFault: fc.Arbitrary<FwdParam[]> = fc.oneof(
    fc
      .constantFrom('read  write', ' read', 'read ', 'a"b', 'a\\b', 'r\u00e9ad', 'read\twrite', '\u0001', 'x'.repeat(5_000) + ' "')
      .map((v) => [{ ...fwdGood(v), bad: true, label: `scope ${JSON.stringify(v.slice(0, 20))}` }]),
    fc.constantFrom('read', '').map((second) => [fwdGood('read'), { ...fwdGood(second), bad: true, label: `scope repeated (${second || 'empty'})` }]),
    hostileValue.map(({ raw, label }) => [fwdBad(`read${raw}`, `scope with ${label}`)]),
  )
  const otherFault = hostileValue.map(({ raw, label }) => fwdBad(`x${raw}`, `an ignored parameter with ${label}`))
  const queryFault = fc.oneof(
    audienceFault.map((audience) => ({ audience, scope: undefined as FwdParam[] | undefined, other: undefined as FwdParam | undefined })),
    scopeFault.map((scope) => ({ audience: undefined, scope, other: undefined })),
    otherFault.map((other) => ({ audience: undefined, scope: undefined, other })),
  )
  const neutralQuery = fc.array(
    fc.oneof(
      fc
        .tuple(fc.constantFrom('x', 'path', 'Audience', 'SCOPE', 'audience_', 'redirect', '_'), fc.string({ maxLength: 30 }))
        .map(([k, v]) => `${k}=${encodeURIComponent(v)}`),
      fc.integer({ min: 100, max: 20_000 }).map((n) => `pad=${'v'.repeat(n)}`),
      fc.constantFrom('flag', '=', '&', 'x=%41'),
    ),
    { maxLength: 3 },
  )
  const method = fc.oneof(
    fc.constantFrom('GET', 'HEAD', 'get').map((m) => ({ path: '/forward-auth', method: m, envoy: false })),
    fc
      .constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'post', 'Put')
      .map((m) => ({ path: '/forward-auth/ext-authz', method: m, envoy: true })),
  )
  const envoyTail = fc.oneof(
    fc.constantFrom('/', '/api/items?x=1', '/a?audience=x', '/%2e%2e/admin', '/?scope', ''),
    fc.string({ maxLength: 30 }).map((s) => `/${encodeURIComponent(s)}`),
  )
  return fc
    .record({
      live: liveBearer(ctx),
      scheme: fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Bearer  '),
      // The scopes asked for: none, some the token holds, or (a target fault) one it lacks.
      scopeAsk: fc.oneof(fc.constant(undefined), fc.constant(''), fc.nat()),
      audienceEncoding: fc.constantFrom('encoded', 'raw'),
      query: faults.query ? fc.option(queryFault, { nil: undefined, freq: 3 }) : fc.constant(undefined),
      bearer: faults.bearer ? fc.option(bearerHeaderFaults(ctx), { nil: undefined, freq: 3 }) : fc.constant(undefined),
      target: faults.target ? fc.option(fc.constantFrom<'audience' | 'scope'>('audience', 'scope'), { nil: undefined, freq: 2 }) : fc.constant(undefined),
      otherAudience: fc.constantFrom(OTHER_AUDIENCE, `${AUDIENCE}/`, AUDIENCE.toUpperCase(), 'urn:x'),
      missingScope: fc.constantFrom('admin', 'delete', 'read:all', 'READ'),
      extras: neutralQuery,
      reversed: fc.boolean(),
      route: method,
      tail: envoyTail,
      headers: neutralHeaders,
      body: fc.option(fc.uint8Array({ maxLength: 64 }), { nil: undefined, freq: 3 }),
    })
    .map((v) => {
      const live = v.live()
      const claims = claimsOf(live.token)
      const bearer = v.bearer?.(live.token)
      // Audience and scope are judged against the live token; a faulty one is refused whatever the query asks
      // (and a token with a wrong audience would pass a query that names that audience).
      const target = bearer === undefined ? v.target : undefined
      const granted = claims.scope.split(' ').filter((s) => s !== '')
      const labels: string[] = [live.label]
      // The query as the proxy is configured to send it.
      let audience: FwdParam[] = [
        target === 'audience' ? fwdGood(v.otherAudience) : v.audienceEncoding === 'raw' ? { text: claims.aud, bad: false, label: 'ok' } : fwdGood(claims.aud),
      ]
      if (target === 'audience') labels.push(`audience ${v.otherAudience} (not the token's)`)
      const asked =
        target === 'scope'
          ? [...granted.slice(0, typeof v.scopeAsk === 'number' ? v.scopeAsk % (granted.length + 1) : 0), v.missingScope]
          : typeof v.scopeAsk === 'number'
            ? granted.slice(0, 1 + (v.scopeAsk % Math.max(1, granted.length))).reverse()
            : []
      if (target === 'scope') labels.push(`scope ${v.missingScope} (not granted)`)
      let scope: FwdParam[] = v.scopeAsk === '' && target !== 'scope' ? [fwdGood('')] : asked.length > 0 ? [fwdGood(asked.join(' '))] : []
      const other: FwdParam[] = []
      if (v.query !== undefined) {
        if (v.query.audience !== undefined) audience = v.query.audience
        if (v.query.scope !== undefined) scope = v.query.scope
        if (v.query.other !== undefined) other.push(v.query.other)
      }
      const params = [...audience.map((p) => ({ name: 'audience', p })), ...scope.map((p) => ({ name: 'scope', p })), ...other.map((p) => ({ name: 'x', p }))]
      if (v.reversed) params.reverse()
      const badQuery = params.filter(({ p }) => p.bad)
      const noAudience = !audience.some((p) => p.text !== '')
      if (noAudience && audience.length <= 1) labels.push(audience.length === 0 ? 'audience missing' : 'audience empty')
      for (const { p } of badQuery) labels.push(p.label)
      const queryRefused = badQuery.length > 0 || noAudience
      let query = [...params.map(({ name, p }) => `${name}=${p.text}`), ...v.extras].join('&')
      // Envoy appends the client's own path, after `path=` in the configured prefix.
      if (v.route.envoy) query = `${query}&path=${v.tail}`

      if (bearer !== undefined) labels.push(bearer.label)
      const headers: Record<string, string> = { ...v.headers }
      const authorization = bearer === undefined ? `${v.scheme} ${live.token}` : bearer.header
      if (authorization !== undefined) headers['authorization'] = authorization
      let expected: Outcome
      if (queryRefused) expected = INVALID_REQUEST
      else if (bearer?.answer !== undefined) expected = bearer.answer
      else if (target === 'audience') expected = INVALID_TOKEN
      else if (target === 'scope') expected = INSUFFICIENT_SCOPE
      else expected = { kind: 'forward_allowed', clientId: claims.client_id }
      const m = normalized(v.route.method)
      const secrets = [live.token, live.token.split('.')[2]!, ...(bearer?.token !== undefined && bearer.token.length >= 16 ? [bearer.token] : [])]
      return hostileCase({
        label: `${v.route.method} ${v.route.path}: ${labels.join(' + ')}`,
        request: {
          method: v.route.method,
          path: `${v.route.path}?${query}`,
          headers,
          ...(v.body === undefined || m === 'GET' || m === 'HEAD' ? {} : { body: v.body }),
        },
        expected: [expected],
        secrets,
      })
    })
}

// ---------------------------------------------------------------------------
// POST /ssf/poll (RFC 8936 §2.4): errors are RFC 8935 §2.3's `{ err, description }`

const SET_INVALID = (status = 400): Outcome => ({ kind: 'set_error', status, err: 'invalid_request' })
const SET_AUTH_FAILED: Outcome = { kind: 'set_error', status: 401, err: 'authentication_failed' }
const POLLED: Outcome = { kind: 'polled' }

/** A jti a receiver may echo (1 to 128 characters); none names a pending SET: the suite revokes nothing. */
const pollJti = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/),
  fc.string({ minLength: 1, maxLength: 128 }).filter((s) => s.isWellFormed() && !s.includes('\u0000')),
)

/**
 * Faults in a poll body, each answered 400 `invalid_request`: not JSON, not
 * an object, unknown members, wrong types, out-of-range `maxEvents`, junk in
 * `ack` and `setErrs`, text the broker could not store, deep nesting.
 */
function pollBodyFaults(): fc.Arbitrary<{ label: string; bytes: (valid: Record<string, unknown>) => Uint8Array }> {
  const json = (value: unknown) => Buffer.from(JSON.stringify(value))
  const over = (label: string, change: (v: Record<string, unknown>) => unknown) => ({ label, bytes: (v: Record<string, unknown>) => json(change({ ...v })) })
  return fc.oneof(
    fc
      .oneof(
        fc.string({ maxLength: 60 }).filter((s) => {
          try {
            JSON.parse(s)
            return false
          } catch {
            return true
          }
        }),
        fc.constantFrom('{', '{"maxEvents":', '{"ack":[}', "{'maxEvents':1}", '{"maxEvents":1,}', '\ufeff{}', 'NaN', '{"maxEvents":0x10}'),
      )
      .map((text) => ({ label: `not JSON (${JSON.stringify(text.slice(0, 20))})`, bytes: () => Buffer.from(text) })),
    fc
      .jsonValue({ maxDepth: 2 })
      .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v))
      .map((v) => ({ label: `JSON ${JSON.stringify(v)?.slice(0, 20)} (not an object)`, bytes: () => json(v) })),
    fc
      .tuple(
        fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !['maxEvents', 'returnImmediately', 'ack', 'setErrs'].includes(k)),
        fc.jsonValue({ maxDepth: 1 }),
      )
      .map(([k, value]) => over(`unknown member ${JSON.stringify(k)}`, (v) => ({ ...v, [k]: value }))),
    fc.constantFrom('__proto__', 'constructor', 'prototype').map((k) => ({
      label: `member ${k}`,
      bytes: (v: Record<string, unknown>) => Buffer.from(`{"${k}":{"maxEvents":5},${JSON.stringify(v).slice(1)}`),
    })),
    fc
      .constantFrom<unknown>(-1, 1001, 1e9, 0.5, 99.9, '5', null, true, [], {}, -0.0001, 2 ** 53)
      .map((n) => over(`maxEvents ${JSON.stringify(n)}`, (v) => ({ ...v, maxEvents: n }))),
    fc.constantFrom<unknown>('true', 1, 0, null, [], {}).map((b) => over(`returnImmediately ${JSON.stringify(b)}`, (v) => ({ ...v, returnImmediately: b }))),
    fc
      .oneof(
        fc.constantFrom<unknown>('jti', 5, null, {}, true),
        fc.constantFrom<unknown>([''], [5], [null], [[]], [{}], ['x'.repeat(129)], [true]),
        fc.integer({ min: 1001, max: 5000 }).map((n) => Array.from({ length: n }, (_, i) => `j${i}`)),
      )
      .map((ack) => over(`ack ${Array.isArray(ack) && ack.length > 10 ? `of ${ack.length} jtis` : JSON.stringify(ack).slice(0, 30)}`, (v) => ({ ...v, ack }))),
    fc
      .constantFrom<unknown>(
        [],
        'x',
        5,
        null,
        { j1: 'bad' },
        { j1: {} },
        { j1: { err: 'x' } },
        { j1: { description: 'x' } },
        { j1: { err: '', description: 'x' } },
        { j1: { err: 'e'.repeat(65), description: 'x' } },
        { j1: { err: 'x', description: 'd'.repeat(257) } },
        { j1: { err: 'x', description: 'y', extra: 1 } },
        { j1: { err: 5, description: 'y' } },
        { '': { err: 'x', description: 'y' } },
        { ['k'.repeat(129)]: { err: 'x', description: 'y' } },
      )
      .map((setErrs) => over(`setErrs ${JSON.stringify(setErrs).slice(0, 40)}`, (v) => ({ ...v, setErrs }))),
    // NUL, lone surrogates (as JSON escapes) and invalid UTF-8 where a receiver echoes text: the broker stores it, so 400 as anywhere.
    fc
      .record({ where: fc.constantFrom('ack', 'setErrs key', 'err', 'description'), ch: fc.constantFrom(...HOSTILE_CHARS), at: fc.nat() })
      .map(({ where, ch, at }) =>
        over(`${JSON.stringify(ch)} in ${where}`, (v) => {
          const text = insertAt('jti-1', at, ch)
          if (where === 'ack') return { ...v, ack: ['ok-jti', text] }
          if (where === 'setErrs key') return { ...v, setErrs: { [text]: { err: 'invalid_key', description: 'd' } } }
          return { ...v, setErrs: { 'jti-2': { err: where === 'err' ? text : 'invalid_key', description: where === 'description' ? text : 'd' } } }
        }),
      ),
    fc.record({ where: fc.constantFrom('ack', 'description'), bytes: fc.constantFrom(...INVALID_UTF8) }).map(({ where, bytes }) => ({
      label: `invalid UTF-8 (${Buffer.from(bytes).toString('hex')}) in ${where}`,
      bytes: (v: Record<string, unknown>) =>
        withBytes(where === 'ack' ? { ...v, ack: [MARK] } : { ...v, setErrs: { 'jti-3': { err: 'invalid_key', description: MARK } } }, bytes),
    })),
    fc.record({ n: fc.integer({ min: 100, max: 20_000 }), where: fc.constantFrom('ack', 'setErrs', 'unknown') }).map(({ n, where }) => ({
      label: `nested ${n} deep in ${where}`,
      bytes: () =>
        Buffer.from(
          where === 'ack'
            ? `{"ack":${'['.repeat(n)}${']'.repeat(n)}}`
            : where === 'setErrs'
              ? `{"setErrs":{"j":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}}`
              : `{"x":${'['.repeat(n)}${']'.repeat(n)}}`,
        ),
    })),
  )
}

/** Client authentication of a poll that must fail (RFC 8935 §2.3 `authentication_failed`, 401). */
function pollAuthFaults(): fc.Arbitrary<{ label: string; headers: Record<string, string>; secrets: string[] }> {
  const basicOf = (id: string, secret: string) => basic(id, secret)['authorization']!
  const as = (label: string, authorization: string | undefined, secrets: string[] = []) => ({
    label,
    headers: authorization === undefined ? {} : { authorization },
    secrets,
  })
  return fc.oneof(
    fc.constant(as('no Authorization', undefined)),
    // Few: each counts against the receiver's id in the back-off (200 free where it never succeeded).
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(`${RS_SECRET}x`, RS_SECRET.slice(0, -1), RS_SECRET.toUpperCase(), 'x')
        .map((s) => as('Basic: rs/api, wrong secret', basicOf(RESOURCE_SERVERS.api, s), [RS_SECRET])),
    },
    fc.constant(as('Basic: rs/other (a private_key_jwt client) with a secret', basicOf(RESOURCE_SERVERS.other, RS_SECRET), [RS_SECRET])),
    fc.constant(as('Basic: an agent (no receiver)', basicOf('secret-agent', SECRET), [SECRET])),
    fc
      .oneof(fc.string({ minLength: 1, maxLength: 30 }), fc.constantFrom('RS/API', 'rs/api ', ' rs/api', 'rs%2Fapi', 'rs'))
      .filter((id) => id !== RESOURCE_SERVERS.api && !id.includes(':'))
      .map((id) => as(`Basic: client ${JSON.stringify(id)}`, basicOf(id, RS_SECRET), [RS_SECRET])),
    fc
      .constantFrom(
        'Basic',
        'Basic ',
        'Basic !!!!',
        `Basic ${b64(RESOURCE_SERVERS.api)}`,
        `Basic ${b64(`${RESOURCE_SERVERS.api}:`)}`,
        `Basic ${b64(`:${RS_SECRET}`)}`,
        `Basic ${b64(`${RESOURCE_SERVERS.api}:${RS_SECRET}`)}===`,
        `Basic ${b64(`${RESOURCE_SERVERS.api}:${RS_SECRET}`)}, Basic ${b64('x:y')}`,
        `Basic\t${b64(`${RESOURCE_SERVERS.api}:${RS_SECRET}`)}`,
        `Bearer ${ADMIN_KEYS.admin}`,
        `Bearer ${RS_SECRET}`,
        'Digest username="rs/api"',
        RS_SECRET,
      )
      .map((value) => as(`malformed Authorization ${JSON.stringify(value.slice(0, 24))}`, value, [RS_SECRET, ADMIN_KEYS.admin])),
    // A made-up id: it keys no back-off counter, so these never add up to a block of rs/api.
    fc.integer({ min: 1_000, max: 12_000 }).map((n) => as(`huge Basic credentials (${n} bytes)`, basicOf('rs/huge', 's'.repeat(n)))),
    fc
      .record({
        part: fc.constantFrom('id', 'secret'),
        bytes: fc.constantFrom<readonly number[]>([0x00], ...INVALID_UTF8, [...Buffer.from('%00')], [...Buffer.from('%zz')]),
      })
      .map(({ part, bytes }) => {
        const id = part === 'id' ? Buffer.concat([Buffer.from(RESOURCE_SERVERS.api), Buffer.from(bytes)]) : Buffer.from(RESOURCE_SERVERS.api)
        const secret = part === 'secret' ? Buffer.concat([Buffer.from(RS_SECRET), Buffer.from(bytes)]) : Buffer.from(RS_SECRET)
        return as(`Basic: bytes ${Buffer.from(bytes).toString('hex')} in the ${part}`, `Basic ${b64(Buffer.concat([id, Buffer.from(':'), secret]))}`, [
          RS_SECRET,
        ])
      }),
  )
}

/**
 * POST /ssf/poll by the configured poll receiver (rs/api, Basic): valid
 * polls that answer at once (`returnImmediately`, or `maxEvents: 0`) with
 * junk around them, and faults in its size (413, first), its
 * authentication (401, before the body is looked at), its content type and
 * its body (400).
 */
export function ssfPollCase(ctx: HostileContext, faults: { auth: boolean; body: boolean }): fc.Arbitrary<HostileCase> {
  const validBody = fc
    .record(
      {
        maxEvents: fc.integer({ min: 0, max: 1000 }),
        ack: fc.array(pollJti, { maxLength: 20 }),
        setErrs: fc.dictionary(
          pollJti,
          fc.record({
            err: fc.constantFrom('invalid_key', 'invalid_issuer', 'x'.repeat(64)),
            description: fc.string({ maxLength: 256 }).filter((s) => s.isWellFormed() && !s.includes('\u0000')),
          }),
          { maxKeys: 3 },
        ),
      },
      { requiredKeys: [] },
    )
    // Answered at once: returnImmediately, or maxEvents 0 (acknowledge only); never a long poll.
    .chain((b) =>
      b.maxEvents === 0
        ? fc.constantFrom({ ...b }, { ...b, returnImmediately: false }, { ...b, returnImmediately: true })
        : fc.constant({ ...b, returnImmediately: true }),
    )
  return fc
    .record({
      body: validBody,
      bodyFault: faults.body ? fc.option(pollBodyFaults(), { nil: undefined, freq: 2 }) : fc.constant(undefined),
      auth: faults.auth ? fc.option(pollAuthFaults(), { nil: undefined, freq: 2 }) : fc.constant(undefined),
      scheme: fc.constantFrom('Basic', 'basic', 'BASIC'),
      type: fc.oneof(
        {
          weight: 6,
          arbitrary: fc
            .constantFrom('application/json', 'application/json; charset=utf-8', 'Application/JSON', 'application/json;charset=UTF-8')
            .map((t): { type: string | undefined; ok: boolean } => ({ type: t, ok: true })),
        },
        {
          weight: faults.body ? 1 : 0,
          arbitrary: fc
            .constantFrom(undefined, 'text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'application/secevent+jwt', '')
            .map((t) => ({ type: t, ok: false })),
        },
      ),
      oversize: faults.body ? fc.option(fc.integer({ min: 1, max: 64 * 1024 }), { nil: undefined, freq: 8 }) : fc.constant(undefined),
      headers: neutralHeaders,
    })
    .map((v) => {
      const labels: string[] = []
      let bytes: Uint8Array = Buffer.from(JSON.stringify(v.body))
      if (v.bodyFault !== undefined) {
        bytes = v.bodyFault.bytes(v.body)
        labels.push(v.bodyFault.label)
      }
      if (v.oversize !== undefined) {
        bytes = Buffer.from(JSON.stringify({ ...v.body, ack: ['x'.repeat(ctx.maxBodyBytes + v.oversize)] }))
        labels.push(`body ${v.oversize} bytes over the limit`)
      }
      const oversize = bytes.length > ctx.maxBodyBytes
      const headers: Record<string, string> = { ...v.headers }
      const secrets = [RS_SECRET]
      if (v.auth === undefined) headers['authorization'] = basic(RESOURCE_SERVERS.api, RS_SECRET)['authorization']!.replace(/^Basic/, v.scheme)
      else {
        Object.assign(headers, v.auth.headers)
        secrets.push(...v.auth.secrets)
        labels.push(v.auth.label)
      }
      if (v.type.type !== undefined) headers['content-type'] = v.type.type
      if (!v.type.ok) labels.push(`content type ${JSON.stringify(v.type.type ?? '(none)')}`)
      // The order the route decides in: the body limit (before the route: it reads the body), authentication, the type, the body.
      const expected: Outcome[] = oversize
        ? [SET_INVALID(413)]
        : v.auth !== undefined
          ? [SET_AUTH_FAILED]
          : !v.type.ok || v.bodyFault !== undefined
            ? [SET_INVALID()]
            : [POLLED]
      return hostileCase({
        label: `POST /ssf/poll: ${labels.join(' + ') || 'valid poll'}`,
        request: { method: 'POST', path: '/ssf/poll', headers, body: bytes },
        expected,
        secrets: [...new Set(secrets)].filter((s) => s.length >= 12),
      })
    })
}
