/**
 * RFC 8414 metadata says only what is true: every endpoint it lists exists
 * and answers the method it is used with (and only that one), every client
 * authentication method it lists for an endpoint works there, and so does
 * every signing algorithm it lists for assertions.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ASYMMETRIC_ALGORITHMS } from '../../../src/tokens/jws.js'
import {
  ADMIN_KEYS,
  AUDIENCE,
  basic,
  bearer,
  BROKER,
  CLIENT_ASSERTION_TYPE_JWT,
  encodeForm,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  USER_ISSUER,
} from '../../support/broker.js'
import { expectCleanLogs, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'
import { clientAssertion } from '../../support/tokens.js'

/** Every metadata member naming a URL the broker serves, with the method a client uses there. */
const ENDPOINTS: Record<string, 'GET' | 'POST'> = {
  token_endpoint: 'POST',
  introspection_endpoint: 'POST',
  revocation_endpoint: 'POST',
  jwks_uri: 'GET',
}
/** The endpoints with client authentication: metadata prefix → path. */
const AUTHENTICATED = { token_endpoint: '/oauth2/token', introspection_endpoint: '/oauth2/introspect', revocation_endpoint: '/oauth2/revoke' } as const
type Authenticated = keyof typeof AUTHENTICATED

const agentOf = (alg: string) => `alg-${alg.toLowerCase()}`

function algPolicy(alg: string, jwk: JWK): string {
  return `agent: ${agentOf(alg)}
owner: security@example.com
purpose: signs its assertions with ${alg}
expires: 2099-01-01
authentication: { method: private_key_jwt, jwks: { keys: [${JSON.stringify({ ...jwk, alg, kid: `${alg}-1` })}] } }
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`
}

