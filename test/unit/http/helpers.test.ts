/** The assertion helpers fail when they should: otherwise every test built on them proves nothing. */
import { describe, expect, it } from 'vitest'
import { expectOAuthError } from './helpers.js'

const answer = (status: number, body: unknown, headers: Record<string, string> = { 'cache-control': 'no-store' }) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } })

describe('expectOAuthError', () => {
  it('passes a proper RFC 6749 §5.2 answer', async () => {
    await expectOAuthError(answer(400, { error: 'invalid_request', error_description: 'x' }), 400, 'invalid_request')
    await expectOAuthError(
      answer(401, { error: 'invalid_client' }, { 'cache-control': 'no-store', 'www-authenticate': 'Basic realm="m"' }),
      401,
      'invalid_client',
    )
  })

  it.each([
    ['a wrong status', answer(401, { error: 'invalid_request' })],
    ['a wrong code', answer(400, { error: 'invalid_scope' })],
    ['no Cache-Control', answer(400, { error: 'invalid_request' }, {})],
    ['Cache-Control without no-store', answer(400, { error: 'invalid_request' }, { 'cache-control': 'no-cache' })],
    ['an access_token', answer(400, { error: 'invalid_request', access_token: 'x' })],
    ['a body that is not JSON', new Response('oops', { status: 400, headers: { 'cache-control': 'no-store' } })],
  ])('fails on %s', async (_name, res) => {
    await expect(expectOAuthError(res, 400, 'invalid_request')).rejects.toThrow()
  })

  it('fails on a 401 without WWW-Authenticate', async () => {
    await expect(expectOAuthError(answer(401, { error: 'invalid_client' }), 401, 'invalid_client')).rejects.toThrow()
  })
})
