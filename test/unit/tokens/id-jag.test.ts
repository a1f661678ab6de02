/**
 * The ID-JAG verifier alone (tokens/id-jag.ts), over a key set held in
 * memory and a fixed clock: what it returns for a good ID-JAG (the user, its
 * `resource` and `scope`, the `jti` to spend in its own namespace), and that
 * every failure is the one `invalid_grant`.
 */
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import type { AgentId } from '../../../src/core/claims.js'
import { AGENT_ID } from '../../../src/core/claims.js'
import { OAuthError } from '../../../src/core/errors.js'
import { createIdJagVerifier, ID_JAG_TYP } from '../../../src/tokens/id-jag.js'
import { createIssuerRegistry, createLocalKeyResolver, type TrustedIssuer } from '../../../src/tokens/upstream.js'

const IDP = 'https://idp.example.com'
const BROKER = 'https://mandate.example.com'
const NOW = 1_800_000_000
const AGENT = 'xaa-agent' as AgentId

let key: CryptoKey
let verifier: ReturnType<typeof createIdJagVerifier>

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true })
  key = pair.privateKey
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }
  const trusted: TrustedIssuer = { issuer: IDP, jwksUri: undefined, algorithms: ['ES256'], audience: BROKER, typ: [ID_JAG_TYP], maxLifetime: 300 }
  verifier = createIdJagVerifier({
    issuers: createIssuerRegistry([trusted], () => createLocalKeyResolver({ keys: [jwk] })),
    now: () => NOW,
    skew: 30,
  })
})

const sign = (claims: Record<string, unknown> = {}, typ: string = ID_JAG_TYP) =>
  new SignJWT({ iss: IDP, sub: 'alice', aud: BROKER, client_id: AGENT, jti: 'j-1', iat: NOW, exp: NOW + 120, ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ })
    .sign(key)

describe('createIdJagVerifier', () => {
  it('gives the user, the resource and scope, and the jti to spend until exp + skew', async () => {
    const v = await verifier.verify(await sign({ resource: 'https://api.example.com', scope: 'read write' }), AGENT)
    expect(v.user).toMatchObject({ kind: 'user', issuer: IDP, sub: 'alice', iat: NOW, exp: NOW + 120 })
    expect([...v.user.scopes!]).toEqual(['read', 'write'])
    expect(v.resources).toEqual(['https://api.example.com'])
    expect(v.use).toEqual({ key: `#id-jag:${IDP}#j-1`, earliestUse: (NOW - 30) * 1000, expiresAt: (NOW + 150) * 1000 })
  })

  it('spends its jti under a key no client assertion can have (`<agent id>:<jti>`, or a resource server’s `rs/…`)', async () => {
    const { use } = await verifier.verify(await sign(), AGENT)
    expect(AGENT_ID.test(use.key.split(':')[0]!)).toBe(false)
    expect(use.key.startsWith('rs/')).toBe(false)
  })

  it('leaves resource and scope undefined when the ID-JAG names none', async () => {
    const v = await verifier.verify(await sign(), AGENT)
    expect(v.resources).toBeUndefined()
    expect(v.user.scopes).toBeUndefined()
  })

  it.each<[string, () => Promise<string>, AgentId]>([
    ['typ JWT', () => sign({}, 'JWT'), AGENT],
    ['typ at+jwt', () => sign({}, 'at+jwt'), AGENT],
    ['another client', () => sign(), 'other-agent' as AgentId],
    ['wrong aud', () => sign({ aud: 'https://other.example.com' }), AGENT],
    ['lifetime over the bound', () => sign({ iat: NOW - 200, exp: NOW + 150 }), AGENT],
    ['exp too far', () => sign({ exp: NOW + 1000 }), AGENT],
    ['a client_id that is no string', () => sign({ client_id: 7 }), AGENT],
    ['an empty resource list', () => sign({ resource: [] }), AGENT],
  ])('refuses %s with the one invalid_grant', async (_name, make, agent) => {
    const err = await verifier.verify(await make(), agent).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OAuthError)
    expect(err).toMatchObject({ code: 'invalid_grant', description: 'assertion is invalid or not acceptable' })
  })
})
