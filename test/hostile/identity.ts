/**
 * Hostile proofs and assertions of identity at the token endpoint, group
 * `identity`: DPoP proofs (RFC 9449 §4.3) in the `DPoP` header and in
 * `subject_token_dpop`, SPIFFE JWT-SVIDs as client assertions
 * (draft-ietf-oauth-spiffe-client-auth §4.1), and ID-JAGs redeemed with the
 * JWT bearer grant (RFC 7523 §2.1, draft-ietf-oauth-identity-assertion-authz-grant).
 *
 * Every refusal of one family is one error with one description, whatever
 * check failed (the answer is no oracle beyond what the RFCs say): a bad
 * proof 400 `invalid_dpop_proof` "DPoP proof is invalid", a proof without the
 * broker's nonce 400 `use_dpop_nonce` with the nonce in `DPoP-Nonce`
 * (RFC 9449 §8), a bad SVID 401 `invalid_client`, a bad ID-JAG 400
 * `invalid_grant`; a request for more scope or another resource than the
 * ID-JAG grants is `invalid_scope` / `invalid_target` (RFC 6749 §5.2,
 * RFC 8707 §2). The harness checks the description of each case, so a
 * refusal that told one check from another fails the property.
 *
 * The broker of the group trusts a SPIFFE trust domain (bundle in a file),
 * an ID-JAG issuer (its JWKS served on loopback, fetched as an enterprise
 * IdP's would be) and wants DPoP nonces, so that the nonce check, which
 * comes last, is reached by every proof that passes the others.
 */
import { createHash, createHmac, generateKeyPairSync, randomUUID, sign as cryptoSign, constants, type KeyObject } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { MAX_DPOP_PROOF_LENGTH } from '@mandate/verifier/dpop'
import { CLIENT_ASSERTION_TYPE_SPIFFE, GRANT_TYPE_JWT_BEARER } from '../../src/core/claims.js'
import { ASSERTION_UNACCEPTABLE, CLIENT_AUTH_FAILED, DPOP_PROOF_INVALID } from '../../src/core/errors.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import {
  AUDIENCE,
  basic,
  BROKER,
  CLIENT_ASSERTION_TYPE_JWT,
  GRANT_TYPE_TOKEN_EXCHANGE,
  OTHER_AUDIENCE,
  SECRET,
  TOKEN_TYPE,
  USER_ISSUER,
  WORKLOAD_ISSUER,
  type TestBroker,
  type TestBrokerOptions,
} from '../support/broker.js'
import {
  assertionRole,
  buildJwt,
  fault,
  finishForm,
  FORM_TYPES,
  INVALID_UTF8,
  jwt,
  jwtClaimFaults,
  jwtFormFaults,
  MARK,
  merge,
  neutralHeaders,
  partText,
  signerOf,
  validJwt,
  withBytes,
  type FormDraft,
  type FormFault,
  type HostileContext,
  type JwtRole,
  type Signer,
} from './arbitraries.js'
import { error, type HostileCase, type Outcome } from './harness.js'

const TOKEN_ENDPOINT = `${BROKER}/oauth2/token`
const TRUST_DOMAIN = 'svid.test'
const SVID_ID = `spiffe://${TRUST_DOMAIN}/ns/prod/sa/svid-agent`

/** The one answer to a bad proof, whichever check refused it (RFC 9449 §7.1, §12.2). */
const DPOP_INVALID = error(400, 'invalid_dpop_proof', DPOP_PROOF_INVALID)
/** No proof from an agent that must send one (RFC 9449 §5): the same error, and it says what is missing. */
const DPOP_MISSING = error(400, 'invalid_dpop_proof', 'this agent must send a DPoP proof')
/** A DPoP-bound subject token without its holder's proof (RFC 9449 §7). */
const SUBJECT_PROOF_MISSING = error(400, 'invalid_dpop_proof', 'the subject token is DPoP-bound: send its holder’s proof in subject_token_dpop')
const NONCE_DESCRIPTION = 'a DPoP nonce from the server is required: retry with the nonce in DPoP-Nonce'
const SVID_REFUSED = error(401, 'invalid_client', CLIENT_AUTH_FAILED)
const ID_JAG_REFUSED = error(400, 'invalid_grant', ASSERTION_UNACCEPTABLE)

// ---------------------------------------------------------------------------
// The group's broker: policies, a SPIFFE bundle file, an ID-JAG issuer on loopback

const policy = (agent: string, authentication: string, rest: string) => `agent: ${agent}
owner: security@example.com
purpose: hostile identity test agent
expires: 2099-01-01
authentication: ${authentication}
${rest}`
const BASIC_AUTH = `{ method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }`

export interface IdentitySetup {
  /** What `startTestBroker` adds for the group. */
  readonly options: Pick<TestBrokerOptions, 'policies' | 'spiffe' | 'idJag' | 'dpop'>
  /** The key of the trust domain's bundle (`use: jwt-svid`), and one that signs X.509-SVIDs only. */
  readonly svid: Signer
  readonly x509: Signer
  /** The ID-JAG issuer's key and identifier. */
  readonly idp: Signer
  readonly idpIssuer: string
  close(): Promise<void>
}

