/**
 * Rate limits across instances: two brokers sharing one Redis key prefix
 * draw from one bucket per agent and one per (agent, user), and a request
 * makes one admission command: the assertion's jti and every bucket in a
 * single script call (seen with MONITOR, filtered to this file's prefix).
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379); the prefix is the
 * file's own and is deleted afterwards.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import { AUDIENCE, basic, CLIENT_ASSERTION_TYPE_JWT, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { exchange, expectOAuthError, expectToken } from '../unit/http/helpers.js'

const reachable = await redisAvailable('rate-limit-redis')

const LIMITED = `${secretAgentPolicy('limited-agent', USER_ISSUER)}rate_limit:
  agent: { rate: 1/min, burst: 3 }
`
/** A private_key_jwt agent with both limits: its requests spend a jti and draw two buckets. */
const jwtAgentPolicy = (jwk: JWK) => `agent: jwt-agent
owner: security@example.com
purpose: test agent
expires: 2099-01-01
authentication: { method: private_key_jwt, jwks: { keys: [${JSON.stringify(jwk)}] } }
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
rate_limit:
  agent: { rate: 600/min }
  user: { rate: 60/min }
`

describe.skipIf(!reachable)('rate limits shared by every instance (Redis)', () => {
  const prefix = `mandate-test:${randomUUID()}:`
  let redis: Redis
  let a: TestBroker
  let b: TestBroker

  beforeAll(async () => {
    redis = new Redis(REDIS_URL, REDIS_CLIENT_OPTIONS)
    redis.on('error', () => {})
    // One agent key for both, so that b accepts a's jwt-agent assertions too (and refuses their replay).
    const agentKeys = await generateKeyPair('ES256', { extractable: true })
    const jwk = { ...(await exportJWK(agentKeys.publicKey)), kid: 'agent-key-1', alg: 'ES256' }
    const policies = { 'limited-agent.yaml': LIMITED, 'jwt-agent.yaml': jwtAgentPolicy(jwk) }
    a = await startTestBroker({ storage: { redis_url: REDIS_URL, key_prefix: prefix }, policies, agentKeys })
    b = await startTestBroker({ storage: { redis_url: REDIS_URL, key_prefix: prefix }, policies, agentKeys })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })

  const limited = async (broker: TestBroker) => broker.token(exchange(await broker.userToken()), basic('limited-agent', SECRET))

  it('draws both brokers’ requests from one bucket', async () => {
    await expectToken(await limited(a))
    await expectToken(await limited(b))
    await expectToken(await limited(a))
    for (const broker of [a, b]) {
      const res = await limited(broker)
      await expectOAuthError(res, 429, 'temporarily_unavailable')
      expect(res.headers.get('retry-after')).toBe('60')
    }
    a.advance(60)
    b.advance(60)
    // A clock that jumped leaves the revocation mirror stale until its next read of Redis.
    await vi.waitFor(() => expect(a.mandate.revocations.fresh() && b.mandate.revocations.fresh()).toBe(true))
    await expectToken(await limited(b))
    await expectOAuthError(await limited(a), 429, 'temporarily_unavailable')
  })

  it('spends an assertion and draws the agent and user buckets in one script call per request, a replay included', async () => {
    const monitor = await new Redis(REDIS_URL).monitor()
    const seen: string[][] = []
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      // The commands a script runs are shown too, marked `lua`: only what a client sent counts.
      if (source !== 'lua' && args.some((x) => x.startsWith(`${prefix}jti:`) || x.startsWith(`${prefix}rl:`))) seen.push(args)
    })
    try {
      const user = await a.userToken()
      const spent = await a.assertion()
      const withAssertion = (assertion: string) => ({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: assertion })
      await expectToken(await a.token(exchange(user, withAssertion(spent))))
      await expectOAuthError(await b.token(exchange(await b.userToken(), withAssertion(spent))), 401, 'invalid_client')
      // MONITOR lines arrive asynchronously: one more command of our own marks the end.
      await redis.set(`${prefix}jti:end-marker`, '1', 'PX', 1000)
      await new Promise<void>((resolve) => {
        const check = () => (seen.some((s) => s.includes(`${prefix}jti:end-marker`)) ? resolve() : setTimeout(check, 10))
        check()
      })
      const admissions = seen.filter((s) => !s.includes(`${prefix}jti:end-marker`))
      // Two requests, two commands: each one EVAL(SHA) with the marker, the jti, the agent's and the user's bucket.
      expect(admissions).toHaveLength(2)
      for (const command of admissions) {
        expect(command[0]!.toLowerCase()).toMatch(/^eval(sha)?$/)
        const keys = command.slice(3, 3 + Number(command[2]))
        expect(keys).toEqual([
          `${prefix}replay:since`,
          expect.stringMatching(/jti:jwt-agent:/),
          `${prefix}rl:a:jwt-agent`,
          expect.stringMatching(/rl:u:jwt-agent:/),
        ])
      }
    } finally {
      monitor.disconnect()
    }
  })
})