describe('RFC 8414 metadata against what the broker does', () => {
  let b: TrackedBroker
  let metadata: Record<string, unknown>
  const algKeys = new Map<string, CryptoKey>()
  let spiffeDir: string
  let svidKey: CryptoKey
  const SVID_SUB = 'spiffe://metadata.test/ns/test/sa/svid-agent'

  beforeAll(async () => {
    const policies: Record<string, string> = {}
    // An agent that authenticates with a JWT-SVID, its trust domain's bundle in a file.
    spiffeDir = await mkdtemp(join(tmpdir(), 'mandate-metadata-spiffe-'))
    const svid = await generateKeyPair('ES256', { extractable: true })
    svidKey = svid.privateKey
    const bundleFile = join(spiffeDir, 'bundle.json')
    await writeFile(bundleFile, JSON.stringify({ keys: [{ ...(await exportJWK(svid.publicKey)), use: 'jwt-svid', kid: 'svid-1' }] }))
    policies['svid-agent.yaml'] = algPolicy('ES256', {})
      .replace(`agent: ${agentOf('ES256')}`, 'agent: svid-agent')
      .replace(/authentication: .*\n/, `authentication: { method: spiffe, spiffe_id: "${SVID_SUB}" }\n`)
    for (const alg of ASYMMETRIC_ALGORITHMS) {
      const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
      algKeys.set(alg, privateKey)
      policies[`${agentOf(alg)}.yaml`] = algPolicy(alg, await exportJWK(publicKey))
    }
    b = await startTrackedBroker({ policies, spiffe: [{ trust_domain: 'metadata.test', bundle_file: bundleFile }] })
    const res = await b.mandate.app.request('/.well-known/oauth-authorization-server')
    expect(res.status).toBe(200)
    metadata = (await res.json()) as Record<string, unknown>
  }, 60_000) // six RSA keys, on a busy machine
  afterAll(async () => {
    expectCleanLogs(b)
    await b.close()
    await rm(spiffeDir, { recursive: true, force: true })
  })

  const post = (path: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
    Promise.resolve(
      b.mandate.app.request(path, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: encodeForm(fields),
      }),
    )
  const pathOf = (member: string) => {
    const url = new URL(metadata[member] as string)
    expect(url.origin).toBe(new URL(BROKER).origin)
    return url.pathname
  }
  const assertionFields = async (assertion: Promise<string>) => ({
    client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
    client_assertion: b.secret(await assertion),
  })
  const activeFor = async (token: string) =>
    ((await (await post('/oauth2/introspect', { token }, bearer(ADMIN_KEYS.auditor))).json()) as { active: boolean }).active

  /** A token exchanged by the client `auth` authenticates as; the exchange must succeed. */
  async function exchange(auth: { headers?: Record<string, string>; fields?: Record<string, string> }, user?: string): Promise<string> {
    const subject = b.secret(user ?? (await b.userToken()))
    const res = await b.token({ ...b.exchangeForm(subject, { scope: 'read' }), ...auth.fields }, auth.headers)
    return b.secret((await expectToken(res)).access_token)
  }

  /** One successful call to `endpoint` by a client authenticated with `auth`. */
  async function succeeds(endpoint: Authenticated, auth: () => Promise<{ headers?: Record<string, string>; fields?: Record<string, string> }>, user?: string) {
    switch (endpoint) {
      case 'token_endpoint':
        await exchange(await auth(), user)
        return
      case 'introspection_endpoint': {
        const token = await exchange(await auth(), user)
        const a = await auth()
        const res = await post(AUTHENTICATED[endpoint], { token, ...a.fields }, a.headers)
        expect(res.status).toBe(200)
        expect(((await res.json()) as { active: boolean }).active).toBe(true)
        return
      }
      case 'revocation_endpoint': {
        const token = await exchange(await auth(), user)
        const a = await auth()
        expect((await post(AUTHENTICATED[endpoint], { token, ...a.fields }, a.headers)).status).toBe(200)
        expect(await activeFor(token)).toBe(false)
        return
      }
    }
  }

  it('lists the introspection and revocation endpoints beside the token endpoint and the JWKS', () => {
    const listed = Object.keys(metadata).filter((k) => k.endsWith('_endpoint') || k.endsWith('_uri'))
    expect(listed.sort()).toEqual([...Object.keys(ENDPOINTS), 'mandate_revocation_feed_endpoint'].sort())
    expect(metadata['grant_types_supported']).toEqual(['urn:ietf:params:oauth:grant-type:token-exchange'])
  })

  it('names the revocation feed resource servers follow (a member of its own: GET or POST, credentials required)', async () => {
    expect(metadata['mandate_revocation_feed_endpoint']).toBe(`${BROKER}/revocations/feed`)
    const path = pathOf('mandate_revocation_feed_endpoint')
    expect((await b.mandate.app.request(path)).status).toBe(401)
    const form = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' }
    expect((await b.mandate.app.request(path, form)).status).toBe(401)
    expect((await b.mandate.app.request(path, { method: 'PUT' })).status).toBe(405)
  })

  it.each(Object.entries(ENDPOINTS))('%s exists and answers %s, and only that', async (member, method) => {
    const path = pathOf(member)
    const res = await b.mandate.app.request(
      path,
      method === 'GET' ? {} : { method, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' },
    )
    expect([404, 405]).not.toContain(res.status)
    const other = await b.mandate.app.request(path, { method: method === 'GET' ? 'POST' : 'GET' })
    expect(other.status).toBe(405)
    expect(other.headers.get('allow')).toContain(method)
  })

  describe('every authentication method listed works where it is listed', () => {
    // How a client of each kind authenticates with each method.
    const agentAuth: Record<string, () => Promise<{ headers?: Record<string, string>; fields?: Record<string, string> }>> = {
      client_secret_basic: async () => ({ headers: basic('secret-agent', SECRET) }),
      private_key_jwt: async () => ({ fields: await assertionFields(b.assertion()) }),
      spiffe_jwt: async () => ({
        fields: {
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
          client_assertion: b.secret(
            await new SignJWT({ sub: SVID_SUB, aud: BROKER, exp: b.now() + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'svid-1' }).sign(svidKey),
          ),
        },
      }),
    }
    const serverAuth: Record<string, () => Promise<{ headers?: Record<string, string>; fields?: Record<string, string> }>> = {
      client_secret_basic: async () => ({ headers: basic(RESOURCE_SERVERS.api, RS_SECRET) }),
      private_key_jwt: async () => ({ fields: await assertionFields(b.rsAssertion()) }),
    }

    it.each(Object.keys(AUTHENTICATED) as Authenticated[])('%s, for agents', async (endpoint) => {
      const methods = metadata[`${endpoint}_auth_methods_supported`] as string[]
      expect(methods.length).toBeGreaterThan(0)
      for (const method of methods) {
        const auth = agentAuth[method]
        if (auth === undefined) throw new Error(`the metadata lists ${method}, which no test exercises`)
        // jwt-agent admits only engineering or sre users.
        await succeeds(endpoint, auth, method === 'private_key_jwt' ? await b.userToken({ groups: ['sre'] }) : undefined)
      }
    })

    it.each(['client_secret_basic', 'private_key_jwt'])('introspection_endpoint, for resource servers: %s', async (method) => {
      expect(metadata['introspection_endpoint_auth_methods_supported']).toContain(method)
      const token = await exchange({ headers: basic('secret-agent', SECRET) })
      const server = method === 'client_secret_basic' ? RESOURCE_SERVERS.api : RESOURCE_SERVERS.other
      // rs/api serves the token's audience; rs/other does not, and authenticating is all this checks.
      const a = await serverAuth[method]!()
      const res = await post('/oauth2/introspect', { token, ...a.fields }, a.headers)
      expect(res.status, server).toBe(200)
      expect(((await res.json()) as { active: boolean }).active).toBe(server === RESOURCE_SERVERS.api)
    })
  })

  it.each(Object.keys(AUTHENTICATED) as Authenticated[])('%s: every assertion signing algorithm listed works', async (endpoint) => {
    const algs = metadata[`${endpoint}_auth_signing_alg_values_supported`] as string[]
    expect(algs.length).toBeGreaterThan(0)
    expect(algs).not.toContain('none')
    for (const alg of algs) {
      const key = algKeys.get(alg)
      if (key === undefined) throw new Error(`the metadata lists ${alg}, which no test key exercises`)
      const agent = agentOf(alg)
      const assertion = () =>
        clientAssertion({ privateKey: key, alg, kid: `${alg}-1` }, { client: agent, aud: BROKER, jti: `${alg}-${Math.random()}` }, { now: b.now() })
      await succeeds(endpoint, async () => ({ fields: await assertionFields(assertion()) }))
    }
  })
})
