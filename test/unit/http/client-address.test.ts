/**
 * The client address behind trusted proxies (X-Forwarded-For read from the
 * right, trusted hops skipped), and the key the failed-authentication
 * back-off files it under (IPv6 by /64).
 */
import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { throttleKey } from '../../../src/http/auth-throttle.js'
import { clientAddressResolver } from '../../../src/http/client-address.js'

/** The address `resolver` finds for a request from socket peer `peer` carrying `forwarded`. */
async function resolve(trusted: readonly string[], peer: string | undefined, forwarded?: string): Promise<string | undefined> {
  const resolver = clientAddressResolver(trusted)
  let found: string | undefined = 'unset'
  const app = new Hono()
  app.get('/', (c) => {
    found = resolver(c)
    return c.body(null, 204)
  })
  const env = peer === undefined ? undefined : { incoming: { socket: { remoteAddress: peer } } }
  await app.request('/', { headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded } }, env)
  return found
}

describe('client address', () => {
  it('is the socket peer when no proxy is trusted, whatever X-Forwarded-For says', async () => {
    expect(await resolve([], '203.0.113.5', '192.0.2.1')).toBe('203.0.113.5')
    expect(await resolve([], '::ffff:203.0.113.5')).toBe('203.0.113.5')
    expect(await resolve([], undefined)).toBeUndefined()
  })

  it('is the nearest untrusted hop when the peer is a trusted proxy', async () => {
    const trusted = ['10.0.0.0/8', 'fd00::/8']
    expect(await resolve(trusted, '10.0.0.2', '192.0.2.1')).toBe('192.0.2.1')
    // Left of the first untrusted hop is the client's own invention.
    expect(await resolve(trusted, '10.0.0.2', '198.51.100.66, 192.0.2.1')).toBe('192.0.2.1')
    expect(await resolve(trusted, '10.0.0.2', '192.0.2.1, 10.0.0.9')).toBe('192.0.2.1')
    expect(await resolve(trusted, '::ffff:10.0.0.2', '2001:db8::1, fd00::3')).toBe('2001:db8::1')
    // No header, only trusted hops, or a hop that is not an address: the nearest trusted one.
    expect(await resolve(trusted, '10.0.0.2')).toBe('10.0.0.2')
    expect(await resolve(trusted, '10.0.0.2', '10.0.0.7')).toBe('10.0.0.7')
    expect(await resolve(trusted, '10.0.0.2', '192.0.2.1, unknown')).toBe('10.0.0.2')
    // An untrusted peer's header is ignored.
    expect(await resolve(trusted, '203.0.113.5', '192.0.2.1')).toBe('203.0.113.5')
  })
})

describe('back-off key', () => {
  it('is an IPv4 address whole and an IPv6 address by its /64', () => {
    expect(throttleKey('192.0.2.1')).toBe('192.0.2.1')
    expect(throttleKey(undefined)).toBeUndefined()
    expect(throttleKey('2001:db8:1:2::a')).toBe('2001:db8:1:2::/64')
    expect(throttleKey('2001:0DB8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64')
    expect(throttleKey('2001:db8::1')).toBe('2001:db8:0:0::/64')
    expect(throttleKey('::1')).toBe('0:0:0:0::/64')
    expect(throttleKey('fe80::1:2:3:4')).toBe('fe80:0:0:0::/64')
  })
})
