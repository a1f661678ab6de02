/**
 * The approver's OpenID Provider client (src/approvals/sign-in.ts) when the
 * provider does not answer: no discovery at construction (the broker starts
 * without it), a failed discovery is an error for that page only, and it is
 * tried again at the next link rather than remembered.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it } from 'vitest'
import { createApprovalSignIn } from '../../../src/approvals/sign-in.js'

describe('approval sign-in: discovery', () => {
  it('is not attempted at construction, fails while the provider is down, and is tried again afterwards', async () => {
    let answered = 0
    const server = createServer((req, res) => {
      answered++
      const issuer = `http://localhost:${(server.address() as AddressInfo).port}`
      res.setHeader('content-type', 'application/json')
      if (answered === 1) {
        res.statusCode = 503
        res.end('{}')
        return
      }
      res.end(JSON.stringify({ issuer, authorization_endpoint: `${issuer}/authorize`, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks` }))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const issuer = `http://localhost:${(server.address() as AddressInfo).port}`
      const signIn = createApprovalSignIn({
        issuer,
        clientId: 'mandate',
        clientSecret: 'secret',
        redirectUri: 'https://mandate.test/approvals/callback',
        groupsClaim: 'groups',
        emailClaim: 'email',
      })
      expect(answered).toBe(0)
      await expect(signIn.start()).rejects.toThrow()
      const { url, state } = await signIn.start()
      expect(answered).toBe(2)
      expect(url.origin + url.pathname).toBe(`${issuer}/authorize`)
      expect(Object.fromEntries(url.searchParams)).toMatchObject({
        client_id: 'mandate',
        response_type: 'code',
        scope: 'openid email',
        state: state.state,
        nonce: state.nonce,
        code_challenge_method: 'S256',
      })
      // Kept once discovered.
      await signIn.start()
      expect(answered).toBe(2)
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })
})
