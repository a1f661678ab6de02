/**
 * The subject verifier on its own, with issuers whose key sets the test
 * holds in memory and a fixed clock: what it accepts as a subject token, and
 * that its verified-token cache never outlives the key a token was verified with.
 */
import { exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import type { MandateClaims } from '../../../src/core/claims.js'
import { generateSigningJwk, signingKeysFromJwks, type SigningKeys } from '../../../src/tokens/keys.js'
import { createTokenMinter } from '../../../src/tokens/mint.js'
import { createSubjectVerifier, type SubjectVerifierOptions } from '../../../src/tokens/subject.js'
import { createIssuerRegistry, createLocalKeyResolver, type TrustedIssuer } from '../../../src/tokens/upstream.js'
import { userAccessToken } from '../../support/tokens.js'

const NOW = 1_800_000_000
const BROKER = 'https://mandate.test'
const IDP = 'https://idp.test'

let idpKey: CryptoKey
let idpJwk: JWK
let selfA: SigningKeys
let selfB: SigningKeys

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true })
  idpKey = pair.privateKey
  idpJwk = { ...(await exportJWK(pair.publicKey)), kid: 'idp-1', alg: 'ES256' }
  selfA = await signingKeysFromJwks({ keys: [await generateSigningJwk()] }, NOW)
  selfB = await signingKeysFromJwks({ keys: [await generateSigningJwk()] }, NOW)
})

/** A user issuer held in memory, with `over` on top of a strict at+jwt profile. */
function idp(over: Partial<TrustedIssuer> = {}): TrustedIssuer {
  return { issuer: IDP, jwksUri: undefined, algorithms: ['ES256'], audience: BROKER, typ: ['at+jwt'], ...over }
}

function verifier(issuer: TrustedIssuer, over: Partial<SubjectVerifierOptions> = {}) {
  return createSubjectVerifier({
    selfIssuer: BROKER,
    selfKeys: selfA,
    users: createIssuerRegistry([issuer], () => createLocalKeyResolver({ keys: [idpJwk] })),
    now: () => NOW,
    skew: 30,
    maxAge: 86_400,
    cacheSize: 100,
    ...over,
  })
}

function userToken(claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return userAccessToken(
    { privateKey: idpKey, alg: 'ES256', kid: 'idp-1' },
    { iss: IDP, sub: 'alice', aud: BROKER, ...claims },
    { now: NOW, lifetime: 3600, header },
  )
}

describe('a cached Mandate token (re-delegation)', () => {
  it('is refused once the signing key it was verified with leaves the broker’s key set', async () => {
    let self = selfA
    const selfKeys: SigningKeys = {
      get current() {
        return self.current
      },
      get all() {
        return self.all
      },
      get jwks() {
        return self.jwks
      },
      byKid: (kid) => self.byKid(kid),
    }
    const claims: MandateClaims = {
      iss: BROKER,
      sub: 'alice',
      sub_id: { format: 'iss_sub', iss: IDP, sub: 'alice' },
      aud: 'https://api.test',
      client_id: 'agent',
      act: { sub: 'agent' },
      scope: 'read',
      iat: NOW,
      nbf: NOW,
      exp: NOW + 300,
      jti: 'j-1',
    } as MandateClaims
    const token = await createTokenMinter(selfA).mint(claims)
    const subjects = verifier(idp(), { selfKeys })
    await expect(subjects.verify(token)).resolves.toMatchObject({ kind: 'mandate' })
    await expect(subjects.verify(token)).resolves.toMatchObject({ kind: 'mandate' })

    self = selfB // the key file now holds another key only
    await expect(subjects.verify(token)).rejects.toMatchObject({ code: 'invalid_request', detail: 'unknown_kid' })
  })
})

