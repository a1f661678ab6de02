/** SPIFFE IDs (SPIFFE-ID spec §2): what parses, what is refused, and which prefixes an ID falls under. */
import { describe, expect, it } from 'vitest'
import { parseSpiffeId, parseSpiffeIdPrefix, spiffeIdPrefixes } from '../../../src/core/spiffe-id.js'

describe('parseSpiffeId', () => {
  it('parses an ID into its trust domain and path', () => {
    expect(parseSpiffeId('spiffe://example.org/ns/prod/sa/billing-agent')).toEqual({
      trustDomain: 'example.org',
      path: '/ns/prod/sa/billing-agent',
      id: 'spiffe://example.org/ns/prod/sa/billing-agent',
    })
    expect(parseSpiffeId('spiffe://example.org')).toMatchObject({ trustDomain: 'example.org', path: '' })
  })

  it.each([
    ['another scheme', 'https://example.org/x'],
    ['an uppercase scheme', 'SPIFFE://example.org/x'],
    ['an uppercase trust domain', 'spiffe://Example.org/x'],
    ['an empty trust domain', 'spiffe:///x'],
    ['a port', 'spiffe://example.org:8443/x'],
    ['userinfo', 'spiffe://user@example.org/x'],
    ['a query', 'spiffe://example.org/x?y=1'],
    ['a fragment', 'spiffe://example.org/x#y'],
    ['a dot-dot segment', 'spiffe://example.org/a/../b'],
    ['a dot segment', 'spiffe://example.org/a/./b'],
    ['an empty segment', 'spiffe://example.org/a//b'],
    ['a trailing slash', 'spiffe://example.org/a/'],
    ['a percent escape', 'spiffe://example.org/a%2Fb'],
    ['too long', `spiffe://example.org/${'a'.repeat(2048)}`],
  ])('refuses %s', (_why, text) => {
    expect(parseSpiffeId(text)).toBeUndefined()
  })
})

describe('parseSpiffeIdPrefix', () => {
  it('needs a trailing slash after an ID', () => {
    expect(parseSpiffeIdPrefix('spiffe://example.org/ns/prod/')).toMatchObject({ id: 'spiffe://example.org/ns/prod/', trustDomain: 'example.org' })
    expect(parseSpiffeIdPrefix('spiffe://example.org/')).toMatchObject({ path: '' })
    expect(parseSpiffeIdPrefix('spiffe://example.org/ns/prod')).toBeUndefined()
    expect(parseSpiffeIdPrefix('spiffe://example.org/ns//')).toBeUndefined()
    expect(parseSpiffeIdPrefix('spiffe://example.org/../')).toBeUndefined()
  })
})

describe('spiffeIdPrefixes', () => {
  it('lists the segment-boundary prefixes, longest first', () => {
    expect(spiffeIdPrefixes(parseSpiffeId('spiffe://td/a/b/c')!)).toEqual(['spiffe://td/a/b/', 'spiffe://td/a/', 'spiffe://td/'])
    expect(spiffeIdPrefixes(parseSpiffeId('spiffe://td')!)).toEqual([])
  })

  it('never ends a prefix inside a segment: /sa/bill/ is not a prefix of /sa/billing', () => {
    expect(spiffeIdPrefixes(parseSpiffeId('spiffe://td/sa/billing')!)).not.toContain('spiffe://td/sa/bill/')
  })
})
