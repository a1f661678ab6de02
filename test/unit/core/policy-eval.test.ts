import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { actClaim, type AgentId, type Jti, type MandateClaims, type Subject } from '../../../src/core/claims.js'
import { OAuthError, type OAuthErrorCode } from '../../../src/core/errors.js'
import { declareHours, type DeclaredHours } from '../../../src/core/hours.js'
import { evaluatePolicy, OUTSIDE_AGENT_HOURS, type Grant, type PolicyCheck, type PolicyInput } from '../../../src/core/policy-eval.js'
import type { AgentPolicy, AudienceGrant, DelegatorRule } from '../../../src/policy/port.js'
import type { MandateSubject, UserSubject } from '../../../src/tokens/port.js'

const NOW = 1_800_000_000
const BROKER = 'https://mandate.test'
const IDP = 'https://idp.test'
const OTHER_IDP = 'https://other-idp.test'
const API = 'https://api.test'
const API2 = 'https://api2.test'

const A = 'agent-a' as AgentId
const B = 'agent-b' as AgentId
const C = 'agent-c' as AgentId
const ALICE = 'alice' as Subject

/** A small scope universe, so that generated sets overlap often. */
const UNIVERSE: readonly string[] = ['read', 'write', 'admin', 'delete', 'list', 'share']

function grants(...entries: [audience: string, scopes: readonly string[], defaults?: readonly string[]][]): Map<string, AudienceGrant> {
  return new Map(entries.map(([audience, scopes, defaults = []]) => [audience, { audience, scopes: new Set(scopes), defaultScopes: defaults }]))
}

interface PolicyOverrides {
  readonly agent?: AgentId
  readonly owner?: string
  readonly expires?: number
  readonly delegators?: readonly DelegatorRule[]
  readonly grants?: ReadonlyMap<string, AudienceGrant>
  readonly ttl?: { readonly default: number; readonly max: number }
  readonly maxDepth?: number
  readonly subAgents?: readonly AgentId[]
  readonly hours?: DeclaredHours
}

function policy(o: PolicyOverrides = {}): AgentPolicy {
  const agent = o.agent ?? A
  return {
    agent,
    owner: o.owner ?? 'platform-team@example.com',
    purpose: 'testing',
    expires: o.expires ?? NOW + 86_400,
    authentication: { method: 'workload_identity', issuer: 'https://workloads.test', subject: `spiffe://test/${agent}` },
    delegators: o.delegators ?? [{ issuer: IDP, claims: {} }],
    grants: o.grants ?? grants([API, ['read', 'write'], ['read']]),
    ttl: o.ttl ?? { default: 300, max: 900 },
    delegation: { maxDepth: o.maxDepth ?? 3, subAgents: new Set(o.subAgents ?? []) },
    rateLimit: { agent: undefined, user: undefined },
    ...(o.hours === undefined ? {} : { hours: o.hours }),
    sourceHash: '0'.repeat(64),
    source: `policies/${agent}.yaml`,
  }
}

function user(o: Partial<Omit<UserSubject, 'kind'>> = {}): UserSubject {
  return { kind: 'user', issuer: IDP, sub: ALICE, iat: NOW - 60, exp: NOW + 3600, scopes: undefined, claims: {}, ...o }
}

function mandateSubject(o: Partial<MandateClaims> = {}): MandateSubject {
  const claims: MandateClaims = {
    iss: BROKER,
    sub: ALICE,
    sub_id: { format: 'iss_sub', iss: IDP, sub: ALICE },
    aud: API,
    client_id: A,
    act: actClaim([A]),
    scope: 'read write',
    iat: NOW - 60,
    nbf: NOW - 60,
    exp: NOW + 600,
    jti: 'jti-root' as Jti,
    ...o,
  }
  return { kind: 'mandate', claims }
}

function input(o: Partial<PolicyInput> = {}): PolicyInput {
  return {
    issuer: BROKER,
    policy: policy(),
    subject: user(),
    chainPolicies: [],
    audiences: [API],
    scopes: undefined,
    requestedTtl: undefined,
    now: NOW,
    ...o,
  }
}

