/**
 * The wire formats read by hand (no schema library): a revocation record and
 * the feed's snapshot and heartbeat. Each field is checked; a record that
 * fails one is not read at all; members a later version adds are ignored.
 */
import { describe, expect, it } from 'vitest'
import { decodeRevocation, encodeRevocation } from '../src/codec.js'
import { decodeHeartbeat, decodeSnapshot, encodeHeartbeat, encodeSnapshot } from '../src/feed-wire.js'
import type { Revocation } from '../src/revocation.js'
import type { AgentId, Jti, Subject } from '../src/claims.js'
import { metadataUrl } from '../src/discovery.js'
import { protectedResourceMetadata, protectedResourceMetadataUrl } from '../src/resource-metadata.js'

const base: Revocation = {
  id: 'r-1',
  target: { kind: 'agent_sub', agent: 'bot' as AgentId, sub: 'alice' as Subject, iss: 'https://idp.example' },
  reason: 'r',
  createdBy: 'ops',
  createdAt: 1_800_000_000,
  expiresAt: undefined,
  liftedAt: 1_800_000_100,
  liftedBy: 'ops',
}
const json = JSON.parse(encodeRevocation(base)) as Record<string, unknown>
const withField = (field: string, value: unknown) => JSON.stringify({ ...json, [field]: value })
const withTarget = (target: unknown) => JSON.stringify({ ...json, target })

describe('a revocation record', () => {
  it('round-trips every kind, and ignores members it does not know', () => {
    for (const target of [
      { kind: 'jti', jti: 'j' as Jti },
      { kind: 'chain', jti: 'j' as Jti },
      { kind: 'agent', agent: 'bot' as AgentId },
      { kind: 'sub', sub: 'alice' as Subject, iss: null },
      { kind: 'instance', agent: 'bot' as AgentId, instance: 'spiffe://example.org/ns/prod/pod-a' },
      base.target,
    ] as const) {
      const r = { ...base, target, expiresAt: 1_800_000_300 }
      expect(decodeRevocation(encodeRevocation(r))).toStrictEqual(r)
    }
    expect(decodeRevocation(withField('addedLater', { x: 1 }))).toStrictEqual(base)
  })

  it.each([
    ['not JSON', '{'],
    ['an array', '[]'],
    ['null', 'null'],
    ['no id', withField('id', undefined)],
    ['an empty id', withField('id', '')],
    ['a numeric id', withField('id', 7)],
    ['a reason that is no string', withField('reason', null)],
    ['no createdBy', withField('createdBy', undefined)],
    ['createdAt a string', withField('createdAt', '1800000000')],
    ['createdAt past any float (1e400 parses to Infinity)', encodeRevocation(base).replace('1800000000', '1e400')],
    ['expiresAt null', withField('expiresAt', null)],
    ['liftedAt a string', withField('liftedAt', 'now')],
    ['liftedBy a number', withField('liftedBy', 1)],
    ['no target', withField('target', undefined)],
    ['an unknown kind', withTarget({ kind: 'everyone' })],
    ['a jti kill without jti', withTarget({ kind: 'jti' })],
    ['an agent kill with an empty agent', withTarget({ kind: 'agent', agent: '' })],
    ['an instance kill without an instance', withTarget({ kind: 'instance', agent: 'bot' })],
    ['an instance kill with an empty instance', withTarget({ kind: 'instance', agent: 'bot', instance: '' })],
    ['an instance with a NUL (the mirror keys on it)', withTarget({ kind: 'instance', agent: 'bot', instance: 'pod\u0000a' })],
    ['an instance with a space', withTarget({ kind: 'instance', agent: 'bot', instance: 'pod a' })],
    ['an instance kill without an agent', withTarget({ kind: 'instance', instance: 'pod-a' })],
    ['a user kill with an empty issuer', withTarget({ kind: 'sub', sub: 'alice', iss: '' })],
    ['a user kill whose issuer holds NUL', withTarget({ kind: 'sub', sub: 'alice', iss: 'https://a\u0000b' })],
    ['an agent+user kill without sub', withTarget({ kind: 'agent_sub', agent: 'bot' })],
    ['a kind that is no string', withTarget({ kind: 1, jti: 'j' })],
  ])('refuses %s', (_name, text) => {
    expect(decodeRevocation(text)).toBeUndefined()
  })
})