/** Keys, the bundle file, the ID-JAG issuer's JWKS endpoint and the policies, before the broker starts. */
export async function identitySetup(): Promise<IdentitySetup> {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-hostile-identity-'))
  const ec = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  const svid = signerOf('ES256', 'svid-1', ec())
  const x509 = signerOf('ES256', 'x509-1', ec())
  const idp = signerOf('ES256', 'idp-1', ec())
  // SPIRE publishes JWT authorities without `alg`, with `use` (SPIFFE bundle §4.1).
  const bundleKey = (s: Signer, use: string) => ({ ...s.publicJwk, alg: undefined, use })
  const bundleFile = join(dir, `${TRUST_DOMAIN}.bundle.json`)
  await writeFile(bundleFile, JSON.stringify({ keys: [bundleKey(svid, 'jwt-svid'), bundleKey(x509, 'x509-svid')], spiffe_sequence: 1 }))
  const jwks = JSON.stringify({ keys: [{ ...idp.publicJwk, use: 'sig' }] })
  const server: Server = createServer((req, res) => {
    if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
    else res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const idpIssuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const grants = `grants: [{ audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }]
token_ttl: { default: 300, max: 600 }
`
  return {
    options: {
      policies: {
        'dpop-agent.yaml': policy(
          'dpop-agent',
          BASIC_AUTH,
          `users: [{ issuer: ${USER_ISSUER} }]\n${grants}require_dpop: true\ndelegation: { max_depth: 3, sub_agents: [dpop-sub] }\n`,
        ),
        'dpop-sub.yaml': policy('dpop-sub', BASIC_AUTH, `${grants}delegation: { max_depth: 3 }\n`),
        'svid-agent.yaml': policy('svid-agent', `{ method: spiffe, spiffe_id: "${SVID_ID}" }`, `users: [{ issuer: ${USER_ISSUER} }]\n${grants}`),
        'xaa-agent.yaml': policy('xaa-agent', BASIC_AUTH, `users: [{ issuer: '${idpIssuer}' }]\n${grants}`),
      },
      spiffe: [{ trust_domain: TRUST_DOMAIN, bundle_file: bundleFile }],
      idJag: [{ issuer: idpIssuer, jwks_uri: `${idpIssuer}/jwks`, algorithms: ['ES256'], max_lifetime_seconds: 300 }],
      dpop: { nonces: true },
    },
    svid,
    x509,
    idp,
    idpIssuer,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(dir, { recursive: true, force: true })
    },
  }
}

// ---------------------------------------------------------------------------
// DPoP proof keys and proofs from their parts

/** A client's proof key: its public JWK (no `kid`, no `alg`) and RFC 7638 thumbprint. */
interface ProofKey {
  readonly alg: 'ES256' | 'ES384' | 'RS256' | 'PS256' | 'EdDSA'
  readonly privateKey: KeyObject
  readonly jwk: Record<string, unknown>
  readonly jkt: string
}

function proofKey(alg: ProofKey['alg']): ProofKey {
  const { privateKey, publicKey } =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'ES384'
        ? generateKeyPairSync('ec', { namedCurve: 'P-384' })
        : alg === 'EdDSA'
          ? generateKeyPairSync('ed25519')
          : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const jwk = publicKey.export({ format: 'jwk' }) as Record<string, string>
  // RFC 7638 §3.2: the required members only, in lexicographic order.
  const members =
    jwk['kty'] === 'EC'
      ? { crv: jwk['crv'], kty: 'EC', x: jwk['x'], y: jwk['y'] }
      : jwk['kty'] === 'RSA'
        ? { e: jwk['e'], kty: 'RSA', n: jwk['n'] }
        : { crv: jwk['crv'], kty: 'OKP', x: jwk['x'] }
  return { alg, privateKey, jwk, jkt: createHash('sha256').update(JSON.stringify(members)).digest('base64url') }
}

function signProof(alg: string, input: string, key: KeyObject): string {
  const data = Buffer.from(input)
  switch (alg) {
    case 'ES384':
      return cryptoSign('sha384', data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')
    case 'PS256':
      return cryptoSign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }).toString('base64url')
    case 'RS256':
      return cryptoSign('sha256', data, key).toString('base64url')
    case 'EdDSA':
      return cryptoSign(null, data, key).toString('base64url')
    default:
      return cryptoSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')
  }
}

/** `ath` (RFC 9449 §4.2): base64url SHA-256 of the access token. */
const ath = (token: string) => createHash('sha256').update(token).digest('base64url')

export interface IdentityContext {
  readonly base: HostileContext
  readonly setup: IdentitySetup
  /** Keys the agents prove with, one per algorithm the broker accepts. */
  readonly clients: readonly ProofKey[]
  /** The key the bound subject tokens are bound to, and a thief's. */
  readonly holder: ProofKey
  readonly thief: ProofKey
  /** The broker's current nonce (the clock stands still, so it stays current). */
  readonly nonce: string
  /** dpop-agent's tokens, bound to `holder`: subject tokens for dpop-sub. */
  readonly bound: readonly string[]
  /** Proofs, an SVID (with a `jti`) and an ID-JAG already accepted once. */
  readonly spentProof: string
  readonly spentSubjectProof: string
  readonly spentSvid: string
  readonly spentIdJag: string
}

/** Where a proof goes: whose key makes it, and the access token it comes with (`subject_token_dpop`). */
interface ProofTarget {
  readonly key: ProofKey
  readonly token?: string
}

interface ProofParts {
  readonly header?: Record<string, unknown>
  readonly claims?: Record<string, unknown>
  /** The header or payload as these bytes instead. */
  readonly rawHeader?: Uint8Array
  readonly rawPayload?: Uint8Array
  /** Signed with this key and algorithm instead of the target's. */
  readonly key?: KeyObject
  readonly alg?: string
  readonly signature?: string
}

/** A proof for the token endpoint by `t.key`, with a fresh `jti`, the nonce, and `ath` when a token comes with it. */
function proof(ictx: IdentityContext, t: ProofTarget, o: ProofParts = {}): string {
  const header = merge({ typ: 'dpop+jwt', alg: t.key.alg, jwk: t.key.jwk }, o.header)
  const claims = merge(
    {
      jti: `p-${ictx.base.next()}-${randomUUID()}`,
      htm: 'POST',
      htu: TOKEN_ENDPOINT,
      iat: ictx.base.now,
      nonce: ictx.nonce,
      ...(t.token === undefined ? {} : { ath: ath(t.token) }),
    },
    o.claims,
  )
  const input = `${partText(o.rawHeader ?? header)}.${partText(o.rawPayload ?? claims)}`
  return `${input}.${o.signature ?? signProof(o.alg ?? t.key.alg, input, o.key ?? t.key.privateKey)}`
}

/** A proof variant: how it is made for a target, and whether it must be refused, sent round for a nonce, or taken. */
interface ProofVariant {
  readonly label: string
  readonly answer: 'invalid' | 'nonce' | 'valid'
  make(t: ProofTarget): string
}

