/**
 * Per-instance identity and the instance kill, through the composed broker:
 * two running copies of one agent authenticate with JWT-SVIDs under one
 * `spiffe_id_prefix` policy, and their tokens carry `act.instance`. A kill of
 * copy A (admin API) refuses A at the token endpoint, kills A's live token at
 * introspection and at `@mandate/verifier` (its real revocation feed), and
 * refuses a sub-agent's exchange of A's token; copy B keeps working. Lifting
 * the kill lets A ask again. A workload identity names its instance by the
 * claim its issuer's `instance_claim` says. `GET /admin/agents/{id}` lists
 * both copies with their counts.
 *
 * Run on PGlite (`embedded`, the delegation log in SQL) and on PostgreSQL
 * with Redis, as the kill switch's other integration tests are.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve, type ServerType } from '@hono/node-server'
import { createVerifier, VerifierError, type Verifier } from '@mandate/verifier'
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  ADMIN_KEYS,
  AUDIENCE,
  BROKER,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  USER_ISSUER,
  basic,
  bearer,
  startTestBroker,
  type TestBroker,
} from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'

const SPIFFE_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'
const TRUST_DOMAIN = 'prod.test'
const COPY_A = `spiffe://${TRUST_DOMAIN}/ns/prod/worker/pod-a`
const COPY_B = `spiffe://${TRUST_DOMAIN}/ns/prod/worker/pod-b`

const common = (agent: string) => `agent: ${agent}
owner: security@example.com
purpose: instance kill test
expires: 2099-01-01`

const POLICIES = {
  'worker.yaml': `${common('worker')}
authentication: { method: spiffe, spiffe_id_prefix: "spiffe://${TRUST_DOMAIN}/ns/prod/worker/" }
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
delegation: { max_depth: 3, sub_agents: [helper] }
`,
  'helper.yaml': `${common('helper')}
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }
grants: [{ audience: ${AUDIENCE}, scopes: [read] }]
token_ttl: { default: 120, max: 300 }
delegation: { max_depth: 3 }
`,
}

interface Served {
  readonly url: string
  stop(): Promise<void>
}

async function serveOnLoopback(fetch: (req: Request) => Response | Promise<Response>): Promise<Served> {
  const server: ServerType = serve({ fetch, port: 0, hostname: '127.0.0.1' })
  await new Promise<void>((resolve) => server.once('listening', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as import('node:http').Server).closeAllConnections()
      }),
  }
}

interface Json {
  readonly status: number
  readonly body: Record<string, unknown>
}
const json = async (res: Response): Promise<Json> => ({ status: res.status, body: (await res.json()) as Record<string, unknown> })

interface Setup {
  readonly b: TestBroker
  readonly key: { privateKey: CryptoKey; jwk: JWK }
}

function describeInstanceKill(
  name: string,
  describeFn: typeof describe,
  start: (bundleFile: string) => Promise<{ b: TestBroker; cleanup: () => Promise<void> }>,
) {
  describeFn(name, () => {
    let dir: string
    let s: Setup
    let cleanup: () => Promise<void>
    let served: Served
    let verifier: Verifier

    const svid = async (sub: string) =>
      new SignJWT({ sub, aud: BROKER, exp: s.b.now() + 120 }).setProtectedHeader({ alg: 'ES256', kid: 'svid-1', typ: 'JWT' }).sign(s.key.privateKey)
    const asCopy = async (copy: string, subjectToken?: string) =>
      json(
        await s.b.token({
          ...s.b.exchangeForm(subjectToken ?? (await s.b.userToken()), { scope: 'read' }),
          client_assertion_type: SPIFFE_TYPE,
          client_assertion: await svid(copy),
        }),
      )
    const issued = async (res: Json | Promise<Json>) => {
      const r = await res
      expect(r.status, JSON.stringify(r.body)).toBe(200)
      return r.body['access_token'] as string
    }
    const helperExchange = async (parent: string) => json(await s.b.token(s.b.exchangeForm(parent, { scope: 'read' }), basic('helper', SECRET)))
    const introspect = async (token: string) =>
      (
        await json(
          await s.b.mandate.app.request('/oauth2/introspect', {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(RESOURCE_SERVERS.api, RS_SECRET) },
            body: new URLSearchParams({ token }).toString(),
          }),
        )
      ).body['active']
    const admin = async (method: string, path: string, body?: unknown, key: string = ADMIN_KEYS.responder) =>
      json(
        await s.b.mandate.app.request(path, {
          method,
          headers: { ...bearer(key), 'content-type': 'application/json' },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        }),
      )
    const verifyRefusal = async (token: string) => {
      try {
        await verifier.verify(token)
      } catch (err) {
        if (err instanceof VerifierError) return err.reason
        throw err
      }
      return 'verified'
    }

    let tokenA: string
    let tokenB: string
    let helperOfA: string
    let killId: string

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'mandate-instance-'))
      const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
      const jwk = { ...(await exportJWK(publicKey)), kid: 'svid-1', use: 'jwt-svid' }
      const bundleFile = join(dir, 'bundle.json')
      await writeFile(bundleFile, JSON.stringify({ keys: [jwk] }))
      const started = await start(bundleFile)
      s = { b: started.b, key: { privateKey, jwk } }
      cleanup = started.cleanup
      served = await serveOnLoopback(s.b.mandate.app.fetch)
      const startedAt = performance.now()
      const base = s.b.now()
      verifier = createVerifier({
        issuer: BROKER,
        audience: AUDIENCE,
        credentials: { clientId: RESOURCE_SERVERS.api, clientSecret: RS_SECRET },
        clock: () => base * 1000 + (performance.now() - startedAt),
        fetch: (input, init) => {
          const target = new URL(input instanceof Request ? input.url : String(input))
          return fetch(target.origin === BROKER ? new URL(`${target.pathname}${target.search}`, served.url) : target, init)
        },
      })
      await verifier.ready()
    })
    afterAll(async () => {
      await verifier?.close()
      await served?.stop()
      await cleanup?.()
      await rm(dir, { recursive: true, force: true })
    })

    it('names each copy in act.instance: the SVID’s SPIFFE ID, never anything the client chose', async () => {
      tokenA = await issued(asCopy(COPY_A))
      tokenB = await issued(asCopy(COPY_B))
      expect(decodeJwt(tokenA)['act']).toEqual({ sub: 'worker', instance: COPY_A })
      expect(decodeJwt(tokenB)['act']).toEqual({ sub: 'worker', instance: COPY_B })
      // A re-delegation keeps the older hop's instance; the helper (a client secret) names none.
      helperOfA = await issued(helperExchange(tokenA))
      expect(decodeJwt(helperOfA)['act']).toEqual({ sub: 'helper', act: { sub: 'worker', instance: COPY_A } })
      expect(await verifyRefusal(tokenA)).toBe('verified')
      expect(await verifyRefusal(helperOfA)).toBe('verified')
    })

    it('kills copy A only: A is refused, its token and the one delegated from it are dead everywhere; B keeps working', async () => {
      const killed = await admin('POST', '/admin/revocations', { agent: 'worker', instance: COPY_A, reason: 'copy A misbehaves' })
      expect(killed.status, JSON.stringify(killed.body)).toBe(201)
      expect(killed.body).toMatchObject({ kind: 'instance', target: { agent: 'worker', instance: COPY_A }, in_force: true })
      killId = killed.body['id'] as string

      const refused = await asCopy(COPY_A)
      expect(refused.status).toBe(400)
      expect(refused.body).toMatchObject({ error: 'unauthorized_client', error_description: 'agent is suspended' })
      expect(refused.body['access_token']).toBeUndefined()

      expect(await introspect(tokenA)).toBe(false)
      expect(await introspect(helperOfA)).toBe(false)
      expect(await introspect(tokenB)).toBe(true)
      await vi.waitFor(async () => expect(await verifyRefusal(tokenA)).toBe('revoked'), { timeout: 2_000, interval: 5 })
      expect(await verifyRefusal(helperOfA)).toBe('revoked')
      expect(await verifyRefusal(tokenB)).toBe('verified')

      // A sub-agent may not build on a token copy A asked for.
      const sub = await helperExchange(tokenA)
      expect(sub.status).toBe(400)
      expect(sub.body['error']).toBe('invalid_request')

      // B is untouched, and so is a sub-agent's exchange of B's token.
      const fresh = await issued(asCopy(COPY_B))
      expect(await verifyRefusal(fresh)).toBe('verified')
      expect(decodeJwt(await issued(helperExchange(fresh)))['act']).toEqual({ sub: 'helper', act: { sub: 'worker', instance: COPY_B } })
    })

    it('records the instance on issuances and on the denial, which names it', async () => {
      const reads = await s.b.mandate.app.request('/admin/audit?event=token.denied&limit=20', { headers: bearer(ADMIN_KEYS.auditor) })
      expect(reads.status).toBe(200)
      const { records } = (await reads.json()) as { records: { record: Record<string, unknown> }[] }
      const denial = records.map((r) => r.record).find((r) => r['agent'] === 'worker')
      expect(denial).toMatchObject({ agent_instance: COPY_A, error: 'unauthorized_client' })
      expect(String(denial?.['reason'])).toContain(COPY_A)
    })

    it('lists both copies in GET /admin/agents/{id}, with their counts and whether each is killed', async () => {
      const shown = await admin('GET', '/admin/agents/worker', undefined, ADMIN_KEYS.auditor)
      expect(shown.status, JSON.stringify(shown.body)).toBe(200)
      const instances = shown.body['instances'] as { instance: string; tokens: number; killed: boolean }[]
      expect(instances.map((i) => [i.instance, i.tokens, i.killed]).sort()).toEqual([
        [COPY_A, 1, true],
        [COPY_B, 2, false],
      ])
    })

    it('lifts the kill: A is issued tokens again; its token from before the kill stays dead', async () => {
      const lifted = await admin('DELETE', `/admin/revocations/${killId}`)
      expect(lifted.status).toBe(200)
      expect(lifted.body['in_force']).toBe(false)
      // Kills are keyed on issue time: a token of the kill's second would stay dead.
      s.b.advance(1)
      const again = await issued(asCopy(COPY_A))
      expect(decodeJwt(again)['act']).toEqual({ sub: 'worker', instance: COPY_A })
      expect(await introspect(again)).toBe(true)
      expect(await introspect(tokenA)).toBe(false)
    })

    it('refuses a kill form without an agent, or with a malformed instance', async () => {
      for (const body of [{ instance: COPY_A }, { agent: 'worker', instance: 'has space' }, { agent: 'worker', instance: '' }]) {
        const r = await admin('POST', '/admin/revocations', { ...body, reason: 'r' })
        expect(r.status, JSON.stringify(body)).toBe(400)
        expect(r.body['error']).toBe('invalid_request')
      }
      const auditorTried = await admin('POST', '/admin/revocations', { agent: 'worker', instance: COPY_B, reason: 'r' }, ADMIN_KEYS.auditor)
      expect(auditorTried.status).toBe(403)
    })
  })
}

// ---------------------------------------------------------------- PGlite

describeInstanceKill('the instance kill on PGlite', describe, async (bundleFile) => {
  const b = await startTestBroker({
    policies: POLICIES,
    embedded: true,
    sqlAudit: true,
    logLevel: 'warn',
    spiffe: [{ trust_domain: TRUST_DOMAIN, bundle_file: bundleFile }],
  })
  return { b, cleanup: () => b.close() }
})

// ---------------------------------------------------------------- PostgreSQL and Redis

const redisReachable = await redisAvailable('instance-kill')
describeInstanceKill(
  'the instance kill on PostgreSQL and Redis',
  redisReachable ? describePostgres : (describe.skip as typeof describe),
  async (bundleFile) => {
    const db: TestDatabase = await createTestDatabase()
    const prefix = `mandate-test-instance:${randomUUID()}:`
    const b = await startTestBroker({
      policies: POLICIES,
      database: db.url,
      sqlAudit: true,
      storage: { redis_url: REDIS_URL, key_prefix: prefix },
      logLevel: 'warn',
      spiffe: [{ trust_domain: TRUST_DOMAIN, bundle_file: bundleFile }],
    })
    return {
      b,
      cleanup: async () => {
        await b.close()
        const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
        try {
          await deletePrefix(redis, prefix)
        } finally {
          redis.disconnect()
        }
        await db.drop()
      },
    }
  },
)

// ---------------------------------------------------------------- workload identity

describe('a workload identity’s instance', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ workloadInstanceClaim: 'pod_name', logLevel: 'warn' })
  })
  afterAll(async () => {
    await b?.close()
  })

  const asWorkload = async (claims: Record<string, unknown>) => {
    const res = await b.token(
      b.exchangeForm(await b.userToken(), {
        actor_token: await b.workloads.sign(claims, { typ: 'JWT' }),
        actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      }),
    )
    return json(res)
  }

  it('is the claim the issuer’s instance_claim names; a token without it is refused', async () => {
    const r1 = await asWorkload({ pod_name: 'runner-7f9c' })
    expect(r1.status, JSON.stringify(r1.body)).toBe(200)
    expect(decodeJwt(r1.body['access_token'] as string)['act']).toEqual({ sub: 'workload-agent', instance: 'runner-7f9c' })
    const missing = await asWorkload({})
    expect(missing.status).toBe(401)
    expect(missing.body['error']).toBe('invalid_client')
    const bad = await asWorkload({ pod_name: 'two words' })
    expect(bad.status).toBe(401)
  })

  it('is killed alone: another pod of the same workload keeps working', async () => {
    await b.revocations.revoke({ kind: 'instance', agent: 'workload-agent' as never, instance: 'runner-dead' })
    const dead = await asWorkload({ pod_name: 'runner-dead' })
    expect(dead.status).toBe(400)
    expect(dead.body['error']).toBe('unauthorized_client')
    const alive = await asWorkload({ pod_name: 'runner-alive' })
    expect(alive.status).toBe(200)
  })
})
