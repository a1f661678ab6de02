/**
 * The anomaly rules' pure parts: which rules an agent gets from the config
 * and its policy, each rule's threshold at its edge, and declared hours in
 * a time zone across a daylight-saving change (the runtime's time-zone
 * data through Intl, no offset arithmetic of ours).
 */
import { describe, expect, it } from 'vitest'
import {
  denialBurstFinding,
  outsideHoursFinding,
  rateFinding,
  resolveAnomalyRules,
  RULE_DEFAULTS,
  userSpikeFinding,
  type AnomalyRule,
} from '../../../src/core/anomaly.js'
import { isTimeZone, localTime, parseHours } from '../../../src/core/hours.js'
import { Policy } from '../../../src/policy/schema.js'

const rule = (over: Partial<AnomalyRule> = {}): AnomalyRule => ({ ...RULE_DEFAULTS, ...over })

describe('resolveAnomalyRules', () => {
  it('takes the policy’s fields over the config’s over the defaults, and drops rules turned off', () => {
    const rules = resolveAnomalyRules(
      { rate: { factor: 5 }, denial_burst: { action: 'quarantine', count: 7 }, new_audience: {} },
      { rate: { action: 'quarantine' }, new_audience: { action: 'off' } },
      false,
    )
    expect([...rules.keys()]).toEqual(['rate', 'denial_burst'])
    expect(rules.get('rate')).toEqual(rule({ action: 'quarantine', factor: 5 }))
    expect(rules.get('denial_burst')).toMatchObject({ action: 'quarantine', count: 7, windowSeconds: 60 })
  })

  it('applies outside_hours only to a policy that declares hours', () => {
    expect(resolveAnomalyRules({ outside_hours: {} }, undefined, false).size).toBe(0)
    expect(resolveAnomalyRules({ outside_hours: {} }, undefined, true).get('outside_hours')?.action).toBe('alert')
  })
})

describe('thresholds', () => {
  it('rate trips above factor x the hourly mean and at the minimum, not before', () => {
    const r = rule({ factor: 4, minTokens: 10 })
    // 168 tokens over 168 hours: 1/h, so above 4.
    expect(rateFinding(r, { currentHour: 9, baseline: 168 })).toBeUndefined() // under the minimum
    expect(rateFinding(rule({ factor: 4, minTokens: 2 }), { currentHour: 4, baseline: 168 })).toBeUndefined() // not above 4x
    expect(rateFinding(rule({ factor: 4, minTokens: 2 }), { currentHour: 5, baseline: 168 })).toContain('5 tokens this hour; 7-day baseline 1.00/h')
    expect(rateFinding(r, { currentHour: 10, baseline: 0 })).toBeDefined()
  })

  it('user_spike compares new users the same way', () => {
    expect(userSpikeFinding(rule({ factor: 2, minUsers: 3 }), { currentHour: 4, baseline: 336 })).toBeUndefined()
    expect(userSpikeFinding(rule({ factor: 2, minUsers: 3 }), { currentHour: 5, baseline: 336 })).toContain('5 new users this hour')
  })

  it('denial_burst needs count denials with the oldest of them inside the window', () => {
    const r = rule({ count: 3, windowSeconds: 60 })
    expect(denialBurstFinding(r, [100, 90], 100)).toBeUndefined()
    expect(denialBurstFinding(r, [100, 90, 40], 100)).toBeUndefined() // 60 s old: outside
    expect(denialBurstFinding(r, [100, 90, 41], 100)).toBe('3 denials within 59 s; trips at 3 within 60 s')
  })
})

