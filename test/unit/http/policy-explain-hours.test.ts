/**
 * Hours on a policy and on a grant: POST /admin/policy/explain shows `policy.hours` and `grant.hours` where
 * the evaluation makes them, and each explanation is compared with what /oauth2/token answers at the same
 * instant, on either side of a window's edges, across a day-range that wraps the week, and across the EU
 * change to summer time. A refusal is recorded as a denial with the local time and window as its reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ADMIN_KEYS,
  AUDIENCE,
  basic,
  bearer,
  OTHER_AUDIENCE,
  SECRET,
  secretAgentPolicy,
  startTestBroker,
  T0,
  USER_ISSUER,
  type TestBroker,
} from '../../support/broker.js'

// T0 is Friday 2027-01-15 08:00 UTC, 09:00 in Berlin (CET, UTC+1).
const HOUR = 3600
const OFFICE = `${secretAgentPolicy('office-agent', USER_ISSUER)}hours: Mon-Fri 08:00-18:00\ntimezone: Europe/Berlin\n`
// The policy's zone is UTC: the first grant names its own, the second (a day range wrapping the week) takes UTC.
const SHIFT = secretAgentPolicy('shift-agent', USER_ISSUER).replace(
  /^grants: .*$/m,
  `grants:
  - { audience: ${AUDIENCE}, scopes: [read], default_scopes: [read], hours: Mon-Fri 08:00-18:00, timezone: Europe/Berlin }
  - { audience: ${OTHER_AUDIENCE}, scopes: [read], default_scopes: [read], hours: 'Fri-Mon 00:00-24:00' }`,
)

interface Explained {
  decision: string
  status?: number
  error?: string
  error_description?: string
  failed_check?: string
  reason?: string | null
  checks: { check: string; outcome: string; error?: string; reason?: string }[]
}

function helpers(b: () => TestBroker) {
  const explain = async (agent: string, audience: string = AUDIENCE): Promise<Explained> => {
    const res = await b().mandate.app.request('/admin/policy/explain', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(ADMIN_KEYS.auditor) },
      body: JSON.stringify({ agent, iss: USER_ISSUER, sub: 'alice', audience, claims: { scope: 'read' } }),
    })
    expect(res.status).toBe(200)
    return (await res.json()) as Explained
  }
  const exchange = async (agent: string, audience: string = AUDIENCE) =>
    b().token(b().exchangeForm(await b().userToken({ scope: 'read' }), { audience }), basic(agent, SECRET))
  const lastDenial = () =>
    b()
      .audit.events()
      .filter((e) => e.type === 'token.denied')
      .at(-1) as { agent?: string; error?: string; reason?: string } | undefined
  /** Explain, then the real exchange: both grant, or both refuse with the same status, error and description. */
  const agree = async (agent: string, audience: string = AUDIENCE): Promise<Explained> => {
    const e = await explain(agent, audience)
    const denials = b()
      .audit.events()
      .filter((r) => r.type === 'token.denied').length
    const res = await exchange(agent, audience)
    if (e.decision === 'granted') {
      expect(res.status).toBe(200)
    } else {
      expect(res.status).toBe(e.status)
      const body = (await res.json()) as { error: string; error_description: string; access_token?: string }
      expect(body).toMatchObject({ error: e.error, error_description: e.error_description })
      expect(body.access_token).toBeUndefined()
      // Recorded as a denial like any policy refusal, once, with the reason explain gave.
      expect(
        b()
          .audit.events()
          .filter((r) => r.type === 'token.denied').length,
      ).toBe(denials + 1)
      expect(lastDenial()).toMatchObject({ agent, error: e.error, reason: e.reason })
    }
    return e
  }
  const check = (e: Explained, name: string) => e.checks.find((c) => c.check === name)
  return { explain, exchange, agree, check, lastDenial }
}