/** Runs the evaluation; returns the grant, or the OAuthError code it threw. Anything else is rethrown. */
function attempt(i: PolicyInput): { ok: true; grant: Grant } | { ok: false; code: OAuthErrorCode } {
  try {
    return { ok: true, grant: evaluatePolicy(i) }
  } catch (err) {
    if (err instanceof OAuthError) return { ok: false, code: err.code }
    throw err
  }
}

function codeOf(i: PolicyInput): OAuthErrorCode {
  const r = attempt(i)
  if (r.ok) throw new Error(`expected an OAuthError, got a grant: ${JSON.stringify(r.grant)}`)
  return r.code
}

function grantOf(i: PolicyInput): Grant {
  const r = attempt(i)
  if (!r.ok) throw new Error(`expected a grant, got ${r.code}`)
  return r.grant
}

/** What a minted token for `grant` would carry, as the next hop's subject. */
function tokenFrom(grant: Grant, agent: AgentId, jti: string): MandateSubject {
  return mandateSubject({
    aud: grant.audience,
    client_id: agent,
    act: actClaim(grant.actors),
    scope: grant.scopes.join(' '),
    iat: NOW,
    nbf: NOW,
    exp: grant.expiresAt,
    jti: jti as Jti,
    ...(grant.ancestors.length > 0 ? { chain: grant.ancestors } : {}),
  })
}

const sorted = (xs: Iterable<string>) => [...xs].sort()

const scopeSet = fc.subarray([...UNIVERSE])
const nonEmptyScopeSet = fc.subarray([...UNIVERSE], { minLength: 1 })
/** Requested scopes: mostly from the universe, sometimes foreign tokens; unique, as parseScope returns them. */
const requestedScopes = fc.uniqueArray(
  fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...UNIVERSE) }, { weight: 1, arbitrary: fc.stringMatching(/^[a-z:]{1,6}$/) }),
  { maxLength: 6 },
)
/** A policy grant: scopes, and defaults that are a subset of them (the schema guarantees that). */
const policyGrant = nonEmptyScopeSet.chain((scopes) => fc.record({ scopes: fc.constant(scopes), defaults: fc.subarray(scopes) }))

