/**
 * SPIFFE JWT-SVID client authentication (draft-ietf-oauth-spiffe-client-auth)
 * through the composed broker: one trust domain's bundle in a file, another's
 * served by a local bundle endpoint the way SPIRE's serves it (a JWK set with
 * `spiffe_sequence` and `spiffe_refresh_hint`, keys `use: jwt-svid`), SVIDs
 * signed with jose (ES256 and RS256) without `iss` or `iat`. Every refusal is
 * the same 401 `invalid_client`; a rotated bundle is picked up.
 */
import { createServer, type Server } from 'node:http'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'

const ISSUER = 'https://mandate.test'
const DEV_USERS = 'https://users.dev.mandate.invalid'
const SPIFFE_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'

interface SigningKey {
  readonly kid: string
  readonly alg: 'ES256' | 'RS256'
  readonly privateKey: CryptoKey
  readonly jwk: JWK
}

async function signingKey(kid: string, alg: 'ES256' | 'RS256', use = 'jwt-svid'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  // SPIRE publishes JWT authorities without `alg`, with `use: jwt-svid` and a `kid`.
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, use } }
}

const bundle = (keys: readonly SigningKey[], sequence: number) =>
  JSON.stringify({ keys: keys.map((k) => k.jwk), spiffe_sequence: sequence, spiffe_refresh_hint: 1 })

function policy(agent: string, authentication: string): string {
  return `agent: ${agent}
owner: ops@example.com
purpose: spiffe test
expires: 2099-01-01
authentication: ${authentication}
users: [{ issuer: ${DEV_USERS} }]
grants: [{ audience: https://demo.example, scopes: [demo:read], default_scopes: [demo:read] }]
token_ttl: { default: 300, max: 300 }
`
}