const variant = (label: string, answer: ProofVariant['answer'], make: (t: ProofTarget) => string): ProofVariant => ({ label, answer, make })
/** `depth` nested arrays around `inner`: JSON as deep as the proof's length allows. */
const nested = (depth: number, inner: unknown): unknown => {
  let v = inner
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

/** Proofs that change nothing the checks look at: every one must be taken (RFC 9449 §4.2, §4.3). */
function validProofs(ictx: IdentityContext, where: 'header' | 'subject'): fc.Arbitrary<ProofVariant> {
  const now = ictx.base.now
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant(variant('valid proof', 'valid', (t) => proof(ictx, t))) },
    fc
      .constantFrom(`${TOKEN_ENDPOINT}?x=1`, `${TOKEN_ENDPOINT}#f`, 'HTTPS://MANDATE.TEST/oauth2/token', 'https://mandate.test:443/oauth2/token')
      // §4.3 item 9: htu is compared without query and fragment, scheme and host case-insensitively (RFC 3986 §6.2.2).
      .map((htu) => variant(`valid proof, htu ${htu}`, 'valid', (t) => proof(ictx, t, { claims: { htu } }))),
    // Not older than the skew short of the window: the test broker's replay store began 60 s before its clock (else 503, it cannot vouch).
    fc
      .constantFrom(0.5, -54, -30.25, 4, 5)
      .map((d) => variant(`valid proof, iat now ${d >= 0 ? '+' : ''}${d} s (inside the window)`, 'valid', (t) => proof(ictx, t, { claims: { iat: now + d } }))),
    fc
      .record({
        claims: fc.dictionary(
          fc.string({ maxLength: 8 }).map((s) => `x_${s}`),
          fc.jsonValue({ maxDepth: 2 }),
          { maxKeys: 3 },
        ),
        header: fc.boolean(),
      })
      .map(({ claims, header }) =>
        variant(`valid proof, unknown claims${header ? ' and header parameters' : ''}`, 'valid', (t) =>
          proof(ictx, t, { claims, ...(header ? { header: { 'x-note': 'hi', kid: 'ignored' } } : {}) }),
        ),
      ),
    fc
      .integer({ min: 100, max: 2_500 })
      .map((depth) => variant(`valid proof, an unknown claim ${depth} arrays deep`, 'valid', (t) => proof(ictx, t, { claims: { x_deep: nested(depth, 1) } }))),
    // Without an access token, ath is not checked (§4.3 item 12 applies to proofs sent with one).
    ...(where === 'header' ? [fc.constant(variant('valid proof with an ath', 'valid', (t) => proof(ictx, t, { claims: { ath: ath('some-token') } })))] : []),
  )
}