/** A Mandate token minted with `keys`, claims as the exchange mints them. */
function mandateToken(keys: SigningKeys, over: Partial<Record<keyof MandateClaims, unknown>> = {}): Promise<string> {
  const claims = {
    iss: BROKER,
    sub: 'alice',
    sub_id: { format: 'iss_sub', iss: IDP, sub: 'alice' },
    aud: 'https://api.test',
    client_id: 'agent',
    act: { sub: 'agent' },
    scope: 'read',
    iat: NOW,
    nbf: NOW,
    exp: NOW + 300,
    jti: `j-${Math.random()}`,
    ...over,
  } as MandateClaims
  return createTokenMinter(keys).mint(claims)
}

/** `keys`, whose public keys count the signature checks made with them (a cache hit makes none). */
function countingKeys(keys: SigningKeys): { readonly keys: SigningKeys; readonly checks: () => number } {
  let checks = 0
  const counted = new Map(
    keys.all.map((k) => [
      k.kid,
      Object.create(k, {
        publicKey: {
          get: () => {
            checks++
            return k.publicKey
          },
        },
      }) as typeof k,
    ]),
  )
  const byKid = (kid: string) => counted.get(kid)
  return { keys: { current: keys.current, all: [...counted.values()], jwks: keys.jwks, byKid }, checks: () => checks }
}

describe('verifyOwn: the broker’s own tokens at forward auth, introspection and revocation', () => {
  it('checks a token’s signature once, then answers from the cache with the same claims', async () => {
    const { keys, checks } = countingKeys(selfA)
    const token = await mandateToken(selfA)
    const subjects = verifier(idp(), { selfKeys: keys })
    const first = await subjects.verifyOwn(token)
    expect(first).toMatchObject({ iss: BROKER, client_id: 'agent', aud: 'https://api.test' })
    expect(checks()).toBe(1)
    for (let i = 0; i < 5; i++) expect(await subjects.verifyOwn(token)).toEqual(first)
    expect(checks()).toBe(1)
    // One cache for both uses: the exchange's verify finds it too.
    await expect(subjects.verify(token)).resolves.toMatchObject({ kind: 'mandate', claims: first })
    expect(checks()).toBe(1)
  })

  it('without a cache (cacheSize 0) checks the signature every time', async () => {
    const { keys, checks } = countingKeys(selfA)
    const token = await mandateToken(selfA)
    const subjects = verifier(idp(), { selfKeys: keys, cacheSize: 0 })
    for (let i = 0; i < 3; i++) expect(await subjects.verifyOwn(token)).toBeDefined()
    expect(checks()).toBe(3)
  })

  it('never outlives the token: undefined from its exp on, with no skew, though it was cached', async () => {
    let now = NOW
    const token = await mandateToken(selfA, { exp: NOW + 60 })
    const subjects = verifier(idp(), { now: () => now })
    expect(await subjects.verifyOwn(token)).toBeDefined()
    now = NOW + 59
    expect(await subjects.verifyOwn(token)).toBeDefined()
    now = NOW + 60
    expect(await subjects.verifyOwn(token)).toBeUndefined()
  })

  it('judges a token cached by the exchange (verified with the skew) with no skew', async () => {
    let now = NOW + 70
    const token = await mandateToken(selfA, { exp: NOW + 60 })
    const subjects = verifier(idp(), { now: () => now })
    // Within the 30 s skew the exchange accepts it (and caches it); forward auth must not.
    await expect(subjects.verify(token)).resolves.toMatchObject({ kind: 'mandate' })
    expect(await subjects.verifyOwn(token)).toBeUndefined()
    now = NOW - 20
    const early = await mandateToken(selfA, { iat: NOW, nbf: NOW })
    await expect(subjects.verify(early)).resolves.toMatchObject({ kind: 'mandate' })
    expect(await subjects.verifyOwn(early)).toBeUndefined()
    now = NOW
    expect(await subjects.verifyOwn(early)).toBeDefined()
  })

  it('is undefined once the key that verified it leaves the key set, or new material takes its kid', async () => {
    let self = selfA
    const selfKeys: SigningKeys = {
      get current() {
        return self.current
      },
      get all() {
        return self.all
      },
      get jwks() {
        return self.jwks
      },
      byKid: (kid) => self.byKid(kid),
    }
    const token = await mandateToken(selfA)
    const subjects = verifier(idp(), { selfKeys })
    expect(await subjects.verifyOwn(token)).toBeDefined()
    self = selfB
    expect(await subjects.verifyOwn(token)).toBeUndefined()
    // The same kid with other key material (a keys file replaced in place): verified afresh, and refused.
    self = selfA
    expect(await subjects.verifyOwn(token)).toBeDefined()
    const impostor = await signingKeysFromJwks({ keys: [{ ...(await generateSigningJwk()), kid: selfA.current.kid }] }, NOW)
    self = impostor
    expect(await subjects.verifyOwn(token)).toBeUndefined()
  })

  it('caches no failure, and answers undefined for anything that is not a live token of ours', async () => {
    const { keys, checks } = countingKeys(selfA)
    const subjects = verifier(idp(), { selfKeys: keys })
    const token = await mandateToken(selfA)
    const [h, p, sig] = token.split('.') as [string, string, string]
    const altered = `${h}.${p}.${sig.slice(0, -2)}${sig.endsWith('AA') ? 'BB' : 'AA'}`
    for (let i = 0; i < 2; i++) expect(await subjects.verifyOwn(altered)).toBeUndefined()
    expect(checks()).toBe(2)
    expect(await subjects.verifyOwn(await userToken())).toBeUndefined()
    // A user token cached by the exchange is still no token of ours.
    const user = await userToken()
    await expect(subjects.verify(user)).resolves.toMatchObject({ kind: 'user' })
    expect(await subjects.verifyOwn(user)).toBeUndefined()
    expect(await subjects.verifyOwn(await mandateToken(selfB))).toBeUndefined()
    for (const junk of ['', 'x', 'a.b.c', `${'A'.repeat(20_000)}.x.y`]) expect(await subjects.verifyOwn(junk)).toBeUndefined()
  })

  it('refuses a token of its own key whose holder or audience is empty: no claim a resource server would be handed is blank', async () => {
    const subjects = verifier(idp())
    expect(await subjects.verifyOwn(await mandateToken(selfA, { client_id: '' }))).toBeUndefined()
    expect(await subjects.verifyOwn(await mandateToken(selfA, { aud: '' }))).toBeUndefined()
    await expect(subjects.verify(await mandateToken(selfA, { client_id: '' }))).rejects.toMatchObject({ detail: 'bad_mandate_claims' })
    expect(await subjects.verifyOwn(await mandateToken(selfA, { scope: '' }))).toMatchObject({ scope: '' }) // RFC 6749 §3.3: grants nothing, still well-formed
  })
})

