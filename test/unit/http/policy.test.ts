/**
 * Policy evaluation over HTTP (docs/ARCHITECTURE.md "The exchange, step by step", step 4): granted scopes = requested
 * ∩ policy ∩ the subject token's own authority; one permitted audience; an
 * expired policy gets nothing; a policy without an owner never loads.
 */
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AUDIENCE, basic, OTHER_AUDIENCE, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

describe('policy refusals', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(() => b.close())

  const asSecretAgent = async (claims: Record<string, unknown>, extra: Record<string, string | string[] | undefined>) =>
    b.token(exchange(b.secret(await b.userToken(claims)), extra), basic('secret-agent', SECRET))

  it('refuses a scope beyond the agent policy → 400 invalid_scope', async () => {
    // The user token would allow `delete`; secret-agent's policy never does.
    await expectOAuthError(await asSecretAgent({ scope: 'read write delete' }, { scope: 'delete' }), 400, 'invalid_scope')
  })

  it('refuses a scope the policy allows but the user token does not carry → 400 invalid_scope', async () => {
    await expectOAuthError(await asSecretAgent({ scope: 'read' }, { scope: 'write' }), 400, 'invalid_scope')
    // `admin` is in secret-agent's policy; the default user token carries `read write` only.
    await expectOAuthError(await asSecretAgent({}, { scope: 'read admin' }), 400, 'invalid_scope')
  })

  it('accepts the user token’s `scp` array as its authority too', async () => {
    await expectOAuthError(await asSecretAgent({ scope: undefined, scp: ['read'] }, { scope: 'write' }), 400, 'invalid_scope')
    await expectToken(await asSecretAgent({ scope: undefined, scp: ['read'] }, { scope: 'read' }))
  })

  it('refuses when no default scope is within the user token’s authority → 400 invalid_scope', async () => {
    await expectOAuthError(await asSecretAgent({ scope: 'write' }, { scope: undefined }), 400, 'invalid_scope')
  })

  it('refuses a scope allowed for another audience only → 400 invalid_scope', async () => {
    await expectOAuthError(await asSecretAgent({}, { audience: OTHER_AUDIENCE, scope: 'write' }), 400, 'invalid_scope')
    await expectToken(await asSecretAgent({}, { audience: OTHER_AUDIENCE, scope: 'read' }))
  })

  it('refuses an audience not in the policy → 400 invalid_target', async () => {
    await expectOAuthError(await asSecretAgent({}, { audience: 'https://not-granted.test', scope: 'read' }), 400, 'invalid_target')
  })

  it('refuses a resource with a fragment → 400 invalid_target', async () => {
    await expectOAuthError(await asSecretAgent({}, { audience: undefined, resource: `${AUDIENCE}#frag`, scope: 'read' }), 400, 'invalid_target')
    await expectOAuthError(await asSecretAgent({}, { audience: undefined, resource: `${AUDIENCE}#`, scope: 'read' }), 400, 'invalid_target')
  })

  it('refuses a relative resource → 400 invalid_target', async () => {
    await expectOAuthError(await asSecretAgent({}, { audience: undefined, resource: '/api', scope: 'read' }), 400, 'invalid_target')
  })

  it('refuses an agent whose policy has expired (expired-agent) → 400 unauthorized_client', async () => {
    const res = await b.token(exchange(b.secret(await b.userToken())), basic('expired-agent', SECRET))
    await expectOAuthError(res, 400, 'unauthorized_client')
  })

  it('refuses a user token for an agent whose policy admits no user (sub-agent) → 400 invalid_request', async () => {
    const res = await b.token(exchange(b.secret(await b.userToken()), { scope: 'read' }), basic('sub-agent', SECRET))
    await expectOAuthError(res, 400, 'invalid_request')
  })

  it('caps a requested lifetime at the policy maximum', async () => {
    const body = await expectToken(await asSecretAgent({}, { expires_in: '100000' }))
    expect(body.expires_in).toBe(900)
    expect(decodeJwt(body.access_token).exp).toBe(b.now() + 900)
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
  })
})

describe('policy owner', () => {
  const policyWithOwner = (owner: string) => ({
    'ownerless.yaml': secretAgentPolicy('ownerless', USER_ISSUER, { owner }),
  })

  it.each([
    ['whitespace-only', ' \t '],
    ['empty', ''],
  ])('a policy whose owner is %s never loads: the broker does not start', async (_name, owner) => {
    await expect(startTestBroker({ policies: policyWithOwner(owner) })).rejects.toThrow(/ownerless\.yaml.*owner/)
  })

  it('the same policy with an owner loads and issues (control)', async () => {
    const b = await startTestBroker({ policies: policyWithOwner('team@example.com') })
    try {
      const res = await b.token(exchange(await b.userToken()), basic('ownerless', SECRET))
      expect(res.status).toBe(200)
    } finally {
      await b.close()
    }
  })
})