/** Proofs some check of RFC 9449 §4.3 refuses (or, for the nonce faults, §8 sends round). */
function badProofs(ictx: IdentityContext, where: 'header' | 'subject'): fc.Arbitrary<ProofVariant> {
  const now = ictx.base.now
  const bad = (label: string, make: (t: ProofTarget) => string) => variant(label, 'invalid', make)
  const claim = (name: string, value: unknown) => bad(`${name} ${JSON.stringify(value) ?? 'absent'}`, (t) => proof(ictx, t, { claims: { [name]: value } }))
  const other = ictx.thief
  const families: fc.Arbitrary<ProofVariant>[] = [
    fc
      .constantFrom<unknown>('JWT', 'jwt', 'at+jwt', 'DPoP+jwt', 'DPOP+JWT', 'application/dpop+jwt', 'dpop+jwt ', 'dpop', '', 1, null, ['dpop+jwt'], undefined)
      .map((typ) => bad(`typ ${JSON.stringify(typ) ?? 'absent'}`, (t) => proof(ictx, t, { header: { typ } }))),
    fc.constantFrom('none', 'None', 'NONE').map((alg) => bad(`alg ${alg}, no signature`, (t) => proof(ictx, t, { header: { alg }, signature: '' }))),
    fc.constantFrom('HS256', 'HS384', 'HS512').map((alg) =>
      bad(`${alg} keyed with the public JWK (algorithm confusion)`, (t) => {
        const header = { typ: 'dpop+jwt', alg, jwk: t.key.jwk }
        const input = `${partText(header)}.${partText({ jti: randomUUID(), htm: 'POST', htu: TOKEN_ENDPOINT, iat: now, nonce: ictx.nonce })}`
        return `${input}.${createHmac(`sha${alg.slice(2)}`, JSON.stringify(t.key.jwk))
          .update(input)
          .digest('base64url')}`
      }),
    ),
    fc
      .constantFrom<unknown>('ES256K', 'RS1', 'A128KW', 'dir', 'es256', '', null, 1, ['ES256'], {}, undefined, 'ES256', 'ES384', 'RS256', 'PS256', 'EdDSA')
      // Another algorithm than the key's, over the key's own signature (ES512 where the list names the key's).
      .map((named) =>
        bad(`alg ${JSON.stringify(named) ?? 'absent'} (not the key's, or ES512), the key's own signature`, (t) =>
          proof(ictx, t, { header: { alg: named === t.key.alg ? 'ES512' : named } }),
        ),
      ),
    fc.constantFrom('d', 'p', 'q', 'dp', 'dq', 'qi', 'k').map((member) =>
      bad(`jwk with the private member ${member}`, (t) =>
        proof(ictx, t, {
          header: {
            jwk: {
              ...t.key.jwk,
              [member]: member === 'd' ? ((t.key.privateKey.export({ format: 'jwk' }) as Record<string, unknown>)['d'] ?? 'AQAB') : 'AQAB',
            },
          },
        }),
      ),
    ),
    fc
      .constantFrom('jwk of another key', 'signed by another key')
      .map((how) =>
        bad(how, (t) =>
          how === 'jwk of another key' ? proof(ictx, t, { header: { jwk: other.jwk } }) : proof(ictx, t, { key: other.privateKey, alg: other.alg }),
        ),
      ),
    fc
      .constantFrom<[string, (jwk: Record<string, unknown>) => unknown]>(
        ['absent', () => undefined],
        ['a string', (j) => JSON.stringify(j)],
        ['an array', (j) => [j]],
        ['null', () => null],
        ['kty oct', () => ({ kty: 'oct', k: 'c2VjcmV0' })],
        ['kty lower case', (j) => ({ ...j, kty: String(j['kty']).toLowerCase() })],
        ['kty absent', (j) => ({ ...j, kty: undefined })],
        ['x cut short', (j) => ({ ...j, ...(typeof j['x'] === 'string' ? { x: j['x'].slice(0, 10) } : { n: String(j['n']).slice(0, 40) }) })],
        ['another curve (RSA: another exponent)', (j) => (j['kty'] === 'RSA' ? { ...j, e: 'Aw' } : { ...j, crv: j['crv'] === 'P-256' ? 'P-384' : 'P-256' })],
        ['a member 200 arrays deep', (j) => ({ ...j, x: nested(200, 'x'), n: nested(200, 'n') })],
      )
      .map(([what, change]) => bad(`jwk ${what}`, (t) => proof(ictx, t, { header: { jwk: change(t.key.jwk) } }))),
    fc.constantFrom('jti', 'htm', 'htu', 'iat').map((name) => claim(name, undefined)),
    fc.constantFrom<unknown>('', 5, [], {}, null, true, 'j'.repeat(257)).map((v) => claim('jti', v)),
    fc.constantFrom<unknown>('GET', 'post', 'PUT', 'POST ', ' POST', '', 5, null, ['POST'], 'POST\u0000').map((v) => claim('htm', v)),
    fc
      .constantFrom<unknown>(
        'https://evil.test/oauth2/token',
        'https://mandate.test.evil.test/oauth2/token',
        'https://mandate.test@evil.test/oauth2/token',
        'http://mandate.test/oauth2/token',
        'wss://mandate.test/oauth2/token',
        'https://mandate.test:8443/oauth2/token',
        `${BROKER}/oauth2/introspect`,
        `${BROKER}/oauth2/token/`,
        `${BROKER}/OAUTH2/token`,
        `${BROKER}/oauth2/token%00`,
        '/oauth2/token',
        'mandate.test/oauth2/token',
        '',
        5,
        null,
        [TOKEN_ENDPOINT],
        { href: TOKEN_ENDPOINT },
      )
      .map((v) => claim('htu', v)),
    fc.integer({ min: 1, max: 1e9 }).map((k) => bad(`iat ${60 + k} s old (over the 60 s window)`, (t) => proof(ictx, t, { claims: { iat: now - 60 - k } }))),
    fc.integer({ min: 1, max: 1e9 }).map((k) => bad(`iat ${5 + k} s ahead (over the 5 s skew)`, (t) => proof(ictx, t, { claims: { iat: now + 5 + k } }))),
    fc.constantFrom<unknown>(String(now), null, true, [now], {}, '', 'NaN', -1, 0, Number.MAX_VALUE).map((v) => claim('iat', v)),
    fc.constantFrom('1e400', '-1e400').map((raw) =>
      bad(`iat ${raw} (not finite)`, (t) => {
        const text = proof(ictx, t, { claims: { iat: MARK } })
        const [h, p] = text.split('.') as [string, string]
        const payload = Buffer.from(Buffer.from(p, 'base64url').toString().replace(`"${MARK}"`, raw))
        return proof(ictx, t, { rawHeader: Buffer.from(Buffer.from(h, 'base64url')), rawPayload: payload })
      }),
    ),
    fc
      .integer({ min: 1, max: 7_000 })
      .map((extra) =>
        bad(`huge (over ${MAX_DPOP_PROOF_LENGTH} characters)`, (t) =>
          proof(ictx, t, { claims: { x_pad: 'a'.repeat(Math.ceil((MAX_DPOP_PROOF_LENGTH * 3) / 4) + extra) } }),
        ),
      ),
    fc
      .oneof(
        fc.string({ maxLength: 200 }).filter((s) => !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(s.trim())),
        fc.constantFrom('a.b', 'a.b.c.d', '..', 'a..c', 'e30.e30.', 'e30.e30.e30=', 'Bearer x.y.z', 'dpop'),
      )
      .map((junk) => bad(`not a compact JWS (${JSON.stringify(junk.slice(0, 30))})`, () => junk)),
    fc.constantFrom('padded', 'five parts', 'two parts').map((shape) =>
      bad(`a proof ${shape}`, (t) => {
        const p = proof(ictx, t)
        return shape === 'padded' ? `${p}=` : shape === 'five parts' ? `${p}.${p.split('.')[1]!}.x` : p.split('.').slice(0, 2).join('.')
      }),
    ),
    fc
      .constantFrom(', ', ',')
      .map((sep) => bad(`two proofs joined by ${JSON.stringify(sep)} (several DPoP fields)`, (t) => `${proof(ictx, t)}${sep}${proof(ictx, t)}`)),
    // Bytes no base64url holds, inside the value (a field's ends are trimmed): Latin-1 bytes that are not UTF-8 text on their own, a tab, a space.
    fc.record({ ch: fc.constantFrom('\u00ff', '\u0080', '\u00e9', '\t', ' ', '+', '/', '='), at: fc.nat() }).map(({ ch, at }) =>
      bad(`${JSON.stringify(ch)} inside the proof`, (t) => {
        const p = proof(ictx, t)
        const i = 1 + (at % (p.length - 1))
        return `${p.slice(0, i)}${ch}${p.slice(i)}`
      }),
    ),
    fc.record({ where: fc.constantFrom('header', 'payload'), bytes: fc.constantFrom(...INVALID_UTF8) }).map(({ where: part, bytes }) =>
      bad(`invalid UTF-8 (${Buffer.from(bytes).toString('hex')}) in the proof's ${part}`, (t) =>
        part === 'header'
          ? proof(ictx, t, { rawHeader: withBytes({ typ: 'dpop+jwt', alg: t.key.alg, jwk: t.key.jwk, 'x-note': MARK }, bytes) })
          : proof(ictx, t, {
              rawPayload: withBytes(
                { jti: MARK, htm: 'POST', htu: TOKEN_ENDPOINT, iat: now, nonce: ictx.nonce, ...(t.token === undefined ? {} : { ath: ath(t.token) }) },
                bytes,
              ),
            }),
      ),
    ),
    fc.constantFrom('altered', 'truncated', 'empty').map((how) =>
      bad(`${how} signature`, (t) => {
        const [h, p, s] = proof(ictx, t).split('.') as [string, string, string]
        const i = Math.floor(s.length / 2)
        return how === 'altered'
          ? `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`
          : how === 'truncated'
            ? `${h}.${p}.${s.slice(0, -6)}`
            : `${h}.${p}.`
      }),
    ),
    fc.constant(bad('a proof already used (RFC 9449 §11.1)', () => (where === 'header' ? ictx.spentProof : ictx.spentSubjectProof))),
    // The nonce is checked last (RFC 9449 §8): a proof bad otherwise too is refused as bad, not sent round.
    fc
      .constantFrom<unknown>(
        undefined,
        '',
        'junk',
        5,
        null,
        [ictx.nonce],
        `${ictx.nonce.split('.')[0]!}.${'A'.repeat(22)}`,
        `${(Number.parseInt(ictx.nonce, 36) - 2).toString(36)}.${ictx.nonce.split('.')[1]!}`,
      )
      .map((nonce) => variant(`nonce ${JSON.stringify(nonce) ?? 'absent'}`, 'nonce', (t) => proof(ictx, t, { claims: { nonce } }))),
    fc.constant(bad('no nonce, and iat too old', (t) => proof(ictx, t, { claims: { nonce: undefined, iat: now - 3600 } }))),
  ]
  if (where === 'subject') {
    families.push(
      fc
        .constantFrom<[string, (t: ProofTarget) => unknown]>(
          ['absent', () => undefined],
          ['of another token', () => ath(ictx.bound[1]!)],
          ['hex', (t) => createHash('sha256').update(t.token!).digest('hex')],
          ['base64 with padding', (t) => createHash('sha256').update(t.token!).digest('base64')],
          ['a number', () => 5],
          ['an array', (t) => [ath(t.token!)]],
          ['of the token with a trailing space', (t) => ath(`${t.token!} `)],
        )
        .map(([what, value]) => bad(`ath ${what}`, (t) => proof(ictx, t, { claims: { ath: value(t) } }))),
      // A good proof, but by a key the subject token is not bound to (RFC 9449 §7.1).
      fc
        .constantFrom('the thief’s key', 'the client’s own key')
        .map((whose) => bad(`a proof by ${whose}`, (t) => proof(ictx, { ...t, key: whose === 'the thief’s key' ? ictx.thief : ictx.clients[0]! }))),
    )
  }
  return fc.oneof(...families)
}

