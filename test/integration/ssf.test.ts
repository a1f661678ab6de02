/**
 * Revocations as Security Event Tokens, end to end on PostgreSQL: kills made
 * through the admin API reach a real receiver (node:http, verifying each SET
 * with jose against the broker's JWKS), pushed in order with retries, or
 * polled; and two brokers on one database push each SET once.
 *
 * Timing bound: on an idle machine a push arrives about 10-100 ms after the
 * kill's answer (one log read, one signature, one insert, one POST); the
 * tests allow 2 s, for a loaded two-core machine.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { Validator } from '@seriousme/openapi-schema-validator'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EVENT_TYPES, setJti } from '../../src/ssf/events.js'
import { ADMIN_KEYS, basic, bearer, BROKER, RESOURCE_SERVERS, RS_SECRET, startTestBroker, T0, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { startSetReceiver, type ReceivedSet, type SetReceiver } from '../support/set-receiver.js'

const PUSH_AUDIENCE = 'https://siem.test'
const POLL_AUDIENCE = 'https://rs.test/events'
const PUSH_BOUND_MS = 2_000
const PUSH_AUTHORIZATION = 'Bearer siem-push-credential-7c1d9e'

const ssfConfig = (url: string, authorizationFile: string) => ({
  receivers: [
    { name: 'siem', audience: PUSH_AUDIENCE, delivery: { method: 'push', endpoint_url: url, authorization_file: authorizationFile } },
    { name: 'rs-api', audience: POLL_AUDIENCE, delivery: { method: 'poll', resource_server: RESOURCE_SERVERS.api } },
  ],
  retry: { initial_delay_ms: 20, max_delay_ms: 100, max_attempts: 5 },
  scan_interval_ms: 100,
  long_poll_max_seconds: 5,
})

async function kill(broker: TestBroker, body: Record<string, unknown>): Promise<{ id: string; answeredAt: number }> {
  const res = await broker.mandate.app.request('/admin/revocations', {
    method: 'POST',
    headers: { ...bearer(ADMIN_KEYS.responder), 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'incident 42', ...body }),
  })
  const answeredAt = performance.now()
  expect(res.status).toBe(201)
  return { id: ((await res.json()) as { id: string }).id, answeredAt }
}

async function jwksOf(...brokers: TestBroker[]): Promise<JSONWebKeySet> {
  const sets = await Promise.all(brokers.map(async (b) => (await (await b.mandate.app.request('/.well-known/jwks.json')).json()) as JSONWebKeySet))
  return { keys: sets.flatMap((s) => s.keys) }
}

async function poll(broker: TestBroker, body: unknown, headers: Record<string, string> = basic(RESOURCE_SERVERS.api, RS_SECRET)): Promise<Response> {
  return broker.mandate.app.request('/ssf/poll', {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
}

/** Waits (bounded) until `check` holds; polls every 10 ms. */
async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describePostgres('revocations as Security Event Tokens (one broker)', () => {
  let db: TestDatabase
  let dir: string
  let receiver: SetReceiver
  let broker: TestBroker
  const latencies: number[] = []

  beforeAll(async () => {
    db = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'mandate-ssf-'))
    const authorizationFile = join(dir, 'siem-authorization')
    await writeFile(authorizationFile, `${PUSH_AUTHORIZATION}\n`)
    let jwks: JSONWebKeySet = { keys: [] }
    receiver = await startSetReceiver({ jwks: async () => jwks, audience: PUSH_AUDIENCE, issuer: BROKER, currentDate: new Date(T0 * 1000) })
    broker = await startTestBroker({ database: db.url, ssf: ssfConfig(receiver.url, authorizationFile) })
    jwks = await jwksOf(broker)
  })

  afterAll(async () => {
    if (latencies.length > 0) console.info(`SET push latency after the kill's answer (ms): ${latencies.map((l) => l.toFixed(1)).join(', ')}`)
    await broker?.close()
    await receiver?.close()
    await db?.drop()
    await rm(dir, { recursive: true, force: true })
  })

  const cases: readonly {
    name: string
    body: Record<string, unknown>
    type: string
    subId: Record<string, unknown>
    payload: Record<string, unknown>
  }[] = [
    { name: 'token', body: { jti: 'tok-1' }, type: EVENT_TYPES.token, subId: { format: 'opaque', id: 'tok-1' }, payload: { jti: 'tok-1' } },
    { name: 'chain', body: { chain: 'tok-2' }, type: EVENT_TYPES.chain, subId: { format: 'opaque', id: 'tok-2' }, payload: { jti: 'tok-2' } },
    { name: 'agent', body: { agent: 'jwt-agent' }, type: EVENT_TYPES.agent, subId: { format: 'opaque', id: 'jwt-agent' }, payload: { agent: 'jwt-agent' } },
    {
      name: 'user',
      body: { sub: 'alice' },
      type: EVENT_TYPES.user,
      subId: { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' },
      payload: { iss: USER_ISSUER, sub: 'alice' },
    },
    {
      name: 'agent+user',
      body: { agent: 'secret-agent', sub: 'bob' },
      type: EVENT_TYPES.agentUser,
      subId: { format: 'iss_sub', iss: USER_ISSUER, sub: 'bob' },
      payload: { agent: 'secret-agent', iss: USER_ISSUER, sub: 'bob' },
    },
  ]

  for (const k of cases) {
    it(`pushes a ${k.name} kill as a verified SET within ${PUSH_BOUND_MS} ms`, async () => {
      const { id, answeredAt } = await kill(broker, k.body)
      const got = await receiver.waitFor((r) => r.claims.txn === id, PUSH_BOUND_MS)
      latencies.push(got.at - answeredAt)
      expect(got.typ).toBe('secevent+jwt')
      expect(got.contentType).toBe('application/secevent+jwt')
      expect(got.authorization).toBe(PUSH_AUTHORIZATION)
      expect(got.claims.iss).toBe(BROKER)
      expect(got.claims.aud).toBe(PUSH_AUDIENCE)
      expect(got.claims.iat).toBe(T0)
      expect(got.claims.jti).toBe(setJti(id, 'siem', k.type as never))
      expect(Object.keys(got.claims.events)).toEqual([k.type])
      expect(got.claims.sub_id).toEqual(k.subId)
      expect(got.claims.events[k.type]).toEqual({
        ...k.payload,
        event_timestamp: T0,
        initiating_entity: 'admin',
        reason_admin: { en: 'incident 42' },
      })
    })
  }

  it('follows a user kill with CAEP session-revoked, a SET of its own', async () => {
    const { id } = await kill(broker, { sub: 'carol' })
    const caep = await receiver.waitFor((r) => r.claims.txn === id && EVENT_TYPES.sessionRevoked in r.claims.events, PUSH_BOUND_MS)
    const mine = receiver.received.filter((r) => r.claims.txn === id)
    // In order: the Mandate event first.
    expect(mine.map((r) => Object.keys(r.claims.events)[0])).toEqual([EVENT_TYPES.user, EVENT_TYPES.sessionRevoked])
    expect(caep.claims.sub_id).toEqual({ format: 'iss_sub', iss: USER_ISSUER, sub: 'carol' })
    expect(caep.claims.events[EVENT_TYPES.sessionRevoked]).toEqual({ event_timestamp: T0, initiating_entity: 'admin', reason_admin: { en: 'incident 42' } })
    expect(caep.claims.jti).not.toBe(mine[0]!.claims.jti)
  })

  it('retries a SET answered 500 until 202, with the same jti and bytes, then moves on', async () => {
    receiver.respond = (claims, attempt) => (claims.events[EVENT_TYPES.agent]?.['agent'] === 'sub-agent' && attempt <= 2 ? { status: 500 } : { status: 202 })
    try {
      const { id } = await kill(broker, { agent: 'sub-agent' })
      const next = await kill(broker, { jti: 'after-retries' })
      await receiver.waitFor((r) => r.claims.txn === next.id, PUSH_BOUND_MS)
      const tries = receiver.received.filter((r) => r.claims.txn === id)
      expect(tries.map((r) => r.status)).toEqual([500, 500, 202])
      expect(new Set(tries.map((r) => r.set)).size).toBe(1)
      // In order per receiver: the next kill's SET came after the retried one was accepted.
      const order = receiver.received.map((r) => r.claims.txn)
      expect(order.lastIndexOf(id)).toBeLessThan(order.indexOf(next.id))
    } finally {
      receiver.respond = () => ({ status: 202 })
    }
  })

  it('does not retry a SET the receiver refused (400 with an error body)', async () => {
    receiver.respond = (claims) =>
      claims.events[EVENT_TYPES.token]?.['jti'] === 'refused-token'
        ? { status: 400, body: { err: 'invalid_request', description: 'not for us' } }
        : { status: 202 }
    try {
      const { id } = await kill(broker, { jti: 'refused-token' })
      const next = await kill(broker, { jti: 'after-refusal' })
      await receiver.waitFor((r) => r.claims.txn === next.id, PUSH_BOUND_MS)
      expect(receiver.received.filter((r) => r.claims.txn === id).map((r) => r.status)).toEqual([400])
      expect(broker.logs().some((l) => l['msg'] === 'SET refused by its receiver (400)' && l['err'] === 'invalid_request')).toBe(true)
    } finally {
      receiver.respond = () => ({ status: 202 })
    }
  })

  it('gives a SET up after ssf.retry.max_attempts pushes, then moves on', async () => {
    receiver.respond = (claims) => (claims.events[EVENT_TYPES.token]?.['jti'] === 'always-503' ? { status: 503 } : { status: 202 })
    try {
      const { id } = await kill(broker, { jti: 'always-503' })
      const next = await kill(broker, { jti: 'after-giving-up' })
      // 5 attempts, waits of 10-20, 20-40, 40-80 and 50-100 ms between them.
      await receiver.waitFor((r) => r.claims.txn === next.id, PUSH_BOUND_MS)
      expect(receiver.received.filter((r) => r.claims.txn === id).map((r) => r.status)).toEqual([503, 503, 503, 503, 503])
      expect(broker.logs().some((l) => l['msg'] === 'SET given up after ssf.retry.max_attempts pushes')).toBe(true)
    } finally {
      receiver.respond = () => ({ status: 202 })
    }
  })

  it('publishes nothing when a kill is lifted', async () => {
    const { id } = await kill(broker, { agent: 'workload-agent' })
    await receiver.waitFor((r) => r.claims.txn === id, PUSH_BOUND_MS)
    const lifted = await broker.mandate.app.request(`/admin/revocations/${id}`, { method: 'DELETE', headers: bearer(ADMIN_KEYS.responder) })
    expect(lifted.status).toBe(200)
    const next = await kill(broker, { jti: 'after-lift' })
    await receiver.waitFor((r) => r.claims.txn === next.id, PUSH_BOUND_MS)
    expect(receiver.received.filter((r) => r.claims.txn === id)).toHaveLength(1)
  })

  it('never pushed a SET that did not verify', () => {
    expect(receiver.rejected).toEqual([])
  })

  describe('poll delivery (RFC 8936)', () => {
    const verify = async (set: string) =>
      (
        await jwtVerify(set, createLocalJWKSet(await jwksOf(broker)), {
          issuer: BROKER,
          audience: POLL_AUDIENCE,
          typ: 'secevent+jwt',
          currentDate: new Date(T0 * 1000),
        })
      ).payload as ReceivedSet['claims']

    it('answers a long poll with the kill made while it waited, keeps it until acknowledged, then drops it', async () => {
      // Drain what the earlier tests queued for this receiver.
      const first = (await (await poll(broker, { returnImmediately: true, maxEvents: 1000 })).json()) as { sets: Record<string, string> }
      await poll(broker, { ack: Object.keys(first.sets), maxEvents: 0 })

      const started = performance.now()
      const waiting = poll(broker, { maxEvents: 10 })
      const { id } = await kill(broker, { agent: 'expired-agent' })
      const res = await waiting
      expect(performance.now() - started).toBeLessThan(PUSH_BOUND_MS + 1000)
      expect(res.status).toBe(200)
      expect(res.headers.get('cache-control')).toBe('no-store')
      const answer = (await res.json()) as { sets: Record<string, string>; moreAvailable: boolean }
      const entries = Object.entries(answer.sets)
      expect(entries).toHaveLength(1)
      const [jti, set] = entries[0]!
      const claims = await verify(set)
      expect(claims.jti).toBe(jti)
      expect(claims.txn).toBe(id)
      expect(claims.jti).toBe(setJti(id, 'rs-api', EVENT_TYPES.agent))

      // Not acknowledged: returned again, the same SET.
      const again = (await (await poll(broker, { returnImmediately: true })).json()) as { sets: Record<string, string> }
      expect(again.sets).toEqual(answer.sets)
      // Acknowledged: gone.
      const acked = (await (await poll(broker, { ack: [jti], returnImmediately: true })).json()) as { sets: Record<string, string>; moreAvailable: boolean }
      expect(acked).toEqual({ sets: {}, moreAvailable: false })
    })

    it('drops a SET reported in setErrs', async () => {
      const { id } = await kill(broker, { jti: 'poll-error' })
      await until(
        async () => Object.keys(((await (await poll(broker, { returnImmediately: true })).json()) as { sets: object }).sets).length > 0,
        PUSH_BOUND_MS,
        'queued',
      )
      const jti = setJti(id, 'rs-api', EVENT_TYPES.token)
      const res = await poll(broker, { setErrs: { [jti]: { err: 'invalid_key', description: 'unknown key' } }, returnImmediately: true })
      expect(await res.json()).toEqual({ sets: {}, moreAvailable: false })
    })

    it('refuses an unauthenticated poll (401) and a wrong secret (401)', async () => {
      for (const headers of [{}, basic(RESOURCE_SERVERS.api, 'wrong-secret-0000000000000000')]) {
        const res = await poll(broker, { returnImmediately: true }, headers)
        expect(res.status).toBe(401)
        expect(res.headers.get('cache-control')).toBe('no-store')
        expect(res.headers.get('www-authenticate')).toMatch(/^Basic /)
        expect(await res.json()).toEqual({ err: 'authentication_failed', description: 'client authentication failed' })
      }
    })

    it('refuses a malformed poll (400)', async () => {
      for (const body of [{ maxEvents: -1 }, { ack: 'x' }, { extra: true }, []]) {
        const res = await poll(broker, body)
        expect(res.status).toBe(400)
        expect(((await res.json()) as { err: string }).err).toBe('invalid_request')
      }
      const notJson = await broker.mandate.app.request('/ssf/poll', {
        method: 'POST',
        headers: { ...basic(RESOURCE_SERVERS.api, RS_SECRET), 'content-type': 'application/x-www-form-urlencoded' },
        body: 'maxEvents=1',
      })
      expect(notJson.status).toBe(400)
    })

    it('publishes transmitter metadata', async () => {
      const res = await broker.mandate.app.request('/.well-known/ssf-configuration')
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({
        issuer: BROKER,
        jwks_uri: `${BROKER}/.well-known/jwks.json`,
        delivery_methods_supported: ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936'],
      })
    })

    it('documents its routes in a valid OpenAPI document', async () => {
      const doc = (await (await broker.mandate.app.request('/openapi.json')).json()) as { paths: Record<string, object> }
      expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/ssf/poll', '/.well-known/ssf-configuration']))
      expect((await new Validator().validate(structuredClone(doc))).valid).toBe(true)
    })
  })
})