describe('SPIFFE JWT-SVID client authentication', () => {
  let dir: string
  let m: Mandate
  let server: Server
  let served: string
  let fileKey: SigningKey
  let urlKey: SigningKey
  let x509Key: SigningKey
  let bundleFile: string

  const svid = async (
    key: SigningKey,
    sub: string,
    over: { aud?: string | string[]; exp?: number | null; alg?: string; kid?: string; jti?: string; iat?: number } = {},
  ) => {
    const now = Math.floor(Date.now() / 1000)
    const claims: Record<string, unknown> = { sub, aud: over.aud ?? ISSUER }
    if (over.exp !== null) claims['exp'] = over.exp ?? now + 120
    if (over.jti !== undefined) claims['jti'] = over.jti
    if (over.iat !== undefined) claims['iat'] = over.iat
    return new SignJWT(claims).setProtectedHeader({ alg: over.alg ?? key.alg, kid: over.kid ?? key.kid, typ: 'JWT' }).sign(key.privateKey)
  }

  const userToken = async (sub: string) => {
    const res = await m.app.request(`/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"demo:read"}' })
    return ((await res.json()) as { access_token: string }).access_token
  }

  const exchange = async (assertion: string, extra: Record<string, string> = {}) =>
    m.app.request('/oauth2/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: await userToken('alice'),
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://demo.example',
        client_assertion_type: SPIFFE_TYPE,
        client_assertion: assertion,
        ...extra,
      }).toString(),
    })

  const issuedTo = async (res: Response) => {
    expect(res.status, await res.clone().text()).toBe(200)
    const { access_token: token } = (await res.json()) as { access_token: string }
    return (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { client_id: string }).client_id
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-spiffe-'))
    fileKey = await signingKey('file-1', 'ES256')
    urlKey = await signingKey('url-1', 'RS256')
    x509Key = await signingKey('x509-1', 'ES256', 'x509-svid')
    bundleFile = join(dir, 'file.test.bundle.json')
    await writeFile(bundleFile, bundle([fileKey, x509Key], 1))
    served = bundle([urlKey], 1)
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(served)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as AddressInfo).port

    const policies = join(dir, 'policies')
    await mkdir(policies)
    await writeFile(
      join(policies, 'billing-agent.yaml'),
      policy('billing-agent', '{ method: spiffe, spiffe_id: "spiffe://file.test/ns/prod/sa/billing-agent" }'),
    )
    await writeFile(join(policies, 'bill-agent.yaml'), policy('bill-agent', '{ method: spiffe, spiffe_id_prefix: "spiffe://file.test/sa/bill/" }'))
    await writeFile(join(policies, 'prod-agent.yaml'), policy('prod-agent', '{ method: spiffe, spiffe_id_prefix: "spiffe://url.test/ns/prod/" }'))
    await writeFile(
      join(policies, 'prod-exact-agent.yaml'),
      policy('prod-exact-agent', '{ method: spiffe, spiffe_id: "spiffe://url.test/ns/prod/sa/special" }'),
    )
    const config = Config.parse({
      issuer: ISSUER,
      policies_dir: policies,
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      log: { level: 'silent' },
      trust: {
        spiffe: [
          { trust_domain: 'file.test', bundle_file: bundleFile },
          { trust_domain: 'url.test', bundle_url: `http://127.0.0.1:${port}/bundle`, refresh_seconds: 1 },
        ],
      },
    })
    m = await composeMandate(config, { dev: true, logger: createLogger('silent'), loadSignals: { eventLoopLag: () => 0 } })
  })

  afterAll(async () => {
    await m?.close()
    await new Promise((resolve) => server?.close(resolve))
    await rm(dir, { recursive: true, force: true })
  })

  it('names spiffe_jwt in the metadata', async () => {
    const meta = (await (await m.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, string[]>
    expect(meta['token_endpoint_auth_methods_supported']).toContain('spiffe_jwt')
  })

  it('lists each trust domain’s bundle in readiness', async () => {
    const body = (await (await m.app.request('/readyz')).json()) as {
      upstream_jwks: { ready: boolean; issuers: { issuer: string; role: string; state: string }[] }
    }
    expect(body.upstream_jwks.ready).toBe(true)
    expect(body.upstream_jwks.issuers.filter((i) => i.role === 'spiffe').map((i) => [i.issuer, i.state])).toEqual([
      ['spiffe://file.test', 'fresh'],
      ['spiffe://url.test', 'fresh'],
    ])
  })

  it('accepts an ES256 SVID checked against a bundle file, with no iss or iat', async () => {
    expect(await issuedTo(await exchange(await svid(fileKey, 'spiffe://file.test/ns/prod/sa/billing-agent')))).toBe('billing-agent')
  })

  it('accepts an RS256 SVID checked against a bundle endpoint, matched by prefix, aud the token endpoint', async () => {
    const token = await svid(urlKey, 'spiffe://url.test/ns/prod/sa/anything', { aud: ['other', `${ISSUER}/oauth2/token`] })
    expect(await issuedTo(await exchange(token))).toBe('prod-agent')
  })

  it('prefers an exact spiffe_id over a prefix that also matches', async () => {
    expect(await issuedTo(await exchange(await svid(urlKey, 'spiffe://url.test/ns/prod/sa/special')))).toBe('prod-exact-agent')
  })

  it('matches a prefix at segment boundaries only', async () => {
    expect(await issuedTo(await exchange(await svid(fileKey, 'spiffe://file.test/sa/bill/worker')))).toBe('bill-agent')
    expect((await exchange(await svid(fileKey, 'spiffe://file.test/sa/billing'))).status).toBe(401)
  })

  it('accepts client_id naming the matched agent', async () => {
    const token = await svid(fileKey, 'spiffe://file.test/ns/prod/sa/billing-agent')
    expect(await issuedTo(await exchange(token, { client_id: 'billing-agent' }))).toBe('billing-agent')
  })

  it('spends a jti when the SVID has one', async () => {
    // The replay store's memory began at start-up, moments ago: only an iat as late as the skew (30 s) allows
    // shows the SVID cannot have been used before that.
    const token = await svid(fileKey, 'spiffe://file.test/ns/prod/sa/billing-agent', { jti: 'once', iat: Math.floor(Date.now() / 1000) + 30 })
    const first = await exchange(token)
    expect(first.status, await first.text()).toBe(200)
    const again = await exchange(token)
    expect(again.status).toBe(401)
    expect(((await again.json()) as { error: string }).error).toBe('invalid_client')
  })

  it('authenticates the agent at introspection and revocation too', async () => {
    const billing = 'spiffe://file.test/ns/prod/sa/billing-agent'
    const res = await exchange(await svid(fileKey, billing))
    const { access_token: token } = (await res.json()) as { access_token: string }
    const form = async (extra: Record<string, string>) => ({
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_assertion_type: SPIFFE_TYPE, client_assertion: await svid(fileKey, billing), ...extra }).toString(),
    })
    const introspected = await m.app.request('/oauth2/introspect', await form({ token }))
    expect(introspected.status, await introspected.clone().text()).toBe(200)
    expect(((await introspected.json()) as { active: boolean }).active).toBe(true)
    const revoked = await m.app.request('/oauth2/revoke', await form({ token }))
    expect(revoked.status, await revoked.clone().text()).toBe(200)
    const other = await m.app.request('/oauth2/revoke', await form({ token, client_assertion: await svid(fileKey, 'spiffe://file.test/nobody') }))
    expect(other.status).toBe(401)
  })

  it('refuses every bad SVID with the same 401 invalid_client', async () => {
    const now = Math.floor(Date.now() / 1000)
    const billing = 'spiffe://file.test/ns/prod/sa/billing-agent'
    const hs = new SignJWT({ sub: billing, aud: ISSUER, exp: now + 60 }).setProtectedHeader({ alg: 'HS256', kid: fileKey.kid }).sign(Buffer.alloc(32, 7))
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', kid: fileKey.kid })).toString('base64url')}.${Buffer.from(JSON.stringify({ sub: billing, aud: ISSUER, exp: now + 60 })).toString('base64url')}.`
    const cases: Record<string, Promise<string> | string> = {
      'wrong trust domain': svid(fileKey, 'spiffe://other.test/ns/prod/sa/billing-agent'),
      'the other trust domain’s key': svid(urlKey, billing),
      'unknown kid': svid(fileKey, billing, { kid: 'nope' }),
      'an x509-svid key': svid(x509Key, billing),
      expired: svid(fileKey, billing, { exp: now - 120 }),
      'no exp': svid(fileKey, billing, { exp: null }),
      'lifetime too long': svid(fileKey, billing, { exp: now + 3600 }),
      'wrong aud': svid(fileKey, billing, { aud: 'https://elsewhere.test' }),
      'no policy for the ID': svid(fileKey, 'spiffe://file.test/ns/dev/sa/billing-agent'),
      'not a SPIFFE ID': svid(fileKey, 'https://file.test/ns/prod/sa/billing-agent'),
      'client_id of another agent': svid(fileKey, billing),
      'alg none': none,
      HS256: hs,
    }
    const bodies = new Set<string>()
    for (const [name, token] of Object.entries(cases)) {
      const res = await exchange(await token, name === 'client_id of another agent' ? { client_id: 'bill-agent' } : {})
      expect(res.status, name).toBe(401)
      const body = (await res.json()) as { error: string; error_description: string }
      expect(body.error, name).toBe('invalid_client')
      bodies.add(JSON.stringify(body))
    }
    expect([...bodies]).toHaveLength(1)
  })

  it('picks up a rotated bundle, from the endpoint and from the file', async () => {
    const rotatedUrl = await signingKey('url-2', 'ES256')
    const rotatedFile = await signingKey('file-2', 'RS256')
    served = bundle([rotatedUrl], 2)
    await writeFile(bundleFile, bundle([rotatedFile], 2))
    const accepted = async (key: SigningKey, sub: string) => (await exchange(await svid(key, sub))).status === 200
    const deadline = Date.now() + 10_000
    while (!(await accepted(rotatedUrl, 'spiffe://url.test/ns/prod/sa/a')) || !(await accepted(rotatedFile, 'spiffe://file.test/ns/prod/sa/billing-agent'))) {
      expect(Date.now()).toBeLessThan(deadline)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    expect((await exchange(await svid(urlKey, 'spiffe://url.test/ns/prod/sa/a'))).status).toBe(401)
    expect((await exchange(await svid(fileKey, 'spiffe://file.test/ns/prod/sa/billing-agent'))).status).toBe(401)
  })
})