const answerOf = (ictx: IdentityContext, v: ProofVariant): Outcome =>
  v.answer === 'nonce' ? error(400, 'use_dpop_nonce', NONCE_DESCRIPTION, { 'dpop-nonce': ictx.nonce }) : DPOP_INVALID

function draft(params: [string, string][], headers: Record<string, string>, valid: readonly Outcome[]): FormDraft {
  return { path: '/oauth2/token', params, headers, labels: [], answers: [], valid }
}

/**
 * Token exchanges with a DPoP proof in the `DPoP` header (RFC 9449 §5):
 * secret-agent (a proof optional) or dpop-agent (`require_dpop`), with a
 * valid proof (bound token), none, or one from `badProofs`.
 */
export function dpopHeaderCase(ictx: IdentityContext): fc.Arbitrary<HostileCase> {
  const ctx = ictx.base
  return fc
    .record({
      agent: fc.constantFrom('secret-agent', 'dpop-agent'),
      key: fc.constantFrom(...ictx.clients),
      proof: fc.oneof(
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 3, arbitrary: validProofs(ictx, 'header') },
        { weight: 8, arbitrary: badProofs(ictx, 'header') },
      ),
      scope: fc.constantFrom(undefined, 'read', 'read write'),
      contentType: fc.constantFrom(...FORM_TYPES),
      headers: neutralHeaders,
      subject: fc.constantFrom(...ctx.userTokens),
    })
    .map((v) => {
      const valid: Outcome[] =
        v.proof === undefined ? (v.agent === 'dpop-agent' ? [DPOP_MISSING] : [{ kind: 'token' }]) : [{ kind: 'token', tokenType: 'DPoP', jkt: v.key.jkt }]
      const d = draft(
        [
          ['grant_type', GRANT_TYPE_TOKEN_EXCHANGE],
          ['subject_token', v.subject],
          ['subject_token_type', TOKEN_TYPE.accessToken],
          ['audience', AUDIENCE],
          ...(v.scope === undefined ? [] : [['scope', v.scope] as [string, string]]),
        ],
        { ...v.headers, 'content-type': v.contentType, ...basic(v.agent, SECRET) },
        valid,
      )
      d.labels.push(`${v.agent}, ${v.key.alg} key: ${v.proof?.label ?? 'no DPoP header'}`)
      if (v.proof !== undefined) {
        d.headers['dpop'] = v.proof.make({ key: v.key })
        if (v.proof.answer !== 'valid') d.answers.push(answerOf(ictx, v.proof))
      }
      return finishForm(d, ctx)
    })
}

/**
 * dpop-sub exchanging a token bound to dpop-agent's key (RFC 9449 §7): the
 * holder's proof in `subject_token_dpop`, valid, absent or bad; the
 * sub-agent's own proof in the header or none (its token bound, or bearer).
 */
export function subjectProofCase(ictx: IdentityContext): fc.Arbitrary<HostileCase> {
  const ctx = ictx.base
  const subject = ictx.bound[0]!
  return fc
    .record({
      own: fc.option(fc.constantFrom(...ictx.clients), { nil: undefined }),
      proof: fc.oneof(
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 3, arbitrary: validProofs(ictx, 'subject') },
        { weight: 8, arbitrary: badProofs(ictx, 'subject') },
      ),
      contentType: fc.constantFrom(...FORM_TYPES),
      headers: neutralHeaders,
    })
    .map((v) => {
      const issued: Outcome = v.own === undefined ? { kind: 'token' } : { kind: 'token', tokenType: 'DPoP', jkt: v.own.jkt }
      const d = draft(
        [
          ['grant_type', GRANT_TYPE_TOKEN_EXCHANGE],
          ['subject_token', subject],
          ['subject_token_type', TOKEN_TYPE.accessToken],
          ['audience', AUDIENCE],
          ['scope', 'read'],
        ],
        { ...v.headers, 'content-type': v.contentType, ...basic('dpop-sub', SECRET) },
        v.proof === undefined ? [SUBJECT_PROOF_MISSING] : [issued],
      )
      d.labels.push(`dpop-sub${v.own === undefined ? '' : ` with its own ${v.own.alg} proof`}, subject_token_dpop: ${v.proof?.label ?? 'absent'}`)
      if (v.own !== undefined) d.headers['dpop'] = proof(ictx, { key: v.own })
      if (v.proof !== undefined) {
        const made = v.proof.make({ key: ictx.holder, token: subject })
        d.params.push(['subject_token_dpop', made])
        // RFC 6749 §3.1: a parameter without a value is as if omitted.
        if (made === '') d.answers.push(SUBJECT_PROOF_MISSING)
        else if (v.proof.answer !== 'valid') d.answers.push(answerOf(ictx, v.proof))
      }
      return finishForm(d, ctx)
    })
}