describe('the feed events', () => {
  it('round-trip, and a snapshot counts the records it cannot read', () => {
    const text = encodeSnapshot([base], { fresh: true, lagMs: 12.4 })
    expect(decodeSnapshot(text)).toStrictEqual({ fresh: true, lagMs: 12, records: [base], unreadable: 0 })
    const mixed = `{"fresh":false,"lag_ms":0,"records":[${encodeRevocation(base)},{"id":""},7]}`
    expect(decodeSnapshot(mixed)).toStrictEqual({ fresh: false, lagMs: 0, records: [base], unreadable: 2 })
    expect(decodeHeartbeat(encodeHeartbeat({ fresh: false, lagMs: 3 }))).toStrictEqual({ fresh: false, lagMs: 3 })
  })

  it.each([
    ['not JSON', 'fresh'],
    ['fresh as a string', '{"fresh":"true","lag_ms":0}'],
    ['no lag', '{"fresh":true}'],
    ['a negative lag', '{"fresh":true,"lag_ms":-1}'],
    ['an infinite lag', '{"fresh":true,"lag_ms":1e400}'],
    ['an array', '[true,0]'],
  ])('refuses a heartbeat or snapshot that is %s', (_name, text) => {
    expect(decodeHeartbeat(text)).toBeUndefined()
    expect(decodeSnapshot(text.replace(/}$/, ',"records":[]}'))).toBeUndefined()
  })

  it('refuses a snapshot without a record list', () => {
    expect(decodeSnapshot('{"fresh":true,"lag_ms":0}')).toBeUndefined()
    expect(decodeSnapshot('{"fresh":true,"lag_ms":0,"records":{}}')).toBeUndefined()
  })
})

describe('well-known URLs', () => {
  it('inserts the RFC 8414 segment after the host, before the issuer path (§3.1)', () => {
    expect(metadataUrl('https://mandate.example.com')).toBe('https://mandate.example.com/.well-known/oauth-authorization-server')
    expect(metadataUrl('https://example.com/tenant/a/')).toBe('https://example.com/.well-known/oauth-authorization-server/tenant/a')
    expect(metadataUrl('http://localhost:8080')).toBe('http://localhost:8080/.well-known/oauth-authorization-server')
    for (const bad of ['http://mandate.example.com', 'https://example.com/?t=1', 'https://example.com/#f', 'https://u:p@example.com', 'mandate']) {
      expect(() => metadataUrl(bad), bad).toThrow(TypeError)
    }
  })

  it('builds the RFC 9728 §2 document and its §3.1 path', () => {
    const m = protectedResourceMetadata({
      issuer: 'https://mandate.example.com',
      resource: 'https://example.com/api/',
      scopesSupported: ['a:read', 'a:read', 'b'],
    })
    expect(m.path).toBe('/.well-known/oauth-protected-resource/api')
    expect(m.url).toBe('https://example.com/.well-known/oauth-protected-resource/api')
    expect(m.document).toStrictEqual({
      resource: 'https://example.com/api/',
      authorization_servers: ['https://mandate.example.com'],
      scopes_supported: ['a:read', 'b'],
      bearer_methods_supported: ['header'],
    })
    expect(protectedResourceMetadataUrl('https://calendar.example.com')).toBe('https://calendar.example.com/.well-known/oauth-protected-resource')
    expect(() => protectedResourceMetadata({ issuer: 'https://m.example', resource: 'https://e.example', scopesSupported: ['two words'] })).toThrow(TypeError)
    expect(() => protectedResourceMetadataUrl('http://example.com')).toThrow(TypeError)
  })
})