describe('hours: explain and the exchange agree', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ policies: { 'office-agent.yaml': OFFICE, 'shift-agent.yaml': SHIFT } })
  })
  afterAll(() => b.close())
  const { agree, check } = helpers(() => b)
  const at = (t: number) => b.advance(t - b.now())

  it('inside the policy’s hours: granted, policy.hours passes right after agent.in_force with the local time', async () => {
    at(T0)
    const e = await agree('office-agent')
    expect(e.decision).toBe('granted')
    expect(e.checks.map((c) => c.check).slice(3, 6)).toEqual(['agent.in_force', 'policy.hours', 'agent.delegator'])
    expect(check(e, 'policy.hours')).toEqual({ check: 'policy.hours', outcome: 'pass', reason: 'at Fri 09:00 Europe/Berlin, inside Mon-Fri 08:00-18:00' })
    // A policy without hours makes no hours check.
    expect(check(await agree('secret-agent'), 'policy.hours')).toBeUndefined()
  })

  it('at 18:00 the policy’s window has closed (its end is exclusive): unauthorized_client, fixed text, the time in the reason only', async () => {
    at(T0 + 9 * HOUR) // Fri 18:00 Berlin
    const e = await agree('office-agent')
    expect(e).toMatchObject({
      decision: 'denied',
      failed_check: 'policy.hours',
      error: 'unauthorized_client',
      error_description: "outside the agent's hours",
      reason: 'at Fri 18:00 Europe/Berlin, outside Mon-Fri 08:00-18:00',
    })
    expect(check(e, 'agent.delegator')).toBeUndefined()
    expect(check(e, 'revocation')?.outcome).toBe('not_reached')
    at(T0 + 9 * HOUR - 60) // 17:59: still inside
    expect((await agree('office-agent')).decision).toBe('granted')
  })

  it('a grant outside its hours does not apply: invalid_target at grant.hours, as for an audience never granted', async () => {
    at(T0 + 9 * HOUR) // Fri 18:00 Berlin, 17:00 UTC
    const e = await agree('shift-agent')
    expect(e).toMatchObject({
      decision: 'denied',
      failed_check: 'grant.hours',
      error: 'invalid_target',
      error_description: 'audience not permitted for this agent',
      reason: `aud=${AUDIENCE} at Fri 18:00 Europe/Berlin, outside Mon-Fri 08:00-18:00`,
    })
    expect(e.checks.map((c) => c.check).slice(-6, -2)).toEqual(['audience', 'grant', 'grant.hours', 'revocation'])
    // The agent's other grant has hours of its own, in the policy's zone (UTC): Friday is inside them.
    const other = await agree('shift-agent', OTHER_AUDIENCE)
    expect(other.decision).toBe('granted')
    expect(check(other, 'grant.hours')).toMatchObject({ outcome: 'pass', reason: 'at Fri 17:00 UTC, inside Fri-Mon 00:00-24:00' })
  })

  it('a day range wrapping the week (Fri-Mon) holds through the weekend up to Monday 24:00, and not on Tuesday', async () => {
    const utc = (day: number, h: number, m = 0) => Date.UTC(2027, 0, day, h, m) / 1000
    for (const t of [utc(16, 8), utc(17, 0), utc(18, 23, 59)]) {
      at(t)
      expect((await agree('shift-agent', OTHER_AUDIENCE)).decision).toBe('granted')
    }
    at(utc(19, 0)) // Tue 00:00 UTC
    const e = await agree('shift-agent', OTHER_AUDIENCE)
    expect(e).toMatchObject({
      failed_check: 'grant.hours',
      error: 'invalid_target',
      reason: `aud=${OTHER_AUDIENCE} at Tue 00:00 UTC, outside Fri-Mon 00:00-24:00`,
    })
    // Tuesday 09:00 in Berlin is inside the first grant's (weekday) hours.
    at(utc(19, 8))
    expect((await agree('shift-agent')).decision).toBe('granted')
  })
})

describe('hours across the change to summer time (Europe/Berlin, last Sunday of March)', () => {
  // 2027-03-28: clocks go from 02:00 CET to 03:00 CEST. 06:30 UTC is 08:30 local that day (07:30 the Sunday before).
  const MORNING = Date.UTC(2027, 2, 28, 6, 30) / 1000
  const SUNDAY = `${secretAgentPolicy('sunday-agent', USER_ISSUER)}hours: Sun 08:00-18:00\ntimezone: Europe/Berlin\n`
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker({ startAt: MORNING, policies: { 'sunday-agent.yaml': SUNDAY } })
  })
  afterAll(() => b.close())
  const { agree, check } = helpers(() => b)

  it('reads the local time by the new offset: 06:30 UTC is inside, 16:30 UTC (18:30 local) is outside', async () => {
    const morning = await agree('sunday-agent')
    expect(morning.decision).toBe('granted')
    expect(check(morning, 'policy.hours')?.reason).toBe('at Sun 08:30 Europe/Berlin, inside Sun 08:00-18:00')
    b.advance(10 * HOUR)
    const evening = await agree('sunday-agent')
    expect(evening).toMatchObject({ failed_check: 'policy.hours', error: 'unauthorized_client', reason: 'at Sun 18:30 Europe/Berlin, outside Sun 08:00-18:00' })
  })
})