// ---------------------------------------------------------------------------
// SPIFFE JWT-SVIDs as client assertions

/** svid-agent's JWT-SVID (SPIFFE JWT-SVID §3): ES256 by the trust domain's key, no `iss`, no `iat`, no `jti`. */
export function svidRole(ictx: IdentityContext): JwtRole {
  const ctx = ictx.base
  const { svid, x509 } = ictx.setup
  const role: JwtRole = {
    field: 'client_assertion',
    signer: svid,
    refused: [SVID_REFUSED],
    header: () => ({ alg: 'ES256', kid: svid.kid, typ: 'JWT' }),
    claims: () => ({ sub: SVID_ID, aud: BROKER, exp: ctx.now + 120 }),
    required: ['sub', 'aud', 'exp'],
    stringClaims: ['sub', 'jti'],
    maxLifetime: ctx.assertionMaxLifetime,
    validTyps: [undefined, 'JWT', 'jwt', 'JOSE'],
    wrongTyps: ['at+jwt', 'dpop+jwt', 'oauth-id-jag+jwt', 'secevent+jwt', 'client-authentication+jwt', '', 1, null, ['JWT']],
    wrongIssuers: [
      { sub: 'spiffe://other.test/ns/prod/sa/svid-agent' },
      { sub: `https://${TRUST_DOMAIN}/ns/prod/sa/svid-agent` },
      { sub: `spiffe://${TRUST_DOMAIN}/ns/dev/sa/svid-agent` },
      { sub: `spiffe://${TRUST_DOMAIN}` },
      { sub: `spiffe://${TRUST_DOMAIN}/` },
      { sub: `${SVID_ID}/` },
      { sub: `spiffe://${TRUST_DOMAIN}/ns/prod/sa/../sa/svid-agent` },
      { sub: `spiffe://${TRUST_DOMAIN}:443/ns/prod/sa/svid-agent` },
      { sub: `${SVID_ID}?x=1` },
      { sub: SVID_ID.toUpperCase() },
      { sub: 'svid-agent' },
    ],
    wrongAudiences: [OTHER_AUDIENCE, [OTHER_AUDIENCE], `${BROKER}/`, BROKER.toUpperCase(), USER_ISSUER, AUDIENCE, WORKLOAD_ISSUER],
    foreign: () => [ctx.userTokens[0]!, buildJwt(assertionRole(ctx)).token],
    own: [
      fc
        .constantFrom('x509-svid key under its kid', 'x509-svid key under the jwt-svid kid', 'jwt-svid key under the x509-svid kid')
        .map((how) =>
          jwt(`signed by ${how}`, () =>
            how === 'x509-svid key under its kid'
              ? buildJwt(role, { header: { kid: x509.kid }, signer: x509 }).token
              : how === 'x509-svid key under the jwt-svid kid'
                ? buildJwt(role, { signer: x509 }).token
                : buildJwt(role, { header: { kid: x509.kid } }).token,
          ),
        ),
      fc.constant(jwt('an SVID already used, its jti spent (RFC 7523 §3 item 7)', () => ictx.spentSvid)),
    ],
  }
  return role
}

/** A token exchange by svid-agent authenticating with `svid` (client_assertion_type jwt-spiffe). */
function svidDraft(ictx: IdentityContext, svid: string, v: { contentType: string; headers: Record<string, string>; subject: string }): FormDraft {
  return draft(
    [
      ['grant_type', GRANT_TYPE_TOKEN_EXCHANGE],
      ['subject_token', v.subject],
      ['subject_token_type', TOKEN_TYPE.accessToken],
      ['audience', AUDIENCE],
      ['client_assertion_type', CLIENT_ASSERTION_TYPE_SPIFFE],
      ['client_assertion', svid],
    ],
    { ...v.headers, 'content-type': v.contentType },
    [{ kind: 'token' }],
  )
}

/** Faults around a valid SVID: client_id of another agent, the wrong assertion type. */
function svidRequestFaults(): fc.Arbitrary<FormFault> {
  return fc.oneof(
    fc
      .constantFrom('secret-agent', 'SVID-AGENT', 'svid-agent ', 'xaa-agent')
      .map((id) =>
        fault('client_id', `client_id ${JSON.stringify(id)} (not the agent the SVID names)`, [SVID_REFUSED], (d) => d.params.push(['client_id', id])),
      ),
    fc.constant(
      fault('client_assertion_type', 'the SVID as a private_key_jwt assertion (RFC 7523 type)', [SVID_REFUSED], (d) => {
        d.params = d.params.map(([n, val]) => (n === 'client_assertion_type' ? [n, CLIENT_ASSERTION_TYPE_JWT] : [n, val]))
      }),
    ),
  )
}

/**
 * A valid DPoP proof by one of the client keys, or none: every grant binds
 * its token to the proof's key (RFC 9449 §5), so a request valid otherwise
 * must get a `DPoP` token bound to it.
 */
function withProof(ictx: IdentityContext): fc.Arbitrary<(d: FormDraft) => void> {
  return fc
    .record({
      key: fc.option(fc.constantFrom(...ictx.clients), { nil: undefined, freq: 2 }),
      bad: fc.oneof({ weight: 7, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: badProofs(ictx, 'header') }),
    })
    .map(({ key, bad }) => (d: FormDraft) => {
      if (key === undefined) return
      if (bad !== undefined) {
        // A bad proof refuses the request whatever else is wrong with it (either refusal is right).
        d.headers['dpop'] = bad.make({ key })
        d.labels.push(`with a ${key.alg} DPoP proof: ${bad.label}`)
        d.answers.push(answerOf(ictx, bad))
        return
      }
      d.headers['dpop'] = proof(ictx, { key })
      d.labels.push(`with a ${key.alg} DPoP proof`)
      d.valid = [{ kind: 'token', tokenType: 'DPoP', jkt: key.jkt }]
    })
}