describe('evaluatePolicy: scope properties', () => {
  it('grants exactly the requested scopes when they are within policy ∩ authority, otherwise invalid_scope (never narrowed)', () => {
    fc.assert(
      fc.property(policyGrant, fc.option(scopeSet, { nil: undefined }), fc.option(requestedScopes, { nil: undefined }), (g, authority, requested) => {
        const allowed = new Set(g.scopes.filter((s) => authority === undefined || authority.includes(s)))
        const r = attempt(
          input({
            policy: policy({ grants: grants([API, g.scopes, g.defaults]) }),
            subject: user({ scopes: authority === undefined ? undefined : new Set(authority) }),
            scopes: requested,
          }),
        )
        if (requested === undefined) {
          const expected = g.defaults.filter((s) => allowed.has(s))
          if (expected.length === 0) {
            expect(r).toEqual({ ok: false, code: 'invalid_scope' })
          } else {
            expect(r.ok).toBe(true)
            if (r.ok) expect(sorted(r.grant.scopes)).toEqual(sorted(expected))
          }
          return
        }
        const within = requested.length > 0 && requested.every((s) => allowed.has(s))
        if (!within) {
          expect(r).toEqual({ ok: false, code: 'invalid_scope' })
          return
        }
        expect(r.ok).toBe(true)
        if (!r.ok) return
        // ⊆ requested ∩ policy grant ∩ subject authority, and nothing requested was dropped.
        for (const s of r.grant.scopes) {
          expect(requested).toContain(s)
          expect(g.scopes).toContain(s)
          if (authority !== undefined) expect(authority).toContain(s)
        }
        expect(sorted(r.grant.scopes)).toEqual(sorted(requested))
      }),
      { numRuns: 500 },
    )
  })

  it('a re-delegated token carries only scopes of its parent, its audience, and no more lifetime', () => {
    fc.assert(
      fc.property(
        nonEmptyScopeSet,
        policyGrant,
        fc.option(requestedScopes, { nil: undefined }),
        fc.constantFrom(API, API2),
        fc.constantFrom(API, API2),
        fc.integer({ min: -120, max: 7200 }),
        fc.record({ def: fc.integer({ min: 1, max: 3600 }), extra: fc.integer({ min: 0, max: 3600 }) }),
        fc.option(fc.integer({ min: 1, max: 999_999 }), { nil: undefined }),
        (parentScopes, g, requested, parentAud, requestedAud, parentLife, ttl, requestedTtl) => {
          const parent = mandateSubject({ aud: parentAud, scope: parentScopes.join(' '), exp: NOW + parentLife })
          const child = policy({
            agent: B,
            grants: grants([API, g.scopes, g.defaults], [API2, g.scopes, g.defaults]),
            ttl: { default: ttl.def, max: ttl.def + ttl.extra },
          })
          const r = attempt(
            input({
              policy: child,
              subject: parent,
              chainPolicies: [policy({ agent: A, subAgents: [B] })],
              audiences: [requestedAud],
              scopes: requested,
              requestedTtl,
            }),
          )

          // Every reason this request must fail, and the code each one calls for.
          const allowed = new Set(g.scopes.filter((s) => parentScopes.includes(s)))
          const scopesOk = requested === undefined ? g.defaults.some((s) => allowed.has(s)) : requested.length > 0 && requested.every((s) => allowed.has(s))
          const reasons = new Set<OAuthErrorCode>()
          if (requestedAud !== parentAud) reasons.add('invalid_target')
          if (!scopesOk) reasons.add('invalid_scope')
          if (parentLife <= 0) reasons.add('invalid_request')

          if (!r.ok) {
            expect(reasons).toContain(r.code)
            return
          }
          expect(reasons.size).toBe(0)
          const { grant } = r
          expect(grant.audience).toBe(parent.claims.aud)
          for (const s of grant.scopes) expect(parentScopes).toContain(s)
          expect(grant.expiresAt).toBeLessThanOrEqual(parent.claims.exp)
          expect(grant.expiresAt).toBeGreaterThan(NOW)
          expect(grant.actors).toEqual([B, A])
          expect(grant.ancestors).toEqual([parent.claims.jti])
        },
      ),
      { numRuns: 500 },
    )
  })

  it('lifetime is min(requested or default, policy max, subject remaining life, policy expiry), never beyond now + ttl.max', () => {
    fc.assert(
      fc.property(
        fc.record({ def: fc.integer({ min: 1, max: 86_400 }), extra: fc.integer({ min: 0, max: 86_400 }) }),
        fc.option(fc.integer({ min: 1, max: 999_999 }), { nil: undefined }),
        fc.integer({ min: -600, max: 200_000 }),
        fc.boolean(),
        (ttl, requestedTtl, subjectLife, redelegate) => {
          const max = ttl.def + ttl.extra
          const subjectExp = NOW + subjectLife
          const i = redelegate
            ? input({
                policy: policy({ agent: B, ttl: { default: ttl.def, max } }),
                subject: mandateSubject({ exp: subjectExp, scope: 'read' }),
                chainPolicies: [policy({ agent: A, subAgents: [B] })],
                requestedTtl,
              })
            : input({ policy: policy({ ttl: { default: ttl.def, max } }), subject: user({ exp: subjectExp }), requestedTtl })
          const r = attempt(i)
          if (subjectLife <= 0) {
            expect(r).toEqual({ ok: false, code: 'invalid_request' })
            return
          }
          expect(r.ok).toBe(true)
          if (!r.ok) return
          const { expiresAt } = r.grant
          expect(expiresAt).toBeLessThanOrEqual(NOW + max)
          expect(expiresAt).toBeLessThanOrEqual(subjectExp)
          if (requestedTtl !== undefined) expect(expiresAt).toBeLessThanOrEqual(NOW + requestedTtl)
          // The policy itself expires a day after NOW in these fixtures: no token outlives it either.
          expect(expiresAt).toBe(Math.min(NOW + Math.min(requestedTtl ?? ttl.def, max), subjectExp, NOW + 86_400))
        },
      ),
      { numRuns: 500 },
    )
  })
})

