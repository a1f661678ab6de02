/**
 * `rate_limit` in a policy file: the syntax, its defaults, and where a
 * mistake is reported.
 */
import { describe, expect, it } from 'vitest'
import { parsePolicy } from '../../../src/policy/load.js'
import { formatIssue } from '../../../src/policy/port.js'
import type { AgentPolicy } from '../../../src/policy/port.js'

const HASH = 'ab'.repeat(32)

function policyYaml(rateLimit: string | undefined): string {
  return `agent: limited-agent
owner: platform-team@example.com
purpose: Exercises rate limits.
expires: 2030-01-01
authentication: { method: client_secret_basic, secret_sha256: ${HASH} }
users: [{ issuer: https://idp.test }]
grants: [{ audience: https://api.test, scopes: [read] }]
token_ttl: { default: 300, max: 300 }
${rateLimit ?? ''}
`
}

function parse(rateLimit: string | undefined): AgentPolicy {
  const result = parsePolicy('/policies/limited-agent.yaml', policyYaml(rateLimit))
  if ('issues' in result) throw new Error(result.issues.map(formatIssue).join('\n'))
  return result.policy
}

function issues(rateLimit: string): string[] {
  const result = parsePolicy('/policies/limited-agent.yaml', policyYaml(rateLimit))
  return 'issues' in result ? result.issues.map(formatIssue) : []
}

describe('policy rate_limit', () => {
  it('is optional: no limit at all', () => {
    expect(parse(undefined).rateLimit).toEqual({ agent: undefined, user: undefined })
  })

  it('takes a rate per second, minute or hour and an optional burst (default: the rate’s count)', () => {
    expect(parse('rate_limit:\n  agent: { rate: 600/min, burst: 50 }\n  user: { rate: 10/s }').rateLimit).toEqual({
      agent: { perSecond: 10, burst: 50 },
      user: { perSecond: 10, burst: 10 },
    })
    expect(parse('rate_limit: { user: { rate: 7200/h } }').rateLimit).toEqual({ agent: undefined, user: { perSecond: 2, burst: 7200 } })
  })

  it.each([
    ['60/day', 'rate_limit.agent.rate'],
    ['60 per minute', 'rate_limit.agent.rate'],
    ['0/min', 'rate_limit.agent.rate'],
    ['1000000/s', 'rate_limit.agent.rate'],
    ['-1/s', 'rate_limit.agent.rate'],
  ])('refuses the rate %j, at its line', (rate, field) => {
    const found = issues(`rate_limit:\n  agent: { rate: ${JSON.stringify(rate)} }`)
    expect(found).toHaveLength(1)
    expect(found[0]).toMatch(new RegExp(`^/policies/limited-agent\\.yaml:10:\\d+: ${field.replace(/\./g, '\\.')}: `))
  })

  it('refuses a burst below 1, a fractional burst, a missing rate and an unknown key', () => {
    expect(issues('rate_limit: { agent: { rate: 1/s, burst: 0 } }')[0]).toMatch(/rate_limit\.agent\.burst: /)
    expect(issues('rate_limit: { agent: { rate: 1/s, burst: 1.5 } }')[0]).toMatch(/rate_limit\.agent\.burst: /)
    expect(issues('rate_limit: { agent: { burst: 5 } }')[0]).toMatch(/rate_limit\.agent\.rate: /)
    expect(issues('rate_limit: { agent: { rate: 1/s }, per_ip: { rate: 1/s } }')[0]).toMatch(/rate_limit\.per_ip: unknown field/)
  })
})
