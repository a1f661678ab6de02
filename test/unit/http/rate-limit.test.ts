/**
 * A policy's `rate_limit` at the token endpoint, with the embedded (process
 * memory) store: 429 with Retry-After and an RFC 6749-shaped body; a bucket
 * per agent and one per (agent, user); no audit record for a refused
 * request, a metric, and one log line per agent per interval; and 503 when
 * the store cannot answer. The clock is injected: buckets refill by
 * `advance`, never by sleeping.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { AdmissionStore } from '../../../src/admission/port.js'
import { AUDIENCE, basic, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER, type TestBroker, type TestBrokerOptions } from '../../support/broker.js'
import { recorder, valueAt } from '../telemetry/support.js'
import { exchange, expectOAuthError, expectToken } from './helpers.js'

/** 60/min with a burst of 2 for the agent; 1/min for each of its users. */
const LIMITED = `${secretAgentPolicy('limited-agent', USER_ISSUER)}rate_limit:
  agent: { rate: 60/min, burst: 2 }
`
const PER_USER = `${secretAgentPolicy('per-user-agent', USER_ISSUER)}rate_limit:
  agent: { rate: 600/min, burst: 100 }
  user: { rate: 1/min }
`

const brokers: TestBroker[] = []
afterEach(async () => {
  while (brokers.length > 0) await brokers.pop()!.close()
})

async function start(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const b = await startTestBroker({ ...options, policies: { 'limited-agent.yaml': LIMITED, 'per-user-agent.yaml': PER_USER, ...options.policies } })
  brokers.push(b)
  return b
}

async function exchangeAs(b: TestBroker, agent: string, sub = 'alice', subjectToken?: string): Promise<Response> {
  return b.token(exchange(subjectToken ?? (await b.userToken({ sub }))), basic(agent, SECRET))
}

const records = (b: TestBroker, type: string) => b.audit.events().filter((e) => e.type === type)

async function expectLimited(res: Response, retryAfter: string): Promise<void> {
  await expectOAuthError(res, 429, 'temporarily_unavailable')
  expect(res.headers.get('retry-after')).toBe(retryAfter)
}

describe('rate limits at the token endpoint', () => {
  it('lets the burst through, then answers 429 temporarily_unavailable with Retry-After until a token refills', async () => {
    const b = await start()
    await expectToken(await exchangeAs(b, 'limited-agent'))
    await expectToken(await exchangeAs(b, 'limited-agent'))
    await expectLimited(await exchangeAs(b, 'limited-agent'), '1')
    await expectLimited(await exchangeAs(b, 'limited-agent'), '1')
    b.advance(1)
    await expectToken(await exchangeAs(b, 'limited-agent'))
    await expectLimited(await exchangeAs(b, 'limited-agent'), '1')
    // Other agents are not limited by it.
    await expectToken(await exchangeAs(b, 'secret-agent'))
    // Three tokens issued; the refused requests left no audit record.
    expect(records(b, 'token.issued')).toHaveLength(4)
    expect(records(b, 'token.denied')).toHaveLength(0)
  })

  it('refuses a flood of bad requests at the limit without an audit record for each', async () => {
    const b = await start()
    // A denied request draws from the bucket too: the flood is what the limit is for.
    for (let i = 0; i < 2; i++)
      await expectOAuthError(await b.token(exchange(await b.userToken(), { scope: 'admin' }), basic('limited-agent', SECRET)), 400, 'invalid_scope')
    for (let i = 0; i < 20; i++) {
      await expectLimited(await b.token(exchange(await b.userToken(), { scope: 'admin' }), basic('limited-agent', SECRET)), '1')
      await expectLimited(await b.token(exchange('not-a-jwt'), basic('limited-agent', SECRET)), '1')
    }
    expect(records(b, 'token.denied')).toHaveLength(2)
  })

  it('keeps a bucket per user of the agent: alice is limited, bob is not', async () => {
    const b = await start()
    await expectToken(await exchangeAs(b, 'per-user-agent', 'alice'))
    await expectLimited(await exchangeAs(b, 'per-user-agent', 'alice'), '60')
    await expectToken(await exchangeAs(b, 'per-user-agent', 'bob'))
    b.advance(60)
    await expectToken(await exchangeAs(b, 'per-user-agent', 'alice'))
  })

  it('counts a per-user agent’s requests whose subject token fails against its agent bucket', async () => {
    const b = await start({
      policies: {
        'per-user-agent.yaml': `${secretAgentPolicy('per-user-agent', USER_ISSUER)}rate_limit:\n  agent: { rate: 1/min, burst: 2 }\n  user: { rate: 1/min }\n`,
      },
    })
    await expectOAuthError(await exchangeAs(b, 'per-user-agent', 'alice', 'not-a-jwt'), 400, 'invalid_request')
    await expectOAuthError(await exchangeAs(b, 'per-user-agent', 'alice', 'not-a-jwt'), 400, 'invalid_request')
    await expectLimited(await exchangeAs(b, 'per-user-agent', 'alice', 'not-a-jwt'), '60')
    await expectLimited(await exchangeAs(b, 'per-user-agent', 'bob'), '60')
  })

  it('fails closed: 503 when the store cannot answer, and nothing is issued', async () => {
    const broken: AdmissionStore = { admit: () => Promise.reject(new Error('connection refused')) }
    const b = await start({ admission: broken })
    const res = await exchangeAs(b, 'limited-agent')
    await expectOAuthError(res, 503, 'temporarily_unavailable')
    expect(res.headers.get('retry-after')).toBe('1')
    // An agent without limits or assertion needs no store: unaffected.
    await expectToken(await exchangeAs(b, 'secret-agent'))
    expect(records(b, 'token.issued')).toHaveLength(1)
  })

  it('counts refusals in mandate.rate_limited and mandate.tokens.denied, and logs them once per agent per interval', async () => {
    const rec = recorder()
    const b = await start({ telemetry: rec.exporters })
    await expectToken(await exchangeAs(b, 'limited-agent'))
    await expectToken(await exchangeAs(b, 'limited-agent'))
    for (let i = 0; i < 5; i++) await expectLimited(await exchangeAs(b, 'limited-agent'), '1')
    const metrics = await rec.metrics()
    expect(valueAt(metrics, 'mandate.rate_limited', { agent: 'limited-agent', limit: 'agent' })).toBe(5)
    expect(valueAt(metrics, 'mandate.tokens.denied', { agent: 'limited-agent', audience: AUDIENCE, error: 'rate_limited' })).toBe(5)
    brokers.pop()
    await b.close()
    const summaries = b.logs().filter((l) => l['msg'] === 'token exchanges refused by rate limits')
    expect(summaries).toHaveLength(1)
    expect(summaries[0]).toMatchObject({ agent: 'limited-agent', refused: 5, causes: { agent: 5 }, level: 'info' })
    // Besides the one request line each, nothing per refusal above debug.
    const perRefusal = b.logs().filter((l) => l['msg'] !== 'request' && l['level'] !== 'debug' && JSON.stringify(l).includes('limited-agent'))
    expect(perRefusal).toEqual(summaries)
  })
})