describe('evaluatePolicy: the agent policy', () => {
  it('grants the defaults for a plain first hop', () => {
    expect(grantOf(input())).toEqual({ audience: API, scopes: ['read'], expiresAt: NOW + 300, actors: [A], ancestors: [], userIssuer: IDP })
  })

  it('refuses an expired policy with unauthorized_client, from its expiry instant on', () => {
    expect(codeOf(input({ policy: policy({ expires: NOW }) }))).toBe('unauthorized_client')
    expect(codeOf(input({ policy: policy({ expires: NOW - 1 }) }))).toBe('unauthorized_client')
    expect(grantOf(input({ policy: policy({ expires: NOW + 1 }) })).actors).toEqual([A])
  })

  it.each(['', '   ', '\t'])('refuses a policy with owner %j with unauthorized_client', (owner) => {
    expect(codeOf(input({ policy: policy({ owner }) }))).toBe('unauthorized_client')
  })

  it('caps requestedTtl at the policy max', () => {
    expect(grantOf(input({ requestedTtl: 10_000 })).expiresAt).toBe(NOW + 900)
    expect(grantOf(input({ requestedTtl: 60 })).expiresAt).toBe(NOW + 60)
  })

  it('never outlives the user token (first hop included)', () => {
    expect(grantOf(input({ subject: user({ exp: NOW + 42 }) })).expiresAt).toBe(NOW + 42)
  })

  it('refuses a subject with no lifetime left with invalid_request', () => {
    expect(codeOf(input({ subject: user({ exp: NOW }) }))).toBe('invalid_request')
  })
})

describe('evaluatePolicy: users who may delegate', () => {
  const engineering: DelegatorRule = { issuer: IDP, claims: { groups: ['engineering', 'sre'] } }

  it('refuses a user of an issuer the policy does not name with invalid_request', () => {
    expect(codeOf(input({ subject: user({ issuer: OTHER_IDP }) }))).toBe('invalid_request')
  })

  it('refuses a user with no delegator rules at all (sub-agent only policy) with invalid_request', () => {
    expect(codeOf(input({ policy: policy({ delegators: [] }) }))).toBe('invalid_request')
  })

  it('refuses a user missing a required claim with invalid_request', () => {
    const p = policy({ delegators: [engineering] })
    expect(codeOf(input({ policy: p, subject: user({ claims: {} }) }))).toBe('invalid_request')
    expect(codeOf(input({ policy: p, subject: user({ claims: { groups: ['sales'] } }) }))).toBe('invalid_request')
    expect(codeOf(input({ policy: p, subject: user({ claims: { groups: 'sales' } }) }))).toBe('invalid_request')
    expect(codeOf(input({ policy: p, subject: user({ claims: { groups: { engineering: true } } }) }))).toBe('invalid_request')
  })

  it('admits a user holding one accepted value, as an array or a string', () => {
    const p = policy({ delegators: [engineering] })
    expect(grantOf(input({ policy: p, subject: user({ claims: { groups: ['sales', 'sre'] } }) })).actors).toEqual([A])
    expect(grantOf(input({ policy: p, subject: user({ claims: { groups: 'engineering' } }) })).actors).toEqual([A])
  })

  it('admits a user matched by any one of several rules', () => {
    const p = policy({ delegators: [{ issuer: OTHER_IDP, claims: {} }, engineering] })
    expect(grantOf(input({ policy: p, subject: user({ claims: { groups: ['sre'] } }) })).actors).toEqual([A])
    expect(grantOf(input({ policy: p, subject: user({ issuer: OTHER_IDP }) })).actors).toEqual([A])
  })
})

describe('evaluatePolicy: may_act (RFC 8693 §4.4)', () => {
  it('refuses may_act naming another agent with invalid_request', () => {
    expect(codeOf(input({ subject: user({ claims: { may_act: { sub: 'agent-z' } } }) }))).toBe('invalid_request')
  })

  it('accepts may_act naming this agent', () => {
    expect(grantOf(input({ subject: user({ claims: { may_act: { sub: A } } }) })).actors).toEqual([A])
    expect(grantOf(input({ subject: user({ claims: { may_act: { sub: A, iss: BROKER } } }) })).actors).toEqual([A])
  })

  it('refuses may_act naming this agent at another issuer with invalid_request', () => {
    expect(codeOf(input({ subject: user({ claims: { may_act: { sub: A, iss: 'https://elsewhere.test' } } }) }))).toBe('invalid_request')
  })

  it.each([
    ['a string', A],
    ['an array', [{ sub: A }]],
    ['null', null],
  ])('refuses may_act that is %s with invalid_request', (_n, mayAct) => {
    expect(codeOf(input({ subject: user({ claims: { may_act: mayAct } }) }))).toBe('invalid_request')
  })
})

