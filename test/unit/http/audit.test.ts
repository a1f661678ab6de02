/**
 * What the delegation log records (docs/ARCHITECTURE.md "The delegation log"): every issuance and
 * every authenticated denial, with its error code; nothing for a failure
 * before client authentication, so it cannot be flooded; never a credential.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AuditEvent } from '../../../src/audit/port.js'
import type { AgentId, Subject } from '../../../src/core/claims.js'
import { AUDIENCE, basic, CLIENT_ASSERTION_TYPE_JWT, SECRET, TOKEN_TYPE } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, rawUserToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

describe('audit of token-endpoint outcomes', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(() => b.close())

  /** Runs `act` and returns the audit events it appended. */
  const appended = async (act: () => Promise<unknown>) => {
    const before = b.audit.events().length
    await act()
    return b.audit.events().slice(before)
  }
  const user = async (claims: Record<string, unknown> = {}) => b.secret(await b.userToken(claims))
  const secretAgent = () => basic('secret-agent', SECRET)
  const withAssertion = (assertion: string) => ({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: b.secret(assertion) })

  it('records an issuance as one token.issued event', async () => {
    const events = await appended(async () => expectToken(await b.token(exchange(await user()), secretAgent())))
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ type: 'token.issued', agent: 'secret-agent', sub: 'alice', audience: AUDIENCE })
  })

  it.each([
    ['invalid_scope', async () => b.token(exchange(await user(), { scope: 'admin' }), secretAgent()), 'alice'],
    ['invalid_target', async () => b.token(exchange(await user(), { audience: 'https://nope.test', scope: 'read' }), secretAgent()), 'alice'],
    ['invalid_target', async () => b.token(exchange(await user(), { audience: [AUDIENCE, 'https://nope.test'] }), secretAgent()), 'alice'],
  ] as const)('records an authenticated %s denial as token.denied with that code', async (code, send, sub) => {
    const events = await appended(async () => expectOAuthError(await send(), 400, code))
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ type: 'token.denied', agent: 'secret-agent' as AgentId, sub: sub as Subject, error: code, at: b.now() })
    expect(typeof (events[0] as { reason?: unknown }).reason).toBe('string')
  })

  it('records a refused subject token as token.denied invalid_request (agent known, user not)', async () => {
    const events = await appended(async () =>
      expectOAuthError(await b.token(exchange(b.secret(rawUserToken(b, { aud: 'https://x.test' }))), secretAgent()), 400, 'invalid_request'),
    )
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ type: 'token.denied', agent: 'secret-agent', sub: undefined, error: 'invalid_request' })
  })

  it('records an expired policy as token.denied unauthorized_client', async () => {
    const events = await appended(async () =>
      expectOAuthError(await b.token(exchange(await user()), basic('expired-agent', SECRET)), 400, 'unauthorized_client'),
    )
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ type: 'token.denied', agent: 'expired-agent', error: 'unauthorized_client' })
  })

  it('records a killed agent as token.denied unauthorized_client', async () => {
    await b.revocations.killAgent('secret-agent' as AgentId, b.now())
    try {
      const events = await appended(async () => expectOAuthError(await b.token(exchange(await user()), secretAgent()), 400, 'unauthorized_client'))
      expect(events).toHaveLength(1)
      expect(events[0]).toMatchObject({ type: 'token.denied', agent: 'secret-agent', sub: 'alice', error: 'unauthorized_client' })
    } finally {
      await b.revocations.liftAgent('secret-agent' as AgentId)
      b.advance(1)
    }
  })

  describe('records nothing before the client is authenticated', () => {
    it.each([
      ['a wrong secret', async () => b.token(exchange(await user()), basic('secret-agent', 'wrong-secret-value')), 401, 'invalid_client'],
      ['an unknown agent', async () => b.token(exchange(await user()), basic('nobody', SECRET)), 401, 'invalid_client'],
      ['no client authentication', async () => b.token(exchange(await user())), 401, 'invalid_client'],
      [
        'an assertion signed for another audience',
        async () => b.token(exchange(await user(), withAssertion(await b.assertion({ aud: 'https://x.test' })))),
        401,
        'invalid_client',
      ],
      ['client_secret in the body', async () => b.token(exchange(await user(), { client_id: 'secret-agent', client_secret: SECRET })), 401, 'invalid_client'],
      ['an unknown grant', async () => b.token(exchange(await user(), { grant_type: 'password' }), secretAgent()), 400, 'unsupported_grant_type'],
      ['two authentication methods', async () => b.token(exchange(await user(), withAssertion(await b.assertion())), secretAgent()), 400, 'invalid_request'],
      [
        'an id_token subject type',
        async () => b.token(exchange(await user(), { subject_token_type: TOKEN_TYPE.idToken }), secretAgent()),
        400,
        'invalid_request',
      ],
      [
        'a refused workload actor_token',
        async () => b.token(exchange(await user(), { actor_token: await user(), actor_token_type: TOKEN_TYPE.jwt })),
        401,
        'invalid_client',
      ],
    ] as const)('%s', async (_name, send, status, code) => {
      const events = await appended(async () => expectOAuthError(await send(), status, code))
      expect(events).toEqual([])
    })

    it('a replayed assertion, even with an otherwise-denied request', async () => {
      const a = await b.assertion()
      const groups = { groups: ['engineering'] }
      await expectToken(await b.token(exchange(await user(groups), withAssertion(a))))
      const events = await appended(async () => {
        await expectOAuthError(await b.token(exchange(await user(groups), withAssertion(a))), 401, 'invalid_client')
        await expectOAuthError(await b.token(exchange(await user(groups), { scope: 'admin', ...withAssertion(a) })), 401, 'invalid_client')
      })
      expect(events).toEqual([])
    })

    it('an oversized body or a JSON body', async () => {
      const events = await appended(async () => {
        await expectOAuthError(await b.token(exchange(await user(), { pad: 'x'.repeat(65 * 1024) }), secretAgent()), 413, 'invalid_request')
        const res = await b.mandate.app.request('/oauth2/token', {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...secretAgent() },
          body: '{}',
        })
        await expectOAuthError(res, 400, 'invalid_request')
      })
      expect(events).toEqual([])
    })
  })

  it('holds no credential in any audit record', () => {
    const text = JSON.stringify(b.audit.events())
    b.secret(SECRET)
    expect(b.secrets().filter((s) => text.includes(s))).toEqual([])
  })

  it('logs no credential and a request_id on every request line', () => {
    expectCleanLogs(b)
  })
})

