/**
 * The subject verifier on its own, with issuers whose key sets the test
 * holds in memory and a fixed clock: what it accepts as a subject token, and
 * that its verified-token cache never outlives the key a token was verified with.
 */
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import type { MandateClaims } from '../../../src/core/claims.js'
import { generateSigningJwk, signingKeysFromJwks, type SigningKeys } from '../../../src/tokens/keys.js'
import { createTokenMinter } from '../../../src/tokens/mint.js'
import { createSubjectVerifier, type SubjectVerifierOptions } from '../../../src/tokens/subject.js'
import { createIssuerRegistry, createLocalKeyResolver, type TrustedIssuer } from '../../../src/tokens/upstream.js'

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
    cacheSize: 100,
    ...over,
  })
}

function userToken(claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ iss: IDP, sub: 'alice', aud: BROKER, iat: NOW, exp: NOW + 3600, scope: 'read', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'idp-1', typ: 'at+jwt', ...header } as { alg: string })
    .sign(idpKey)
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
