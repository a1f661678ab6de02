/**
 * POST /oauth2/introspect (RFC 7662) is not an oracle: `active: true` and the
 * claims go only to a caller that may see the token (the agent it was minted
 * to, a resource server serving its audience, an auditor's admin key);
 * every other authenticated caller gets exactly `{"active": false}`, and an
 * unauthenticated one 401. Resource servers have identities of their own
 * (`resource_servers` in the config) that get them nothing anywhere else.
 */
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ADMIN_KEYS,
  AUDIENCE,
  basic,
  bearer,
  CLIENT_ASSERTION_TYPE_JWT,
  encodeForm,
  OTHER_AUDIENCE,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
} from '../../support/broker.js'
import { expectCleanLogs, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

describe('introspection: who may see what', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(async () => {
    expectCleanLogs(b)
    await b.close()
  })

  const post = (path: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
    Promise.resolve(
      b.mandate.app.request(path, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: encodeForm(fields),
      }),
    )
  const introspect = (token: string, headers: Record<string, string> = {}, fields: Record<string, string> = {}) =>
    post('/oauth2/introspect', { token, ...fields }, headers)
  const asAssertion = async (assertion: Promise<string>) => ({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: b.secret(await assertion) })

  /** A token minted to `agent` (authenticated with SECRET) for `audience`, from `subject` (default: a fresh user token). */
  async function issue(agent: string, audience = AUDIENCE, subject?: string): Promise<string> {
    const user = subject ?? b.secret(await b.userToken())
    const res = await b.token(b.exchangeForm(user, { audience, scope: 'read' }), basic(agent, SECRET))
    return b.secret((await expectToken(res)).access_token)
  }

  /** The whole answer, which must be exactly `{"active":false}`. */
  async function expectInactive(res: Response): Promise<void> {
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toMatch(/no-store/)
    expect(await res.text()).toBe('{"active":false}')
  }
  async function expectActive(res: Response, token: string): Promise<void> {
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ active: true, token_type: 'Bearer', jti: decodeJwt(token).jti, aud: decodeJwt(token).aud })
  }

  describe('an agent', () => {
    it('sees a token minted to it', async () => {
      const token = await issue('secret-agent')
      await expectActive(await introspect(token, basic('secret-agent', SECRET)), token)
    })

    it('sees a token minted to it when it authenticates with a client assertion', async () => {
      const fields = { ...b.exchangeForm(b.secret(await b.userToken({ groups: ['sre'] })), { scope: 'read' }), ...(await asAssertion(b.assertion())) }
      const token = b.secret((await expectToken(await b.token(fields))).access_token)
      expect(decodeJwt(token)['client_id']).toBe('jwt-agent')
      await expectActive(await introspect(token, {}, await asAssertion(b.assertion())), token)
    })

    it('gets {"active": false} for a live token minted to another agent', async () => {
      const token = await issue('sub-agent', AUDIENCE, await issue('secret-agent'))
      await expectActive(await introspect(token, bearer(ADMIN_KEYS.auditor)), token) // control: it is live
      await expectInactive(await introspect(token, basic('secret-agent', SECRET))) // its parent, which re-delegated it
      await expectInactive(await introspect(await issue('secret-agent'), basic('sub-agent', SECRET)))
    })

    it('gets the same bytes for another agent’s live token and for garbage', async () => {
      const other = await issue('sub-agent', AUDIENCE, await issue('secret-agent'))
      const live = await (await introspect(other, basic('secret-agent', SECRET))).text()
      const garbage = await (await introspect('garbage', basic('secret-agent', SECRET))).text()
      expect(live).toBe(garbage)
    })
  })

  describe('a resource server', () => {
    it('sees a live token for an audience it serves (Basic)', async () => {
      const token = await issue('secret-agent', AUDIENCE)
      await expectActive(await introspect(token, basic(RESOURCE_SERVERS.api, RS_SECRET)), token)
    })

    it('sees a live token for an audience it serves (private_key_jwt)', async () => {
      const token = await issue('secret-agent', OTHER_AUDIENCE)
      await expectActive(await introspect(token, {}, await asAssertion(b.rsAssertion())), token)
    })

    it('gets {"active": false} for a live token for an audience it does not serve', async () => {
      await expectInactive(await introspect(await issue('secret-agent', OTHER_AUDIENCE), basic(RESOURCE_SERVERS.api, RS_SECRET)))
      await expectInactive(await introspect(await issue('secret-agent', AUDIENCE), {}, await asAssertion(b.rsAssertion())))
    })

    it('is refused like any client on a wrong secret, a wrong key, a replayed assertion → 401 invalid_client', async () => {
      const token = await issue('secret-agent')
      await expectOAuthError(await introspect(token, basic(RESOURCE_SERVERS.api, 'not-the-secret-at-all')), 401, 'invalid_client')
      await expectOAuthError(await introspect(token, basic('rs/nobody', RS_SECRET)), 401, 'invalid_client')
      await expectOAuthError(
        await introspect(token, {}, await asAssertion(b.assertion({ iss: RESOURCE_SERVERS.other, sub: RESOURCE_SERVERS.other }))),
        401,
        'invalid_client',
      )
      await expectOAuthError(await introspect(token, {}, await asAssertion(b.rsAssertion({ aud: 'https://elsewhere.test' }))), 401, 'invalid_client')
      const replayed = await asAssertion(b.rsAssertion())
      expect((await introspect(token, {}, replayed)).status).toBe(200)
      await expectOAuthError(await introspect(token, {}, replayed), 401, 'invalid_client')
    })

    it('answers an unknown resource server like a wrong secret: byte-identical bodies', async () => {
      const token = await issue('secret-agent')
      const wrong = await (await introspect(token, basic(RESOURCE_SERVERS.api, 'not-the-secret-at-all'))).text()
      const unknown = await (await introspect(token, basic('rs/nobody', RS_SECRET))).text()
      const agent = await (await introspect(token, basic('secret-agent', 'not-the-secret-at-all'))).text()
      expect(unknown).toBe(wrong)
      expect(agent).toBe(wrong)
    })
  })

  describe('an admin key', () => {
    it.each(['auditor', 'admin'] as const)('with read permission (%s) sees any live token', async (role) => {
      const token = await issue('sub-agent', AUDIENCE, await issue('secret-agent'))
      await expectActive(await introspect(token, bearer(ADMIN_KEYS[role])), token)
      const other = await issue('secret-agent', OTHER_AUDIENCE)
      await expectActive(await introspect(other, bearer(ADMIN_KEYS[role])), other)
    })

    it('beside client credentials in the body is two methods at once → 400 invalid_request', async () => {
      const token = await issue('secret-agent')
      await expectOAuthError(await introspect(token, bearer(ADMIN_KEYS.auditor), await asAssertion(b.rsAssertion())), 400, 'invalid_request')
      await expectOAuthError(await introspect(token, bearer(ADMIN_KEYS.auditor), { client_secret: SECRET }), 400, 'invalid_request')
    })

    it('without read permission (responder), or unknown, is not an introspection credential → 401 invalid_client', async () => {
      const token = await issue('secret-agent')
      await expectOAuthError(await introspect(token, bearer(ADMIN_KEYS.responder)), 401, 'invalid_client')
      await expectOAuthError(await introspect(token, bearer('not-a-key')), 401, 'invalid_client')
    })
  })

  it('refuses an unauthenticated caller → 401 invalid_client', async () => {
    const token = await issue('secret-agent')
    await expectOAuthError(await introspect(token), 401, 'invalid_client')
    await expectOAuthError(await introspect(token, {}, { client_id: 'secret-agent' }), 401, 'invalid_client')
    await expectOAuthError(await introspect(token, {}, { client_id: RESOURCE_SERVERS.api }), 401, 'invalid_client')
  })

  describe('a resource server is never an agent', () => {
    it('cannot exchange tokens with its credentials → 401 invalid_client', async () => {
      const user = b.secret(await b.userToken())
      await expectOAuthError(await b.token(b.exchangeForm(user, { scope: 'read' }), basic(RESOURCE_SERVERS.api, RS_SECRET)), 401, 'invalid_client')
      await expectOAuthError(await b.token({ ...b.exchangeForm(user, { scope: 'read' }), ...(await asAssertion(b.rsAssertion())) }), 401, 'invalid_client')
    })

    it('cannot revoke tokens (RFC 7009 is for the holder) → 401 invalid_client', async () => {
      const token = await issue('secret-agent')
      await expectOAuthError(await post('/oauth2/revoke', { token }, basic(RESOURCE_SERVERS.api, RS_SECRET)), 401, 'invalid_client')
      await expectActive(await introspect(token, basic('secret-agent', SECRET)), token)
    })
  })
})