/**
 * Signing and the issuance record run at once (core/exchange.ts step 6–7);
 * whichever fails, no token leaves, and the log says what happened.
 */
describe('signing and the issuance record, run at once', () => {
  it('answers 503 temporarily_unavailable, and no token, when the token.issued record cannot be written', async () => {
    const b = await startTrackedBroker()
    try {
      const append = b.audit.append
      const before = b.audit.events().length
      b.audit.append = (event) => (event.type === 'token.issued' ? Promise.reject(new Error('database gone')) : append(event))
      const user = b.secret(await b.userToken())
      const res = await b.token(exchange(user), basic('secret-agent', SECRET))
      const body = await expectOAuthError(res, 503, 'temporarily_unavailable')
      expect(res.headers.get('retry-after')).toBe('1')
      expect(JSON.stringify(body)).not.toMatch(/access_token|eyJ/)
      expect(b.audit.events().slice(before)).toEqual([])
      b.audit.append = append
      await expectToken(await b.token(exchange(user), basic('secret-agent', SECRET)))
    } finally {
      await b.close()
    }
  })

  it('records token.withheld after a committed token.issued when signing fails, and answers 500 server_error without detail', async () => {
    const b = await startTrackedBroker({ minter: { mint: () => Promise.reject(new Error('signing key unavailable: /secret/path')) } })
    try {
      const before = b.audit.events().length
      const res = await b.token(exchange(b.secret(await b.userToken())), basic('secret-agent', SECRET))
      const body = await expectOAuthError(res, 500, 'server_error')
      expect(JSON.stringify(body)).not.toContain('/secret/path')
      const events = b.audit.events().slice(before)
      expect(events.map((e) => e.type)).toEqual(['token.issued', 'token.withheld'])
      const [issued, withheld] = events as [Extract<AuditEvent, { type: 'token.issued' }>, Extract<AuditEvent, { type: 'token.withheld' }>]
      expect(withheld).toMatchObject({ agent: 'secret-agent', sub: 'alice', jti: issued.jti })
      expect(withheld.reason).toMatch(/signing failed/)
    } finally {
      await b.close()
    }
  })
})
