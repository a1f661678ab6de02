/** The `ssf` config section: push endpoints, poll receivers and names are checked at load. */
import { describe, expect, it } from 'vitest'
import { Config } from '../../../src/config/schema.js'
import { EVENT_TYPES, eventsOf, setJti } from '../../../src/ssf/events.js'

const base = {
  issuer: 'https://mandate.test',
  resource_servers: [{ id: 'rs/api', audiences: ['https://api.test'], authentication: { method: 'client_secret_basic', secret_sha256: 'a'.repeat(64) } }],
}
const issues = (ssf: unknown) => {
  const r = Config.safeParse({ ...base, ssf })
  return r.success ? [] : r.error.issues.map((i) => i.path.join('.'))
}
const push = (endpoint_url: string, name = 'siem') => ({ name, audience: 'https://siem.test', delivery: { method: 'push', endpoint_url } })

describe('ssf config', () => {
  it('takes https push endpoints, http on loopback only', () => {
    expect(issues({ receivers: [push('https://siem.example/events')] })).toEqual([])
    expect(issues({ receivers: [push('http://127.0.0.1:9000/events')] })).toEqual([])
    expect(issues({ receivers: [push('http://siem.example/events')] })).toEqual(['ssf.receivers.0.delivery.endpoint_url'])
  })

  it('refuses an Authorization value in the YAML itself (strict: only authorization_file)', () => {
    const r = { ...push('https://siem.example/events'), delivery: { method: 'push', endpoint_url: 'https://siem.example/events', authorization: 'Bearer x' } }
    expect(issues({ receivers: [r] })).toEqual(['ssf.receivers.0.delivery'])
  })

  it('refuses a poll receiver that names no configured resource server, and two receivers of one name', () => {
    const poll = (resource_server: string, name: string) => ({ name, audience: 'https://rs.test', delivery: { method: 'poll', resource_server } })
    expect(issues({ receivers: [poll('rs/api', 'a')] })).toEqual([])
    expect(issues({ receivers: [poll('rs/nobody', 'a')] })).toEqual(['ssf.receivers.0.delivery.resource_server'])
    expect(issues({ receivers: [push('https://a.example/'), push('https://b.example/')] })).toEqual(['ssf.receivers.1.name'])
  })
})

describe('SET ids', () => {
  it('are the same for one (revocation, receiver, event type) and differ for any other', () => {
    const id = '6f1c2b7e-0d4a-4f3e-9a8b-1c2d3e4f5a6b'
    expect(setJti(id, 'siem', EVENT_TYPES.user)).toBe(setJti(id, 'siem', EVENT_TYPES.user))
    const all = new Set([
      setJti(id, 'siem', EVENT_TYPES.user),
      setJti(id, 'siem', EVENT_TYPES.sessionRevoked),
      setJti(id, 'other', EVENT_TYPES.user),
      setJti('6f1c2b7e-0d4a-4f3e-9a8b-1c2d3e4f5a6c', 'siem', EVENT_TYPES.user),
    ])
    expect(all.size).toBe(4)
    expect(setJti(id, 'siem', EVENT_TYPES.user)).toMatch(/^[A-Za-z0-9_-]{22}$/)
  })

  it('a kill of a sub at any issuer is an opaque subject, with a null iss', () => {
    const [event] = eventsOf({
      id: 'x',
      target: { kind: 'sub', sub: 'alice' as never, iss: null },
      reason: 'r',
      createdBy: 'k',
      createdAt: 1,
      expiresAt: undefined,
      liftedAt: undefined,
      liftedBy: undefined,
    })
    expect(event?.subId).toEqual({ format: 'opaque', id: 'alice' })
    expect(event?.payload['iss']).toBeNull()
  })

  it('an instance kill is one Mandate event, its subject the instance as an opaque id; no CAEP event', () => {
    const events = eventsOf({
      id: 'x',
      target: { kind: 'instance', agent: 'worker' as never, instance: 'spiffe://example.org/ns/prod/pod-a' },
      reason: 'r',
      createdBy: 'k',
      createdAt: 1,
      expiresAt: undefined,
      liftedAt: undefined,
      liftedBy: undefined,
    })
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({
      type: EVENT_TYPES.agentInstance,
      subId: { format: 'opaque', id: 'spiffe://example.org/ns/prod/pod-a' },
      payload: { agent: 'worker', instance: 'spiffe://example.org/ns/prod/pod-a', reason_admin: { en: 'r' } },
    })
  })
})