describe('evaluatePolicy: audience', () => {
  it('requires an audience (invalid_request)', () => {
    expect(codeOf(input({ audiences: [] }))).toBe('invalid_request')
  })

  it('refuses two distinct audiences with invalid_target', () => {
    const p = policy({ grants: grants([API, ['read'], ['read']], [API2, ['read'], ['read']]) })
    expect(codeOf(input({ policy: p, audiences: [API, API2] }))).toBe('invalid_target')
  })

  it('accepts the same audience sent twice (resource and audience together)', () => {
    expect(grantOf(input({ audiences: [API, API] })).audience).toBe(API)
  })

  it('refuses an audience the policy does not list with invalid_target', () => {
    expect(codeOf(input({ audiences: ['https://unknown.test'] }))).toBe('invalid_target')
    // Exact comparison: a trailing slash is another audience.
    expect(codeOf(input({ audiences: [`${API}/`] }))).toBe('invalid_target')
  })
})

describe('evaluatePolicy: hours', () => {
  // NOW is Friday 2027-01-15 08:00 UTC, 09:00 in Berlin.
  const office = declareHours('Mon-Fri 08:00-18:00', 'Europe/Berlin')!
  const evening = declareHours('Mon-Fri 18:00-22:00', 'Europe/Berlin')!
  const refusal = (i: PolicyInput) => {
    try {
      evaluatePolicy(i)
    } catch (err) {
      if (err instanceof OAuthError) return { code: err.code, description: err.description, detail: err.detail }
      throw err
    }
    throw new Error('expected a refusal')
  }
  const traced = (i: PolicyInput) => {
    const seen: [PolicyCheck, string | undefined][] = []
    try {
      evaluatePolicy(i, (check, detail) => seen.push([check, detail]))
    } catch {
      // The trace is what is asked for.
    }
    return seen
  }

  it('grants inside the policy’s hours; outside them refuses unauthorized_client with fixed text, the local time in the detail', () => {
    expect(grantOf(input({ policy: policy({ hours: office }) })).audience).toBe(API)
    expect(refusal(input({ policy: policy({ hours: evening }) }))).toEqual({
      code: 'unauthorized_client',
      description: OUTSIDE_AGENT_HOURS,
      detail: 'at Fri 09:00 Europe/Berlin, outside Mon-Fri 18:00-22:00',
    })
  })

  it('checks the policy’s hours right after it is in force, before who the user is', () => {
    const outsider = user({ issuer: OTHER_IDP })
    expect(codeOf(input({ policy: policy({ hours: evening }), subject: outsider }))).toBe('unauthorized_client')
    expect(codeOf(input({ policy: policy({ hours: evening, expires: NOW }) }))).toBe('unauthorized_client')
    expect(traced(input({ policy: policy({ hours: office }) })).slice(0, 3)).toEqual([
      ['agent.in_force', undefined],
      ['policy.hours', 'at Fri 09:00 Europe/Berlin, inside Mon-Fri 08:00-18:00'],
      ['agent.delegator', undefined],
    ])
  })

  it('treats a grant outside its hours as absent: invalid_target, as for an audience never granted; the other grants still apply', () => {
    const g = grants([API, ['read'], ['read']], [API2, ['read'], ['read']])
    const shifted = new Map([...g].map(([aud, grant]) => [aud, aud === API ? { ...grant, hours: evening } : grant]))
    const absent = refusal(input({ audiences: ['https://unknown.test'] }))
    expect(refusal(input({ policy: policy({ grants: shifted }) }))).toEqual({
      code: 'invalid_target',
      description: absent.description,
      detail: `aud=${API} at Fri 09:00 Europe/Berlin, outside Mon-Fri 18:00-22:00`,
    })
    expect(grantOf(input({ policy: policy({ grants: shifted }), audiences: [API2] })).audience).toBe(API2)
    const inside = new Map([...g].map(([aud, grant]) => [aud, { ...grant, hours: office }]))
    expect(grantOf(input({ policy: policy({ grants: inside }) })).audience).toBe(API)
  })

  it('needs both: the policy’s hours are checked first, then the grant’s', () => {
    const shifted = new Map([[API, { ...grants([API, ['read'], ['read']]).get(API)!, hours: evening }]])
    expect(codeOf(input({ policy: policy({ hours: office, grants: shifted }) }))).toBe('invalid_target')
    expect(codeOf(input({ policy: policy({ hours: evening, grants: shifted }) }))).toBe('unauthorized_client')
  })

  it('holds the requesting agent’s hours on a re-delegation too', () => {
    const parent = policy({ subAgents: [B] })
    const i = input({ policy: policy({ agent: B, hours: evening }), subject: mandateSubject(), chainPolicies: [parent], scopes: ['read'] })
    expect(codeOf(i)).toBe('unauthorized_client')
    expect(grantOf({ ...i, policy: policy({ agent: B, hours: office }) }).actors).toEqual([B, A])
  })
})