describe('declared hours', () => {
  it('parses day ranges (wrapping too), several entries and 24:00; refuses the rest', () => {
    const [weekdays, weekend] = parseHours('Mon-Fri 08:00-18:00, Sat 09:00-24:00')!
    expect([...weekdays!.days].sort()).toEqual([1, 2, 3, 4, 5])
    expect([weekdays!.from, weekdays!.to]).toEqual([480, 1080])
    expect([...weekend!.days, weekend!.to]).toEqual([6, 1440])
    expect([...parseHours('Fri-Mon 00:00-06:00')![0]!.days].sort()).toEqual([0, 1, 5, 6])
    for (const bad of ['', 'Mon-Fri', 'Monday 08:00-18:00', 'Mon 18:00-08:00', 'Mon 08:00-08:00', 'Mon 8:00-18:00', 'Mon 08:00-24:01', 'Mon 08:00-18:00,']) {
      expect(parseHours(bad), bad).toBeUndefined()
    }
  })

  it('reads the local time through the zone’s rules, daylight saving included', () => {
    // 2027-03-28 is the EU change to summer time: 06:30 UTC is 07:30 before (CET) on the Saturday and 08:30 after (CEST).
    expect(localTime(Date.UTC(2027, 2, 27, 6, 30) / 1000, 'Europe/Berlin').text).toBe('Sat 07:30')
    expect(localTime(Date.UTC(2027, 2, 29, 6, 30) / 1000, 'Europe/Berlin').text).toBe('Mon 08:30')
    expect(localTime(Date.UTC(2027, 2, 29, 6, 30) / 1000, 'America/New_York').text).toBe('Mon 02:30')
    const hours = { text: 'Mon-Fri 08:00-18:00', entries: parseHours('Mon-Fri 08:00-18:00')!, timeZone: 'Europe/Berlin' }
    expect(outsideHoursFinding(hours, Date.UTC(2027, 2, 29, 6, 30) / 1000)).toBeUndefined()
    // The same UTC time a week earlier, in winter time, is 07:30: outside.
    expect(outsideHoursFinding(hours, Date.UTC(2027, 2, 22, 6, 30) / 1000)).toBe('token at Mon 07:30 Europe/Berlin, outside Mon-Fri 08:00-18:00')
  })

  it('knows IANA zones, and the policy schema holds hours, zone and the outside_hours rule together', () => {
    expect(isTimeZone('Europe/Berlin')).toBe(true)
    expect(isTimeZone('Mars/Olympus')).toBe(false)
    const base = {
      agent: 'a',
      owner: 'o',
      purpose: 'p',
      expires: '2030-01-01',
      authentication: { method: 'client_secret_basic', secret_sha256: '0'.repeat(64) },
      grants: [{ audience: 'https://x.example', scopes: ['s'] }],
      token_ttl: { default: 60, max: 60 },
    }
    expect(
      Policy.safeParse({ ...base, hours: 'Mon-Fri 08:00-18:00', timezone: 'Europe/Berlin', anomalies: { outside_hours: { action: 'quarantine' } } }).success,
    ).toBe(true)
    const issues = (x: object) => Policy.safeParse({ ...base, ...x }).error?.issues.map((i) => i.path.join('.'))
    expect(issues({ anomalies: { outside_hours: {} } })).toEqual(['anomalies.outside_hours'])
    // The rule may declare the hours it expects, apart from the hours that restrict issuance.
    expect(issues({ anomalies: { outside_hours: { hours: 'Mon-Fri 07:00-20:00', timezone: 'Europe/Berlin' } } })).toBeUndefined()
    expect(issues({ anomalies: { outside_hours: { hours: 'Mon-Fri 7-20' } } })).toEqual(['anomalies.outside_hours.hours'])
    expect(issues({ hours: 'weekdays' })).toEqual(['hours'])
    expect(issues({ hours: 'Mon 08:00-09:00', timezone: 'Berlin' })).toEqual(['timezone'])
    expect(issues({ anomalies: { rate: { action: 'kill' } } })).toEqual(['anomalies.rate.action'])
    expect(issues({ anomalies: { denial_burst: { count: 1 } } })).toEqual(['anomalies.denial_burst.count'])
  })
})