describePostgres('revocations as Security Event Tokens (two brokers, one database)', () => {
  let db: TestDatabase
  let dir: string
  let receiver: SetReceiver
  let brokers: TestBroker[] = []

  beforeAll(async () => {
    db = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'mandate-ssf-'))
    const authorizationFile = join(dir, 'siem-authorization')
    await writeFile(authorizationFile, PUSH_AUTHORIZATION)
    // A kill made before any receiver existed: a new stream starts from "now", so it is never sent.
    const before = await startTestBroker({ database: db.url, startAt: T0 - 3600 })
    await before.revocations.killAgent('sub-agent' as never)
    await before.close()
    receiver = await startSetReceiver({ jwks: () => jwksOf(...brokers), audience: PUSH_AUDIENCE, issuer: BROKER, currentDate: new Date(T0 * 1000) })
    const config = ssfConfig(receiver.url, authorizationFile)
    brokers = [await startTestBroker({ database: db.url, ssf: config }), await startTestBroker({ database: db.url, ssf: config })]
  })

  afterAll(async () => {
    for (const b of brokers) await b.close()
    await receiver?.close()
    await db?.drop()
    await rm(dir, { recursive: true, force: true })
  })

  it('pushes each SET once, whichever broker made the kill, and nothing from before the stream began', async () => {
    const ids: string[] = []
    for (let i = 0; i < 6; i++) ids.push((await kill(brokers[i % 2]!, { jti: `two-${i}` })).id)
    for (const id of ids) await receiver.waitFor((r) => r.claims.txn === id, PUSH_BOUND_MS * 2)
    // Settled in the database: no push is left to make, so a duplicate could only already have arrived.
    const sql = postgres(db.url, { max: 1, onnotice: () => {} })
    try {
      await until(
        async () => (await sql`select count(*)::int as n from ssf_outbox where receiver = 'siem' and state = 'pending'`)[0]!['n'] === 0,
        PUSH_BOUND_MS,
        'outbox settled',
      )
    } finally {
      await sql.end({ timeout: 1 })
    }
    const jtis = receiver.received.map((r) => r.claims.jti)
    expect(jtis).toHaveLength(6)
    expect(new Set(jtis).size).toBe(6)
    expect(receiver.received.map((r) => r.claims.txn).sort()).toEqual([...ids].sort())
    expect(receiver.rejected).toEqual([])
  })
})
