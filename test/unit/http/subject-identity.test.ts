/**
 * Who a token is for, and who may act for them, along a chain: the user's
 * issuer travels as RFC 9493 `sub_id`, a user's `may_act` binds the first hop
 * (the first agent's policy binds the later ones), an already-delegated
 * upstream token is refused, and workload tokens are short-lived.
 */
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basic, CLIENT_ASSERTION_TYPE_JWT, SECRET, TOKEN_TYPE, USER_ISSUER } from '../../support/broker.js'
import { exchange, expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

describe('POST /oauth2/token: subject identity along a chain', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(async () => {
    expectCleanLogs(b)
    await b.close()
  })

  const user = async (claims: Record<string, unknown> = {}) => b.secret(await b.userToken(claims))
  const asSecretAgent = async (subjectToken: string, extra: Record<string, string> = {}) =>
    b.token(exchange(subjectToken, { scope: 'read', ...extra }), basic('secret-agent', SECRET))
  const asSubAgent = (subjectToken: string) => b.token(exchange(subjectToken, { scope: 'read' }), basic('sub-agent', SECRET))

  it('names the user’s issuer in sub_id (RFC 9493 iss_sub), on the first hop and every later one', async () => {
    const parent = await expectToken(await asSecretAgent(await user()))
    const expected = { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' }
    expect(decodeJwt(parent.access_token)['sub_id']).toEqual(expected)
    const child = await expectToken(await asSubAgent(b.secret(parent.access_token)))
    expect(decodeJwt(child.access_token)['sub_id']).toEqual(expected)
    const issued = b.audit.events().filter((e) => e.type === 'token.issued')
    expect(issued.at(-1)).toMatchObject({ subIssuer: USER_ISSUER, sub: 'alice' })
  })

  it('refuses an upstream token that is already delegated (carries act)', async () => {
    await expectOAuthError(await asSecretAgent(await user({ act: { sub: 'another-client' } })), 400, 'invalid_request')
  })

  it('holds the user’s may_act at the first hop and copies it into no token: the parent agent’s policy governs the sub-agents', async () => {
    const parent = await expectToken(await asSecretAgent(await user({ may_act: { sub: 'secret-agent' } })))
    expect(decodeJwt(parent.access_token)).not.toHaveProperty('may_act')
    // sub-agent is in secret-agent's delegation.sub_agents: that, not the user's may_act, decides.
    const child = await expectToken(await asSubAgent(b.secret(parent.access_token)))
    expect(decodeJwt(child.access_token)).not.toHaveProperty('may_act')
  })

  it('refuses a workload token that is still valid for longer than the limit (1 h)', async () => {
    const longLived = b.secret(await b.workloads.sign({ exp: b.now() + 3601 }, { typ: 'JWT' }))
    const res = await b.token(exchange(await user(), { actor_token: longLived, actor_token_type: TOKEN_TYPE.jwt }))
    await expectOAuthError(res, 401, 'invalid_client')
    const fine = b.secret(await b.workloads.sign({ exp: b.now() + 3600 }, { typ: 'JWT' }))
    await expectToken(await b.token(exchange(await user(), { actor_token: fine, actor_token_type: TOKEN_TYPE.jwt })))
  })

  it('refuses a client assertion whose signature is spelled in non-canonical base64url', async () => {
    const assertion = b.secret(await b.assertion())
    const sig = assertion.slice(assertion.lastIndexOf('.') + 1)
    // A 64-byte ES256 signature is 86 base64url characters; the last carries 2 unused bits.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const last = alphabet.indexOf(sig.at(-1)!)
    const tweaked = `${assertion.slice(0, -1)}${alphabet.charAt(last ^ 1)}`
    expect(Buffer.from(tweaked.slice(tweaked.lastIndexOf('.') + 1), 'base64url')).toEqual(Buffer.from(sig, 'base64url'))
    const res = await b.token(
      exchange(await user({ groups: ['engineering'] }), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: tweaked }),
    )
    await expectOAuthError(res, 401, 'invalid_client')
  })
})