/** JWT-SVID client authentication with `faults` (form or claims), valid SVIDs (with `typ` spellings, unknown claims) in between. */
export function svidCase(ictx: IdentityContext, kind: 'form' | 'claims'): fc.Arbitrary<HostileCase> {
  const role = svidRole(ictx)
  const faults = kind === 'form' ? jwtFormFaults(ictx.base, role) : jwtClaimFaults(ictx.base, role)
  const good = validJwt(ictx.base, role)
  return fc
    .record({
      svid: fc.oneof({ weight: 1, arbitrary: good.map((f) => ({ f, bad: false })) }, { weight: 5, arbitrary: faults.map((f) => ({ f, bad: true })) }),
      around: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: svidRequestFaults() }),
      contentType: fc.constantFrom(...FORM_TYPES),
      headers: neutralHeaders,
      subject: fc.constantFrom(...ictx.base.userTokens),
      dpop: withProof(ictx),
    })
    .map((v) => {
      const d = svidDraft(ictx, v.svid.f.token(), v)
      d.labels.push(`client_assertion (SVID): ${v.svid.f.label}`)
      v.dpop(d)
      if (v.svid.bad) d.answers.push(SVID_REFUSED)
      // Around a valid SVID only: a valid token of another role with the other assertion type is that role's valid assertion.
      if (!v.svid.bad) v.around?.apply(d)
      return finishForm(d, ictx.base)
    })
}

// ---------------------------------------------------------------------------
// ID-JAGs with the JWT bearer grant

/** xaa-agent's ID-JAG: ES256 by the trusted IdP, `typ` oauth-id-jag+jwt, 300 s, scope `read write`, no resource. */
export function idJagRole(ictx: IdentityContext): JwtRole {
  const ctx = ictx.base
  const { idp, idpIssuer } = ictx.setup
  const role: JwtRole = {
    field: 'assertion',
    signer: idp,
    refused: [ID_JAG_REFUSED],
    header: () => ({ alg: 'ES256', kid: idp.kid, typ: 'oauth-id-jag+jwt' }),
    claims: () => ({
      iss: idpIssuer,
      sub: 'alice',
      aud: BROKER,
      client_id: 'xaa-agent',
      jti: `g-${ctx.next()}-${randomUUID()}`,
      iat: ctx.now,
      // Under the issuer's 300 s, so that a fractional exp (validJwt) stays inside it.
      exp: ctx.now + 240,
      scope: 'read write',
    }),
    required: ['iss', 'sub', 'aud', 'client_id', 'jti', 'exp', 'iat'],
    stringClaims: ['iss', 'sub', 'jti', 'client_id', 'scope'],
    maxLifetime: 300,
    validTyps: ['oauth-id-jag+jwt', 'OAuth-ID-JAG+JWT', 'application/oauth-id-jag+jwt'],
    wrongTyps: [
      'JWT',
      'jwt',
      'at+jwt',
      'id-jag+jwt',
      'oauth-id-jag',
      'oauth-id-jag+jwt ',
      'dpop+jwt',
      'secevent+jwt',
      '',
      1,
      null,
      ['oauth-id-jag+jwt'],
      undefined,
    ],
    wrongIssuers: [
      { iss: USER_ISSUER },
      { iss: 'https://evil.test' },
      { iss: `${idpIssuer}/` },
      { iss: idpIssuer.toUpperCase() },
      { iss: BROKER },
      { iss: WORKLOAD_ISSUER },
      { iss: '' },
    ],
    wrongAudiences: [OTHER_AUDIENCE, [OTHER_AUDIENCE], `${BROKER}/`, BROKER.toUpperCase(), AUDIENCE, idpIssuer],
    foreign: () => [ctx.userTokens[0]!, buildJwt(assertionRole(ctx)).token],
    own: [
      fc
        .constantFrom<unknown>('secret-agent', 'XAA-AGENT', 'xaa-agent ', 'dpop-agent', 'svid-agent')
        .map((clientId) =>
          jwt(`client_id ${JSON.stringify(clientId)} (another agent's ID-JAG)`, () => buildJwt(role, { claims: { client_id: clientId } }).token),
        ),
      fc
        .integer({ min: 1, max: 3_600 })
        .map((k) =>
          jwt(`exp − iat ${300 + k} s (over the issuer's 300 s)`, () => buildJwt(role, { claims: { iat: ctx.now - k - 100, exp: ctx.now + 200 } }).token),
        ),
      fc.constant(jwt('an ID-JAG already redeemed, its jti spent', () => ictx.spentIdJag)),
      fc
        .constantFrom<unknown>('read  write', ' read', 'read ', 'a"b', 'a\\b', '', 'read\twrite', 'réad', 5, ['read'], null)
        .map((scope) => jwt(`scope ${JSON.stringify(scope)} (not RFC 6749 §3.3 syntax)`, () => buildJwt(role, { claims: { scope } }).token)),
      fc
        .constantFrom<unknown>('not a uri', '', [], [1], 5, null, {}, [AUDIENCE, 'nope'], '/relative')
        .map((resource) => jwt(`resource ${JSON.stringify(resource)} (not absolute URIs)`, () => buildJwt(role, { claims: { resource } }).token)),
    ],
  }
  return role
}

/** Requests for more than the ID-JAG grants: another scope (RFC 6749 §5.2 invalid_scope), another resource (RFC 8707 §2 invalid_target). */
function idJagRequestFaults(role: JwtRole): fc.Arbitrary<{ label: string; answer: Outcome; jag: () => string; params: [string, string][] }> {
  const sign = (claims: Record<string, unknown>) => () => buildJwt(role, { claims }).token
  return fc.oneof(
    fc.constantFrom('write', 'read write', 'admin').map((scope) => ({
      label: `scope ${scope} beyond the ID-JAG's read`,
      answer: error(400, 'invalid_scope'),
      jag: sign({ scope: 'read' }),
      params: [['scope', scope]] as [string, string][],
    })),
    fc.constantFrom(OTHER_AUDIENCE, 'https://elsewhere.test').map((resource) => ({
      label: `resource ${resource} beside the ID-JAG's ${AUDIENCE}`,
      answer: error(400, 'invalid_target'),
      jag: sign({ resource: AUDIENCE }),
      params: [['resource', resource]] as [string, string][],
    })),
  )
}

