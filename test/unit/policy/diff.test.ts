/**
 * `mandate policy diff` on hours (policy/diff.ts): a window lost widens (the agent gets tokens at any time),
 * one gained narrows, one changed widens unless it only shrank in the same zone; on the policy and per grant.
 */
import { describe, expect, it } from 'vitest'
import { diffPolicies } from '../../../src/policy/diff.js'
import { parsePolicy } from '../../../src/policy/load.js'
import type { AgentPolicy } from '../../../src/policy/port.js'

const HASH = 'ab'.repeat(32)
function compiled(o: { hours?: string; timezone?: string; grantHours?: string } = {}): AgentPolicy {
  const text = `agent: mail-agent
owner: ops@example.com
purpose: reads mail
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${HASH} }
grants:
  - { audience: https://mail.example.com, scopes: [read]${o.grantHours === undefined ? '' : `, hours: '${o.grantHours}'`} }
token_ttl: { default: 300, max: 600 }
${o.hours === undefined ? '' : `hours: ${o.hours}\n`}${o.timezone === undefined ? '' : `timezone: ${o.timezone}\n`}`
  const r = parsePolicy('/p/mail-agent.yaml', text)
  if (!('policy' in r)) throw new Error(JSON.stringify(r.issues))
  return r.policy
}
const changes = (a: AgentPolicy, b: AgentPolicy) => diffPolicies([a], [b])

describe('policy diff: hours', () => {
  it('the policy losing its hours widens; gaining them narrows', () => {
    const lost = changes(compiled({ hours: 'Mon-Fri 08:00-18:00' }), compiled())
    expect(lost.widens).toBe(true)
    expect(lost.agents[0]?.changes).toEqual([{ what: 'hours', change: 'loses', widens: true, old: 'Mon-Fri 08:00-18:00 UTC', new: 'always' }])
    const gained = changes(compiled(), compiled({ hours: 'Mon-Fri 08:00-18:00' }))
    expect(gained.widens).toBe(false)
    expect(gained.agents[0]?.changes).toEqual([{ what: 'hours', change: 'gains', widens: false, old: 'always', new: 'Mon-Fri 08:00-18:00 UTC' }])
  })

  it('a changed window widens when it admits a minute the old did not, or moves to another zone; a shrunk one narrows', () => {
    const office = compiled({ hours: 'Mon-Fri 08:00-18:00' })
    expect(changes(office, compiled({ hours: 'Mon-Fri 09:00-17:00, Sat 10:00-11:00' })).widens).toBe(true)
    expect(changes(office, compiled({ hours: 'Mon-Fri 07:59-18:00' })).widens).toBe(true)
    expect(changes(office, compiled({ hours: 'Mon-Thu 09:00-17:00, Fri 08:00-12:00' })).widens).toBe(false)
    const moved = changes(office, compiled({ hours: 'Mon-Fri 08:00-18:00', timezone: 'Europe/Berlin' }))
    expect(moved.agents[0]?.changes).toEqual([
      { what: 'hours', change: 'changes', widens: true, old: 'Mon-Fri 08:00-18:00 UTC', new: 'Mon-Fri 08:00-18:00 Europe/Berlin' },
    ])
    // The same window written otherwise is no change to the minutes, but it is to the text: shown, and it does not widen.
    expect(changes(office, compiled({ hours: 'Mon-Wed 08:00-18:00, Thu-Fri 08:00-18:00' })).widens).toBe(false)
  })

  it('a grant losing its hours widens at that audience; gaining them narrows', () => {
    const lost = changes(compiled({ grantHours: 'Sat-Sun 00:00-24:00' }), compiled())
    expect(lost.agents[0]?.changes).toEqual([
      { what: 'hours at https://mail.example.com', change: 'loses', widens: true, old: 'Sat-Sun 00:00-24:00 UTC', new: 'always' },
    ])
    expect(lost.widens).toBe(true)
    expect(changes(compiled(), compiled({ grantHours: 'Sat-Sun 00:00-24:00' })).widens).toBe(false)
    expect(changes(compiled({ grantHours: 'Sat 00:00-24:00' }), compiled({ grantHours: 'Fri-Sun 00:00-24:00' })).widens).toBe(true)
  })

  it('no hours on either side, or the same, is no change', () => {
    expect(changes(compiled(), compiled()).agents).toEqual([])
    expect(changes(compiled({ hours: 'Mon 08:00-09:00' }), compiled({ hours: 'Mon 08:00-09:00' })).agents).toEqual([])
  })
})
