/**
 * Revocation at the token endpoint (docs/ARCHITECTURE.md "The exchange, step by step", step 5) over the memory
 * RevocationStore: a killed agent gets `unauthorized_client`; a killed user,
 * a revoked ancestor token or a killed ancestor agent gets `invalid_request`;
 * kills are keyed on issue time, so lifting one revives nothing issued before.
 */
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { AgentId, Jti, Subject } from '../../../src/core/claims.js'
import { basic, CLIENT_ASSERTION_TYPE_JWT, SECRET } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

const agent = (s: string) => s as AgentId
const alice = 'alice' as Subject

describe('revocation at the token endpoint', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(() => b.close())
  beforeEach(() => {
    // Every test starts a second after the previous one: kills are keyed on issue time.
    b.advance(1)
  })

  const userToken = async () => b.secret(await b.userToken())
  const asSecretAgent = async (subject?: string) => b.token(exchange(subject ?? (await userToken()), { scope: 'read' }), basic('secret-agent', SECRET))
  const asSubAgent = (parent: string) => b.token(exchange(parent, { scope: 'read' }), basic('sub-agent', SECRET))
  const parentToken = async () => (await expectToken(await asSecretAgent())).access_token

  it('refuses a killed agent → 400 unauthorized_client; lifting the kill lets it in again', async () => {
    await expectToken(await asSecretAgent())
    await b.revocations.killAgent(agent('secret-agent'), b.now())
    await expectOAuthError(await asSecretAgent(), 400, 'unauthorized_client')
    await b.revocations.liftAgent(agent('secret-agent'))
    b.advance(1)
    await expectToken(await asSecretAgent())
  })

  it('refuses a killed user → 400 invalid_request; lifting the kill lets a new user token in', async () => {
    await b.revocations.killUser(alice, b.now())
    await expectOAuthError(await asSecretAgent(), 400, 'invalid_request')
    await b.revocations.liftUser(alice)
    b.advance(1)
    await expectToken(await asSecretAgent())
  })

  it('keeps refusing, after a user kill is lifted, a user token issued before the kill', async () => {
    // docs/ARCHITECTURE.md "Decisions": "Lifting a kill never revives tokens issued before it (kills are keyed on issue time)."
    const before = await userToken()
    b.advance(1)
    await b.revocations.killUser(alice, b.now())
    await expectOAuthError(await asSecretAgent(before), 400, 'invalid_request')
    await b.revocations.liftUser(alice)
    b.advance(1)
    await expectToken(await asSecretAgent()) // a token issued after the kill
    await expectOAuthError(await asSecretAgent(before), 400, 'invalid_request')
  })

  it('refuses re-delegation of a revoked parent token → 400 invalid_request', async () => {
    const parent = await parentToken()
    await expectToken(await asSubAgent(parent)) // control
    await b.revocations.revokeToken(decodeJwt(parent).jti as Jti)
    await expectOAuthError(await asSubAgent(parent), 400, 'invalid_request')
  })

  it('refuses re-delegation below a revoked root token (three hops) → 400 invalid_request', async () => {
    const fields = exchange(b.secret(await b.userToken({ groups: ['engineering'] })), {
      scope: 'read',
      client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
      client_assertion: b.secret(await b.assertion()),
    })
    const root = (await expectToken(await b.token(fields))).access_token // jwt-agent
    const mid = (await expectToken(await asSubAgent(root))).access_token
    await expectToken(await b.token(exchange(mid, { scope: 'read' }), basic('secret-agent', SECRET))) // control
    await b.revocations.revokeToken(decodeJwt(root).jti as Jti)
    await expectOAuthError(await b.token(exchange(mid, { scope: 'read' }), basic('secret-agent', SECRET)), 400, 'invalid_request')
  })

  it('refuses re-delegation from a killed parent agent’s token → 400 invalid_request (not unauthorized_client)', async () => {
    const parent = await parentToken()
    await b.revocations.killAgent(agent('secret-agent'), b.now())
    try {
      await expectOAuthError(await asSubAgent(parent), 400, 'invalid_request')
    } finally {
      await b.revocations.liftAgent(agent('secret-agent'))
    }
  })

  it('keeps refusing, after an agent kill is lifted, its token issued before the kill', async () => {
    const parent = await parentToken()
    b.advance(1)
    await b.revocations.killAgent(agent('secret-agent'), b.now())
    await b.revocations.liftAgent(agent('secret-agent'))
    b.advance(1)
    await expectOAuthError(await asSubAgent(parent), 400, 'invalid_request')
    await expectToken(await asSubAgent(await parentToken())) // issued after the kill
  })

  it('refuses a killed sub-agent → 400 unauthorized_client', async () => {
    const parent = await parentToken()
    await b.revocations.killAgent(agent('sub-agent'), b.now())
    try {
      await expectOAuthError(await asSubAgent(parent), 400, 'unauthorized_client')
    } finally {
      await b.revocations.liftAgent(agent('sub-agent'))
    }
  })

  it('refuses re-delegation for a killed user → 400 invalid_request', async () => {
    const parent = await parentToken()
    await b.revocations.killUser(alice, b.now())
    try {
      await expectOAuthError(await asSubAgent(parent), 400, 'invalid_request')
    } finally {
      await b.revocations.liftUser(alice)
    }
  })

  it('logs no credential and a request_id on every request line', () => {
    b.secret(SECRET)
    expectCleanLogs(b)
    expect(b.secrets().length).toBeGreaterThan(10)
  })
})