/** xaa-agent redeeming an ID-JAG (JWT bearer grant) with `faults` (form or claims), valid ones in between. */
export function idJagCase(ictx: IdentityContext, kind: 'form' | 'claims'): fc.Arbitrary<HostileCase> {
  const role = idJagRole(ictx)
  const faults = kind === 'form' ? jwtFormFaults(ictx.base, role) : jwtClaimFaults(ictx.base, role)
  const good = validJwt(ictx.base, role)
  const beyond = idJagRequestFaults(role)
  return fc
    .record({
      jag: fc.oneof(
        {
          weight: 2,
          arbitrary: good.map((f) => ({ label: f.label, make: () => f.token(), answer: undefined as Outcome | undefined, params: [] as [string, string][] })),
        },
        { weight: 8, arbitrary: faults.map((f) => ({ label: f.label, make: () => f.token(), answer: ID_JAG_REFUSED, params: [] as [string, string][] })) },
        { weight: 1, arbitrary: beyond.map((b) => ({ label: b.label, make: b.jag, answer: b.answer, params: b.params })) },
      ),
      scope: fc.constantFrom(undefined, 'read', 'write', 'read write'),
      contentType: fc.constantFrom(...FORM_TYPES),
      headers: neutralHeaders,
      dpop: withProof(ictx),
    })
    .map((v) => {
      const own = new Set(v.jag.params.map(([n]) => n))
      const d = draft(
        [
          ['grant_type', GRANT_TYPE_JWT_BEARER],
          ['assertion', v.jag.make()],
          ...(own.has('resource') ? [] : [['resource', AUDIENCE] as [string, string]]),
          ...(own.has('scope') || v.scope === undefined ? [] : [['scope', v.scope] as [string, string]]),
          ...v.jag.params,
        ],
        { ...v.headers, 'content-type': v.contentType, ...basic('xaa-agent', SECRET) },
        [{ kind: 'token' }],
      )
      d.labels.push(`assertion (ID-JAG): ${v.jag.label}`)
      v.dpop(d)
      if (v.jag.answer !== undefined) d.answers.push(v.jag.answer)
      return finishForm(d, ictx.base)
    })
}

// ---------------------------------------------------------------------------
// The context: a nonce, bound tokens, and a proof, an SVID and an ID-JAG spent once

/** Keys, the broker's nonce, tokens bound to `holder`, and credentials spent once, from the running broker. */
export async function identityContext(b: TestBroker, base: HostileContext, setup: IdentitySetup): Promise<IdentityContext> {
  const clients = (['ES256', 'ES384', 'RS256', 'PS256', 'EdDSA'] as const).map(proofKey)
  const holder = proofKey('ES256')
  const send = async (d: FormDraft) => {
    const c = finishForm(d, base)
    const res = await b.mandate.app.request(c.request.path, { method: 'POST', headers: c.request.headers, body: c.request.body! })
    return { res, body: (await res.json()) as Record<string, unknown> }
  }
  const ok = async (what: string, d: FormDraft) => {
    const { res, body } = await send(d)
    if (res.status !== 200 || typeof body['access_token'] !== 'string') {
      throw new Error(`the hostile identity setup's ${what} failed: ${res.status} ${JSON.stringify(body)}`)
    }
    return body['access_token']
  }
  const exchange = (agent: string, subject: string, extra: [string, string][] = []) =>
    draft(
      [['grant_type', GRANT_TYPE_TOKEN_EXCHANGE], ['subject_token', subject], ['subject_token_type', TOKEN_TYPE.accessToken], ['audience', AUDIENCE], ...extra],
      { 'content-type': FORM_TYPES[0], ...basic(agent, SECRET) },
      [],
    )
  // Without a nonce: the answer carries one (RFC 9449 §8).
  const partial = {
    base,
    setup,
    clients,
    holder,
    thief: proofKey('ES256'),
    nonce: '',
    bound: [],
    spentProof: '',
    spentSubjectProof: '',
    spentSvid: '',
    spentIdJag: '',
  }
  const first = exchange('dpop-agent', base.userTokens[0]!)
  first.headers['dpop'] = proof({ ...partial, nonce: 'none' }, { key: holder }, { claims: { nonce: undefined } })
  const asked = await send(first)
  const nonce = asked.res.headers.get('dpop-nonce')
  if (asked.body['error'] !== 'use_dpop_nonce' || nonce === null)
    throw new Error(`the hostile identity setup got no DPoP nonce: ${asked.res.status} ${JSON.stringify(asked.body)}`)
  let ictx: IdentityContext = { ...partial, nonce }
  const bound: string[] = []
  let spentProof = ''
  for (let i = 0; i < 3; i++) {
    const d = exchange('dpop-agent', base.userTokens[i]!)
    d.headers['dpop'] = proof(ictx, { key: holder })
    spentProof ||= d.headers['dpop']
    bound.push(await ok('bound token', d))
  }
  ictx = { ...ictx, bound, spentProof }
  const spentSubjectProof = proof(ictx, { key: holder, token: bound[0]! })
  await ok(
    'exchange of a bound token',
    exchange('dpop-sub', bound[0]!, [
      ['scope', 'read'],
      ['subject_token_dpop', spentSubjectProof],
    ]),
  )
  ictx = { ...ictx, spentSubjectProof }
  const spentSvid = buildJwt(svidRole(ictx), { claims: { jti: `svid-${randomUUID()}`, iat: base.now } }).token
  await ok('SVID', svidDraft(ictx, spentSvid, { contentType: FORM_TYPES[0], headers: {}, subject: base.userTokens[0]! }))
  const spentIdJag = buildJwt(idJagRole(ictx)).token
  await ok(
    'ID-JAG',
    draft(
      [
        ['grant_type', GRANT_TYPE_JWT_BEARER],
        ['assertion', spentIdJag],
        ['resource', AUDIENCE],
      ],
      { 'content-type': FORM_TYPES[0], ...basic('xaa-agent', SECRET) },
      [],
    ),
  )
  return { ...ictx, spentSvid, spentIdJag }
}

/** The group's context from a property's: only the `identity` group's broker has one. */
export function identityOf(ctx: HostileContext): IdentityContext {
  if (ctx.identity === undefined) throw new Error('an identity property runs only on the identity group’s broker')
  return ctx.identity
}