describe('evaluatePolicy: scopes', () => {
  it('refuses an explicitly empty scope list with invalid_scope', () => {
    expect(codeOf(input({ scopes: [] }))).toBe('invalid_scope')
  })

  it('refuses a request beyond the user token authority rather than narrowing it', () => {
    expect(codeOf(input({ subject: user({ scopes: new Set(['read']) }), scopes: ['read', 'write'] }))).toBe('invalid_scope')
  })

  it('refuses when no default scope survives the user token authority', () => {
    expect(codeOf(input({ subject: user({ scopes: new Set(['write']) }) }))).toBe('invalid_scope')
  })
})

describe('evaluatePolicy: re-delegation', () => {
  const parentPolicy = policy({ agent: A, subAgents: [B], maxDepth: 3 })
  const chainPolicies = [parentPolicy]
  const childPolicy = policy({ agent: B, delegators: [], grants: grants([API, ['read', 'write'], ['read']]) })
  const redelegation = (o: Partial<PolicyInput> = {}): PolicyInput => input({ policy: childPolicy, subject: mandateSubject(), chainPolicies, ...o })

  it('grants a narrower token to a listed sub-agent', () => {
    expect(grantOf(redelegation({ scopes: ['read'] }))).toEqual({
      audience: API,
      scopes: ['read'],
      expiresAt: NOW + 300,
      actors: [B, A],
      ancestors: ['jti-root'],
      userIssuer: IDP,
      // The parent's act as it was, so that its hops keep their instances.
      parentAct: { sub: A },
    })
  })

  it('refuses a user token that is already delegated (act) rather than drop its actor', () => {
    expect(codeOf(input({ subject: user({ claims: { act: { sub: 'someone-else' } } }) }))).toBe('invalid_request')
  })

  it('holds the user’s may_act at the first hop only: the grant carries nothing of it, and the parent’s policy governs the sub-agents', () => {
    const hop1 = grantOf(input({ subject: user({ claims: { may_act: { sub: A } } }) }))
    expect(Object.keys(hop1).sort()).toEqual(['actors', 'ancestors', 'audience', 'expiresAt', 'scopes', 'userIssuer'])
    // A parent token minted before may_act stopped being copied still carries it: ignored.
    const older = { kind: 'mandate', claims: { ...mandateSubject().claims, may_act: { sub: A } } } as MandateSubject
    expect(grantOf(redelegation({ subject: older })).actors).toEqual([B, A])
    // The parent agent's policy is what binds: a sub-agent it does not list gets nothing.
    expect(codeOf(redelegation({ subject: older, chainPolicies: [policy({ agent: A, subAgents: [], maxDepth: 3 })] }))).toBe('invalid_request')
  })

  it('names the user’s issuer on every hop (sub is unique only within it)', () => {
    expect(grantOf(redelegation({})).userIssuer).toBe(IDP)
    expect(grantOf(redelegation({ subject: mandateSubject({ sub_id: { format: 'iss_sub', iss: 'https://partner.test', sub: ALICE } }) })).userIssuer).toBe(
      'https://partner.test',
    )
  })

  it('refuses scopes beyond the parent token with invalid_scope', () => {
    expect(codeOf(redelegation({ subject: mandateSubject({ scope: 'read' }), scopes: ['write'] }))).toBe('invalid_scope')
  })

  it('refuses an audience other than the parent token audience with invalid_target', () => {
    const wide = policy({ agent: B, grants: grants([API, ['read']], [API2, ['read']]) })
    expect(codeOf(redelegation({ policy: wide, audiences: [API2], scopes: ['read'] }))).toBe('invalid_target')
  })

  it('refuses when the parent policy does not list the sub-agent (invalid_request)', () => {
    expect(codeOf(redelegation({ chainPolicies: [policy({ agent: A, subAgents: [C] })] }))).toBe('invalid_request')
  })

  it('refuses when there is no parent policy, or it belongs to another agent (invalid_request)', () => {
    expect(codeOf(redelegation({ chainPolicies: [] }))).toBe('invalid_request')
    expect(codeOf(redelegation({ chainPolicies: [policy({ agent: C, subAgents: [B] })] }))).toBe('invalid_request')
  })

  it('refuses when the parent policy has expired or lost its owner (invalid_request, not unauthorized_client)', () => {
    expect(codeOf(redelegation({ chainPolicies: [policy({ agent: A, subAgents: [B], expires: NOW })] }))).toBe('invalid_request')
    expect(codeOf(redelegation({ chainPolicies: [policy({ agent: A, subAgents: [B], owner: ' ' })] }))).toBe('invalid_request')
  })

  it('refuses the sub-agent’s own expired policy with unauthorized_client', () => {
    expect(codeOf(redelegation({ policy: policy({ agent: B, expires: NOW - 1 }) }))).toBe('unauthorized_client')
  })

  it('refuses a parent token with no lifetime left (invalid_request)', () => {
    expect(codeOf(redelegation({ subject: mandateSubject({ exp: NOW }) }))).toBe('invalid_request')
  })

  it('refuses a cyclic chain: the agent is already in the act chain (invalid_request)', () => {
    // B holds a token whose chain is B <- A, and hands it to A again.
    const subject = mandateSubject({ client_id: B, act: actClaim([B, A]), chain: ['jti-root' as Jti], jti: 'jti-2' as Jti })
    const i = input({
      policy: policy({ agent: A }),
      subject,
      chainPolicies: [policy({ agent: B, subAgents: [A] })],
    })
    expect(codeOf(i)).toBe('invalid_request')
    // Control: the same chain handed to a newcomer is fine.
    expect(grantOf({ ...i, policy: policy({ agent: C }), chainPolicies: [policy({ agent: B, subAgents: [C] }), policy({ agent: A })] }).actors).toEqual([
      C,
      B,
      A,
    ])
  })

  it('holds every earlier agent’s max_depth, not only the parent’s (invalid_request)', () => {
    // Chain B <- A where A allows depth 2 only: a third hop to C is refused even though B and C allow 3.
    const subject = mandateSubject({ client_id: B, act: actClaim([B, A]), chain: ['jti-root' as Jti], jti: 'jti-2' as Jti })
    const i = input({
      policy: policy({ agent: C, maxDepth: 3 }),
      subject,
      chainPolicies: [policy({ agent: B, subAgents: [C], maxDepth: 3 }), policy({ agent: A, maxDepth: 2 })],
    })
    expect(codeOf(i)).toBe('invalid_request')
    expect(grantOf({ ...i, chainPolicies: [i.chainPolicies[0], policy({ agent: A, maxDepth: 3 })] }).actors).toEqual([C, B, A])
  })

  it('refuses a chain whose earlier agent has lost its policy (invalid_request)', () => {
    const subject = mandateSubject({ client_id: B, act: actClaim([B, A]), chain: ['jti-root' as Jti], jti: 'jti-2' as Jti })
    const i = input({ policy: policy({ agent: C }), subject, chainPolicies: [policy({ agent: B, subAgents: [C] }), undefined] })
    expect(codeOf(i)).toBe('invalid_request')
  })

  it('never lets a token outlive the policy that allowed it', () => {
    expect(grantOf(input({ policy: policy({ expires: NOW + 42 }) })).expiresAt).toBe(NOW + 42)
  })

  it('refuses a token handed to the agent that holds it (invalid_request)', () => {
    const i = input({ policy: policy({ agent: A, subAgents: [A] }), subject: mandateSubject(), chainPolicies: [policy({ agent: A, subAgents: [A] })] })
    expect(codeOf(i)).toBe('invalid_request')
  })

  it('refuses a depth over the sub-agent’s limit (invalid_request)', () => {
    expect(codeOf(redelegation({ policy: policy({ agent: B, maxDepth: 1 }) }))).toBe('invalid_request')
    expect(grantOf(redelegation({ policy: policy({ agent: B, maxDepth: 2 }) })).actors).toEqual([B, A])
  })

  it('refuses a depth over the parent’s limit (invalid_request)', () => {
    expect(codeOf(redelegation({ chainPolicies: [policy({ agent: A, subAgents: [B], maxDepth: 1 })] }))).toBe('invalid_request')
  })

  it('does not check the user delegator rules for the sub-agent', () => {
    // The sub-agent policy has no users at all; the parent token is what it acts on.
    expect(grantOf(redelegation({ policy: policy({ agent: B, delegators: [] }) })).actors).toEqual([B, A])
  })

  it('builds a 3-hop chain: actors newest first, ancestors root first, and everything shrinks', () => {
    const pa = policy({ agent: A, subAgents: [B], maxDepth: 3, grants: grants([API, ['read', 'write', 'admin'], ['read', 'write', 'admin']]) })
    const pb = policy({ agent: B, subAgents: [C], maxDepth: 3, grants: grants([API, ['read', 'write']]), ttl: { default: 600, max: 600 } })
    const pc = policy({ agent: C, maxDepth: 3, grants: grants([API, ['read', 'write']]), ttl: { default: 900, max: 900 } })

    const hop1 = grantOf(input({ policy: pa, subject: user({ exp: NOW + 800 }) }))
    expect(hop1).toMatchObject({ actors: [A], ancestors: [], expiresAt: NOW + 300 })

    const hop2 = grantOf(input({ policy: pb, subject: tokenFrom(hop1, A, 'jti-1'), chainPolicies: [pa], scopes: ['read', 'write'] }))
    expect(hop2).toMatchObject({ actors: [B, A], ancestors: ['jti-1'], expiresAt: NOW + 300 })

    const hop3 = grantOf(input({ policy: pc, subject: tokenFrom(hop2, B, 'jti-2'), chainPolicies: [pb, pa], scopes: ['read'] }))
    expect(hop3).toEqual({
      audience: API,
      scopes: ['read'],
      expiresAt: NOW + 300,
      actors: [C, B, A],
      ancestors: ['jti-1', 'jti-2'],
      userIssuer: IDP,
      parentAct: { sub: B, act: { sub: A } },
    })

    // A fourth hop back to A is a cycle.
    const pc2 = policy({ agent: C, subAgents: [A], maxDepth: 4 })
    const pa4 = policy({ agent: A, maxDepth: 4 })
    expect(codeOf(input({ policy: pa4, subject: tokenFrom(hop3, C, 'jti-3'), chainPolicies: [pc2, pb, pa] }))).toBe('invalid_request')
  })

  it('refuses the third hop when the chain would exceed max_depth 2', () => {
    const pa = policy({ agent: A, subAgents: [B], maxDepth: 2 })
    const pb = policy({ agent: B, subAgents: [C], maxDepth: 2 })
    const pc = policy({ agent: C, maxDepth: 2 })
    const hop1 = grantOf(input({ policy: pa }))
    const hop2 = grantOf(input({ policy: pb, subject: tokenFrom(hop1, A, 'jti-1'), chainPolicies: [pa] }))
    expect(hop2.actors).toEqual([B, A])
    expect(codeOf(input({ policy: pc, subject: tokenFrom(hop2, B, 'jti-2'), chainPolicies: [pb, pa] }))).toBe('invalid_request')
  })
})
