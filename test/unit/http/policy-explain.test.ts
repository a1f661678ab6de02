/**
 * POST /admin/policy/explain: the decision and every check, from the exchange's own evaluation, against a real
 * broker's policies, kills and rate limits; each explanation is then compared with what /oauth2/token answers.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ADMIN_KEYS,
  AUDIENCE,
  basic,
  bearer,
  OTHER_AUDIENCE,
  SECRET,
  secretAgentPolicy,
  startTestBroker,
  USER_ISSUER,
  type TestBroker,
} from '../../support/broker.js'

const LIMITED = `${secretAgentPolicy('limited-agent', USER_ISSUER)}rate_limit:\n  agent: { rate: 1/h, burst: 3 }\n`
const LEAF = secretAgentPolicy('leaf-agent', USER_ISSUER)

interface Explained {
  decision: string
  status?: number
  error?: string
  failed_check?: string
  reason?: string | null
  grant?: { audience: string; scope: string; expires_in: number; actors: string[] }
  checks: { check: string; outcome: string; error?: string }[]
}

describe('POST /admin/policy/explain', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ policies: { 'limited-agent.yaml': LIMITED, 'leaf-agent.yaml': LEAF } })
  })
  afterAll(() => b.close())

  const explainRaw = (body: unknown, key: string = ADMIN_KEYS.auditor) =>
    b.mandate.app.request('/admin/policy/explain', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(key) },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    })
  const explain = async (body: Record<string, unknown>): Promise<Explained> => {
    const res = await explainRaw({ iss: USER_ISSUER, sub: 'alice', audience: AUDIENCE, claims: { scope: 'read write' }, ...body })
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    return (await res.json()) as Explained
  }
  const exchange = async (agent: string, claims: Record<string, unknown>, extra: Record<string, string>) =>
    b.token(b.exchangeForm(await b.userToken(claims), extra), basic(agent, SECRET))
  const outcome = (e: Explained, check: string) => e.checks.find((c) => c.check === check)?.outcome

  it('grants with every check passed, in the exchange’s order, and the real exchange grants the same', async () => {
    const e = await explain({ agent: 'secret-agent', scope: 'read write' })
    expect(e.decision).toBe('granted')
    expect(e.checks.map((c) => c.check)).toEqual([
      'agent.known',
      'subject.issuer',
      'subject.lifetime',
      'agent.in_force',
      'agent.delegator',
      'subject.not_delegated',
      'subject.may_act',
      'delegation.depth',
      'audience',
      'grant',
      'scope',
      'ttl',
      'revocation',
      'attestation',
      'rate_limit',
    ])
    expect(e.checks.every((c) => c.outcome === 'pass')).toBe(true)
    expect(e.grant).toEqual({ audience: AUDIENCE, scope: 'read write', expires_in: 300, actors: ['secret-agent'] })
    const res = await exchange('secret-agent', { scope: 'read write' }, { scope: 'read write' })
    expect(res.status).toBe(200)
    const token = (await res.json()) as { scope: string; expires_in: number }
    expect(token).toMatchObject({ scope: 'read write', expires_in: 300 })
  })

  it.each([
    ['scope not granted', { agent: 'secret-agent', scope: 'delete' }, 'scope', 'invalid_scope'],
    ['scope the user token lacks', { agent: 'secret-agent', scope: 'admin' }, 'scope', 'invalid_scope'],
    ['audience not granted', { agent: 'secret-agent', audience: 'https://nope.test' }, 'grant', 'invalid_target'],
    ['expired agent', { agent: 'expired-agent' }, 'agent.in_force', 'unauthorized_client'],
    ['user not a delegator', { agent: 'sub-agent', scope: 'read' }, 'agent.delegator', 'invalid_request'],
    ['user outside the claims rule', { agent: 'jwt-agent', claims: { scope: 'read', groups: ['sales'] } }, 'agent.delegator', 'invalid_request'],
    ['may_act for another agent', { agent: 'secret-agent', claims: { scope: 'read', may_act: { sub: 'jwt-agent' } } }, 'subject.may_act', 'invalid_request'],
    ['untrusted issuer', { agent: 'secret-agent', iss: 'https://evil.test' }, 'subject.issuer', 'invalid_request'],
    ['unknown agent', { agent: 'nobody' }, 'agent.known', 'invalid_client'],
  ])('%s: denied at its check, later checks not reached', async (_name, body, check, error) => {
    const e = await explain(body)
    expect(e).toMatchObject({ decision: 'denied', failed_check: check, error })
    expect(outcome(e, check)).toBe('fail')
    if (check !== 'agent.known') expect(outcome(e, 'revocation')).toBe('not_reached')
  })

  it.each([
    ['expired', (now: number) => ({ iat: now - 600, exp: now - 120 }), 'expired'],
    ['exp too far ahead (1e300)', (now: number) => ({ iat: now, exp: 1e300 }), 'exp_too_far'],
    ['exp a day and an hour ahead', (now: number) => ({ iat: now, exp: now + 25 * 3600 }), 'exp_too_far'],
    ['issued in the future', (now: number) => ({ iat: now + 3600, exp: now + 7200 }), 'issued_in_future'],
    ['not yet valid', (now: number) => ({ iat: now, nbf: now + 3600, exp: now + 7200 }), 'not_yet_valid'],
    ['negative exp', () => ({ iat: 1, exp: -1 }), 'bad_exp'],
  ])('a described user token the verifier refuses (%s) is denied at subject.lifetime, as the exchange answers', async (_name, times, reason) => {
    const claims = { scope: 'read', ...times(b.now()) }
    const e = await explain({ agent: 'secret-agent', scope: 'read', claims })
    expect(e).toMatchObject({ decision: 'denied', failed_check: 'subject.lifetime', error: 'invalid_request', reason })
    expect(outcome(e, 'subject.issuer')).toBe('pass')
    expect(outcome(e, 'revocation')).toBe('not_reached')
    const res = await exchange('secret-agent', claims, { scope: 'read' })
    expect(res.status).toBe(400)
    expect(await res.json()).toMatchObject({ error: 'invalid_request', error_description: 'subject_token is invalid or not acceptable' })
  })

  it('a described user token within its lifetime passes subject.lifetime, and one without times says it judged none', async () => {
    const now = b.now()
    const timed = await explain({ agent: 'secret-agent', scope: 'read', claims: { scope: 'read', iat: now - 10, exp: now + 3600 } })
    expect(timed.checks.find((c) => c.check === 'subject.lifetime')).toEqual({ check: 'subject.lifetime', outcome: 'pass' })
    const untimed = await explain({ agent: 'secret-agent', scope: 'read', claims: { scope: 'read' } })
    expect(untimed.checks.find((c) => c.check === 'subject.lifetime')).toMatchObject({
      outcome: 'pass',
      reason: expect.stringContaining('exp and iat not described'),
    })
  })

  it('scope not granted: the real exchange answers the same error', async () => {
    const e = await explain({ agent: 'secret-agent', scope: 'delete' })
    const res = await exchange('secret-agent', { scope: 'read write delete' }, { scope: 'delete' })
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: string }).error).toBe(e.error)
  })

  it('depth exceeded: explain with a chain agrees with a real re-delegation', async () => {
    const e = await explain({ agent: 'leaf-agent', scope: 'read', chain: ['secret-agent'] })
    expect(e).toMatchObject({ decision: 'denied', failed_check: 'delegation.depth', error: 'invalid_request' })
    const parent = await exchange('secret-agent', {}, { scope: 'read' })
    const { access_token } = (await parent.json()) as { access_token: string }
    const res = await b.token(b.exchangeForm(access_token, { scope: 'read' }), basic('leaf-agent', SECRET))
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request')
    // Within the limits (secret-agent may hand to sub-agent, depth 2 of 3) the chain is granted.
    expect((await explain({ agent: 'sub-agent', scope: 'read', chain: ['secret-agent'] })).decision).toBe('granted')
  })

  it('kills: a killed user, then a killed agent, are the revocation check’s refusal, as the exchange answers', async () => {
    await b.revocations.killUser('carol' as never)
    try {
      const e = await explain({ agent: 'secret-agent', sub: 'carol' })
      expect(e).toMatchObject({ decision: 'denied', failed_check: 'revocation', error: 'invalid_request' })
      expect(e.reason).toMatch(/carol|sub/)
      const res = await exchange('secret-agent', { sub: 'carol' }, {})
      expect(((await res.json()) as { error: string }).error).toBe('invalid_request')
    } finally {
      await b.revocations.liftUser('carol' as never)
    }
    await b.revocations.killAgent('leaf-agent' as never)
    try {
      const e = await explain({ agent: 'leaf-agent' })
      expect(e).toMatchObject({ decision: 'denied', failed_check: 'revocation', error: 'unauthorized_client' })
      const res = await exchange('leaf-agent', {}, {})
      expect(((await res.json()) as { error: string }).error).toBe('unauthorized_client')
    } finally {
      await b.revocations.liftAgent('leaf-agent' as never)
    }
    expect((await explain({ agent: 'leaf-agent' })).decision).toBe('granted')
  })

  it('reads the rate limit without drawing from it, and mints and records no token', async () => {
    const issuedBefore = b.audit.events().filter((r) => r.type === 'token.issued').length
    for (let i = 0; i < 10; i++) expect((await explain({ agent: 'limited-agent' })).decision).toBe('granted')
    expect(b.audit.events().filter((r) => r.type === 'token.issued').length).toBe(issuedBefore)
    for (let i = 0; i < 3; i++) expect((await exchange('limited-agent', {}, {})).status).toBe(200)
    const e = await explain({ agent: 'limited-agent' })
    expect(e).toMatchObject({ decision: 'denied', failed_check: 'rate_limit', status: 429, error: 'temporarily_unavailable' })
    expect((await exchange('limited-agent', {}, {})).status).toBe(429)
    // The exchange answers a limit before any other refusal: so does explain.
    expect(await explain({ agent: 'limited-agent', scope: 'delete' })).toMatchObject({ failed_check: 'rate_limit' })
  })

  it('records who asked (admin.policy.explained) before answering', async () => {
    const before = b.audit.events().length
    await explain({ agent: 'secret-agent' })
    const added = b.audit.events().slice(before)
    expect(added.map((r) => r.type)).toEqual(['admin.policy.explained'])
    expect(added[0]).toMatchObject({ by: 'auditor-holder' })
  })

  it('refuses junk with 400, no key with 401, a responder key with 403', async () => {
    for (const body of ['not json', '[]', { agent: 'secret-agent' }, { agent: 'x', iss: USER_ISSUER, sub: 'a', audience: AUDIENCE, extra: 1 }]) {
      const res = await explainRaw(body)
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: string }).error).toBe('invalid_request')
      expect(res.headers.get('cache-control')).toBe('no-store')
    }
    const bad = await explainRaw({ agent: 'secret-agent', iss: USER_ISSUER, sub: 'alice', audience: AUDIENCE, scope: 'a  b' })
    expect(bad.status).toBe(400)
    const noKey = await b.mandate.app.request('/admin/policy/explain', { method: 'POST', body: '{}' })
    expect(noKey.status).toBe(401)
    expect((await explainRaw({}, ADMIN_KEYS.responder)).status).toBe(403)
  })

  it('property: explain’s decision and error are what the real exchange then answers', async () => {
    const scopeSets = fc.subarray(['read', 'write', 'admin', 'delete'])
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          agent: fc.constantFrom('secret-agent', 'leaf-agent', 'expired-agent', 'sub-agent', 'limited-agent', 'nobody'),
          audience: fc.constantFrom(AUDIENCE, OTHER_AUDIENCE, 'https://nope.test'),
          scope: fc.option(scopeSets.filter((s) => s.length > 0)),
          userScope: scopeSets,
          sub: fc.constantFrom('alice', 'bob', 'dave'),
          killBob: fc.boolean(),
        }),
        async (r) => {
          if (r.killBob) await b.revocations.killUser('bob' as never)
          try {
            const claims = { scope: r.userScope.join(' '), sub: r.sub }
            const e = await explain({
              agent: r.agent,
              sub: r.sub,
              audience: r.audience,
              claims: { scope: claims.scope },
              ...(r.scope === null ? {} : { scope: r.scope.join(' ') }),
            })
            const res = await exchange(r.agent, claims, { audience: r.audience, ...(r.scope === null ? {} : { scope: r.scope.join(' ') }) })
            const body = (await res.json()) as { error?: string; scope?: string; expires_in?: number }
            if (e.decision === 'granted') {
              expect(res.status).toBe(200)
              expect(body.scope).toBe(e.grant!.scope)
              expect(body.expires_in).toBe(e.grant!.expires_in)
            } else {
              expect([res.status, body.error]).toEqual([e.status, e.error])
            }
          } finally {
            if (r.killBob) await b.revocations.liftUser('bob' as never)
          }
        },
      ),
      { numRuns: 60 },
    )
  })
})