describe('only access tokens are subject tokens', () => {
  const strict = idp()
  /** An issuer that sets no `typ` (the relaxed check: none, or `JWT`). */
  const relaxed = idp({ typ: [undefined, 'jwt'] })
  const acceptsIdTokens = idp({ typ: [undefined, 'jwt'], acceptIdTokens: true })

  const accepted = async (issuer: TrustedIssuer, token: Promise<string>) =>
    expect(verifier(issuer).verify(await token)).resolves.toMatchObject({ kind: 'user', sub: 'alice' })
  const refused = async (issuer: TrustedIssuer, token: Promise<string>) =>
    expect(verifier(issuer).verify(await token)).rejects.toMatchObject({ code: 'invalid_request' })

  const logoutEvents = { 'http://schemas.openid.net/event/backchannel-logout': {} }
  const notAccessTokens: [string, JWTPayload][] = [
    ['a Security Event Token (events, RFC 8417)', { events: { 'https://schemas.openid.net/secevent/risc/event-type/account-disabled': {} } }],
    ['a back-channel logout token (events)', { events: logoutEvents, sid: 's-1' }],
    ['a Keycloak refresh token (typ Refresh)', { typ: 'Refresh' }],
    ['a Keycloak offline token (typ Offline)', { typ: 'Offline' }],
    ['a Keycloak logout token (typ Logout)', { typ: 'Logout' }],
    ['a kind claim with a value not known here', { typ: 'Session' }],
    ['a kind claim that is not a string', { token_use: 1 }],
    ['a kind claim naming an Object.prototype member', { typ: 'constructor' }],
    ['a kind claim of __proto__', { token_use: '__proto__' }],
    ['a Cognito refresh-like token_use', { token_use: 'refresh' }],
    ['a ForgeRock refresh token (tokenName)', { tokenName: 'refresh_token' }],
    ['a token_type naming a refresh token', { token_type: 'refresh_token' }],
  ]
  const idTokens: [string, JWTPayload][] = [
    ['nonce', { nonce: 'n-0S6_WzA2Mj' }],
    ['at_hash', { at_hash: 'HK6E_P6Dh8Y93mRNtsDB1Q' }],
    ['c_hash (OIDC Core §3.3.2.11)', { c_hash: 'LDktKdoQak3Pk0cnXxCltA' }],
    ['s_hash (FAPI)', { s_hash: 'x7ZkKSfK6Y0U2QvgNkS5dQ' }],
    ['a Keycloak ID token (typ ID)', { typ: 'ID' }],
    ['a Cognito ID token (token_use id)', { token_use: 'id' }],
    ['a ForgeRock ID token (tokenName id_token)', { tokenName: 'id_token' }],
  ]

  it.each([...notAccessTokens, ...idTokens])('refuses %s, typ at+jwt', async (_name, claims) => {
    await refused(strict, userToken(claims))
  })

  it.each([...notAccessTokens, ...idTokens])('refuses %s under the relaxed typ check (typ JWT, and no typ)', async (_name, claims) => {
    await refused(relaxed, userToken(claims, { typ: 'JWT' }))
    await refused(relaxed, userToken(claims, { typ: undefined }))
  })

  it.each(['logout+jwt', 'secevent+jwt', 'refresh+jwt', 'application/logout+jwt', 'oauth-id-jag+jwt', 'application/OAuth-ID-JAG+JWT'])(
    'refuses header typ %s, even from an issuer whose typ rule names it',
    async (typ) => {
      await refused(relaxed, userToken({}, { typ }))
      await refused(idp({ typ: [typ.replace('application/', '')] }), userToken({}, { typ }))
    },
  )

  it.each<[string, JWTPayload]>([
    ['a Keycloak access token (typ Bearer)', { typ: 'Bearer' }],
    ['a Cognito access token (token_use access)', { token_use: 'access' }],
    ['a ForgeRock access token (tokenName access_token, token_type Bearer)', { tokenName: 'access_token', token_type: 'Bearer' }],
    ['a plain access token', {}],
  ])('accepts %s (control)', async (_name, claims) => {
    await accepted(strict, userToken(claims))
    await accepted(relaxed, userToken(claims, { typ: 'JWT' }))
  })

  it.each(idTokens)('accepts an ID token (%s) from an issuer configured to accept them', async (_name, claims) => {
    await accepted(acceptsIdTokens, userToken(claims, { typ: 'JWT' }))
    await refused(relaxed, userToken(claims, { typ: 'JWT' }))
  })

  it.each(notAccessTokens)('refuses %s even from an issuer that accepts ID tokens', async (_name, claims) => {
    await refused(acceptsIdTokens, userToken(claims, { typ: 'JWT' }))
  })

  it('an ID token that also carries events is a SET, refused by an issuer that accepts ID tokens', async () => {
    await refused(acceptsIdTokens, userToken({ nonce: 'n', events: logoutEvents }, { typ: 'JWT' }))
  })
})

describe('the maximum age of a user token', () => {
  it('refuses an exp further ahead than maxAge plus the skew, and accepts one at it', async () => {
    const subjects = verifier(idp(), { maxAge: 3600 })
    await expect(subjects.verify(await userToken({ exp: NOW + 3600 + 30 }))).resolves.toMatchObject({ kind: 'user' })
    await expect(subjects.verify(await userToken({ exp: NOW + 3600 + 31 }))).rejects.toMatchObject({ code: 'invalid_request', detail: 'exp_too_far' })
  })
})
