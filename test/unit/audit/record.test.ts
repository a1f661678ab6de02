/**
 * The delegation log's record format (src/audit/record.ts): RFC 8785
 * canonical JSON, the hash chain anyone can recompute with `sha256sum`, and
 * the query columns `mandate audit verify` derives back from a stored record.
 *
 * Canonical form and hashes are checked against independent implementations
 * written here (sorted keys, JSON.stringify for strings and numbers;
 * node:crypto over `prev || "\n" || record`), not against the module itself.
 */
import { createHash, randomUUID } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { AgentId, Jti, Subject } from '../../../src/core/claims.js'
import type { AuditEvent } from '../../../src/audit/port.js'
import { canonicalJson, chainHash, columnsFromRecord, encodeRecord, GENESIS_HASH, RECORD_VERSION, type RecordColumns } from '../../../src/audit/record.js'
import canonicalize from 'canonicalize'
import type { Revocation, RevocationTarget } from '../../../src/revocation/port.js'

const T0 = 1_800_000_000
const CHAIN = '0b6f7c1e-2d4a-4e8b-9c3f-5a1d2e3f4a5b'
const INSTANCE = 'broker-1'
const POLICY_HASH = 'ab'.repeat(32)
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'

const A = (s: string) => s as AgentId
const S = (s: string) => s as Subject
const J = (s: string) => s as Jti
const position = (seq = 1, prevHash = GENESIS_HASH) => ({ chainId: CHAIN, seq, instance: INSTANCE, prevHash })

/** RFC 8785 for the JSON the log writes (strings, safe integers, arrays, objects), written independently. */
function jcs(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(jcs).join(',')}]`
  const o = value as Record<string, unknown>
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort() // UTF-16 code units, as RFC 8785 §3.2.3 orders keys
  return `{${keys.map((k) => `${JSON.stringify(k)}:${jcs(o[k])}`).join(',')}}`
}

/** SHA-256 over `prev`, a newline and `record`, lowercase hex, as `sha256sum` would print it. */
const sha256 = (prev: string, record: string) =>
  createHash('sha256')
    .update(Buffer.from(`${prev}\n${record}`, 'utf8'))
    .digest('hex')

/** Every key of an object at any depth, in order of appearance. */
function keysOf(value: unknown, out: string[][] = []): string[][] {
  if (Array.isArray(value)) value.forEach((v) => keysOf(v, out))
  else if (value !== null && typeof value === 'object') {
    out.push(Object.keys(value))
    Object.values(value).forEach((v) => keysOf(v, out))
  }
  return out
}

function revocation(target: RevocationTarget, over: Partial<Revocation> = {}): Revocation {
  const token = target.kind === 'jti' || target.kind === 'chain'
  return {
    id: '7d3c2b1a-0f9e-4d8c-b7a6-958473625140',
    target,
    reason: 'prompt injection seen in ticket 4711',
    createdBy: 'ops-key',
    createdAt: T0 - 60,
    expiresAt: token ? T0 + 3600 : undefined,
    liftedAt: undefined,
    liftedBy: undefined,
    ...over,
  }
}

interface Case {
  readonly name: string
  readonly event: AuditEvent
  /** The record's fields beyond v/chain/seq/instance/event/at. */
  readonly body: Record<string, unknown>
  readonly columns: Pick<RecordColumns, 'agent' | 'actors' | 'sub' | 'subIss' | 'jti' | 'parentJti' | 'rootJti'>
}

const none = { agent: null, actors: [], sub: null, subIss: null, jti: null, parentJti: null, rootJti: null }

const TARGETS: [RevocationTarget, Record<string, unknown>, Case['columns']][] = [
  [
    { kind: 'jti', jti: J('tok-c') },
    { kind: 'jti', jti: 'tok-c' },
    { ...none, jti: 'tok-c' },
  ],
  [
    { kind: 'chain', jti: J('tok-a') },
    { kind: 'chain', jti: 'tok-a' },
    { ...none, jti: 'tok-a' },
  ],
  [
    { kind: 'agent', agent: A('agent-b') },
    { kind: 'agent', agent: 'agent-b' },
    { ...none, agent: 'agent-b', actors: ['agent-b'] },
  ],
  [
    { kind: 'sub', sub: S('alice'), iss: 'https://idp.example' },
    { kind: 'sub', sub: 'alice', iss: 'https://idp.example' },
    { ...none, sub: 'alice', subIss: 'https://idp.example' },
  ],
  [
    { kind: 'agent_sub', agent: A('agent-b'), sub: S('alice'), iss: 'https://idp.example' },
    { kind: 'agent_sub', agent: 'agent-b', sub: 'alice', iss: 'https://idp.example' },
    { ...none, agent: 'agent-b', actors: ['agent-b'], sub: 'alice', subIss: 'https://idp.example' },
  ],
  // A kill recorded before kills named an issuer: any issuer, and no `iss` in the record.
  [
    { kind: 'sub', sub: S('alice'), iss: null },
    { kind: 'sub', sub: 'alice' },
    { ...none, sub: 'alice' },
  ],
  [
    { kind: 'agent_sub', agent: A('agent-b'), sub: S('alice'), iss: null },
    { kind: 'agent_sub', agent: 'agent-b', sub: 'alice' },
    { ...none, agent: 'agent-b', actors: ['agent-b'], sub: 'alice' },
  ],
]

const CASES: Case[] = [
  {
    name: 'token.issued (second sub-agent hop)',
    event: {
      type: 'token.issued',
      at: T0,
      agent: A('agent-c'),
      sub: S('alice'),
      subIssuer: 'https://idp.example',
      actors: [A('agent-c'), A('agent-b'), A('agent-a')],
      jti: J('tok-c'),
      parentJti: J('tok-b'),
      rootJti: J('tok-a'),
      audience: 'https://api.example',
      scopes: ['read', 'write'],
      expiresAt: T0 + 120,
      policyHash: POLICY_HASH,
      clientAddress: '203.0.113.7',
      traceId: TRACE,
    },
    body: {
      client_address: '203.0.113.7',
      trace_id: TRACE,
      agent: 'agent-c',
      sub: 'alice',
      sub_iss: 'https://idp.example',
      actors: ['agent-c', 'agent-b', 'agent-a'],
      jti: 'tok-c',
      parent_jti: 'tok-b',
      root_jti: 'tok-a',
      aud: 'https://api.example',
      scopes: ['read', 'write'],
      exp: T0 + 120,
      lifetime: 120,
      policy_hash: POLICY_HASH,
    },
    columns: {
      agent: 'agent-c',
      actors: ['agent-c', 'agent-b', 'agent-a'],
      sub: 'alice',
      subIss: 'https://idp.example',
      jti: 'tok-c',
      parentJti: 'tok-b',
      rootJti: 'tok-a',
    },
  },
  {
    name: 'token.issued (root token, no parent, no request context)',
    event: {
      type: 'token.issued',
      at: T0,
      agent: A('agent-a'),
      sub: S('alice'),
      subIssuer: 'https://idp.example',
      actors: [A('agent-a')],
      jti: J('tok-a'),
      parentJti: undefined,
      rootJti: J('tok-a'),
      audience: 'https://api.example',
      scopes: ['read'],
      expiresAt: T0 + 300,
      policyHash: POLICY_HASH,
    },
    body: {
      agent: 'agent-a',
      sub: 'alice',
      sub_iss: 'https://idp.example',
      actors: ['agent-a'],
      jti: 'tok-a',
      root_jti: 'tok-a',
      aud: 'https://api.example',
      scopes: ['read'],
      exp: T0 + 300,
      lifetime: 300,
      policy_hash: POLICY_HASH,
    },
    columns: { agent: 'agent-a', actors: ['agent-a'], sub: 'alice', subIss: 'https://idp.example', jti: 'tok-a', parentJti: null, rootJti: 'tok-a' },
  },
  {
    name: 'token.denied (user known)',
    event: {
      type: 'token.denied',
      at: T0,
      agent: A('agent-a'),
      sub: S('alice'),
      subIssuer: 'https://idp.example',
      error: 'invalid_scope',
      reason: 'scope exceeds policy',
      clientAddress: '2001:db8::1',
      traceId: TRACE,
    },
    body: {
      client_address: '2001:db8::1',
      trace_id: TRACE,
      agent: 'agent-a',
      sub: 'alice',
      sub_iss: 'https://idp.example',
      error: 'invalid_scope',
      reason: 'scope exceeds policy',
    },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'], sub: 'alice', subIss: 'https://idp.example' },
  },
  {
    name: 'token.denied (user known, issuer not recorded: written before it was)',
    event: {
      type: 'token.denied',
      at: T0,
      agent: A('agent-a'),
      sub: S('alice'),
      error: 'invalid_scope',
      reason: 'scope exceeds policy',
      clientAddress: undefined,
      traceId: undefined,
    },
    body: { agent: 'agent-a', sub: 'alice', error: 'invalid_scope', reason: 'scope exceeds policy' },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'], sub: 'alice' },
  },
  {
    name: 'token.denied (user unknown)',
    event: {
      type: 'token.denied',
      at: T0,
      agent: A('agent-a'),
      sub: undefined,
      error: 'invalid_request',
      reason: 'subject token refused',
      clientAddress: undefined,
      traceId: undefined,
    },
    body: { agent: 'agent-a', error: 'invalid_request', reason: 'subject token refused' },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'] },
  },
  {
    name: 'token.withheld',
    event: { type: 'token.withheld', at: T0, agent: A('agent-c'), sub: S('alice'), subIssuer: 'https://idp.example', jti: J('tok-c'), reason: 'answered 503' },
    body: { agent: 'agent-c', sub: 'alice', sub_iss: 'https://idp.example', jti: 'tok-c', reason: 'answered 503' },
    columns: { ...none, agent: 'agent-c', actors: ['agent-c'], sub: 'alice', subIss: 'https://idp.example', jti: 'tok-c' },
  },
  {
    name: 'token.withheld (issuer not recorded: written before it was)',
    event: { type: 'token.withheld', at: T0, agent: A('agent-c'), sub: S('alice'), jti: J('tok-c'), reason: 'answered 503' },
    body: { agent: 'agent-c', sub: 'alice', jti: 'tok-c', reason: 'answered 503' },
    columns: { ...none, agent: 'agent-c', actors: ['agent-c'], sub: 'alice', jti: 'tok-c' },
  },
  ...TARGETS.flatMap(([target, fields, columns]): Case[] => {
    const kill = target.kind === 'agent' || target.kind === 'sub' || target.kind === 'agent_sub'
    const created = revocation(target)
    const createdBody = {
      id: created.id,
      ...fields,
      reason: created.reason,
      created_by: 'ops-key',
      created_at: T0 - 60,
      ...(kill ? {} : { expires_at: T0 + 3600 }),
    }
    const cases: Case[] = [
      {
        name: `revocation.created (${target.kind})`,
        event: { type: 'revocation.created', at: T0, by: 'ops-key', revocation: created, clientAddress: '192.0.2.1', traceId: TRACE },
        body: { client_address: '192.0.2.1', trace_id: TRACE, by: 'ops-key', revocation: createdBody },
        columns,
      },
    ]
    if (kill) {
      const lifted = { ...created, liftedAt: T0 + 5, liftedBy: 'lead-key' }
      cases.push({
        name: `revocation.lifted (${target.kind})`,
        event: { type: 'revocation.lifted', at: T0 + 5, by: 'lead-key', revocation: lifted, clientAddress: undefined, traceId: undefined },
        body: { by: 'lead-key', revocation: { ...createdBody, lifted_at: T0 + 5, lifted_by: 'lead-key' } },
        columns,
      })
    }
    return cases
  }),
  {
    name: 'policy.loaded',
    event: { type: 'policy.loaded', at: T0, agent: A('agent-a'), source: 'agent-a.yaml', sha256: POLICY_HASH },
    body: { agent: 'agent-a', source: 'agent-a.yaml', sha256: POLICY_HASH },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'] },
  },
  {
    name: 'policy.unloaded',
    event: { type: 'policy.unloaded', at: T0, agent: A('agent-a'), source: 'agent-a.yaml', sha256: POLICY_HASH },
    body: { agent: 'agent-a', source: 'agent-a.yaml', sha256: POLICY_HASH },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'] },
  },
  {
    name: 'agent.attested',
    event: { type: 'agent.attested', at: T0, agent: A('agent-a'), by: 'owner-key', nextDue: T0 + 90 * 86_400, note: undefined },
    body: { agent: 'agent-a', by: 'owner-key', next_due: T0 + 90 * 86_400 },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'] },
  },
  {
    name: 'agent.lifecycle',
    event: { type: 'agent.lifecycle', at: T0, agent: A('agent-a'), transition: 'dormant', suspended: false, detail: 'no token in 90 days' },
    body: { agent: 'agent-a', transition: 'dormant', suspended: false, detail: 'no token in 90 days' },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'] },
  },
  {
    name: 'agent.anomaly',
    event: { type: 'agent.anomaly', at: T0, agent: A('agent-a'), rule: 'new-audience', action: 'alert', detail: 'https://new.example' },
    body: { agent: 'agent-a', rule: 'new-audience', action: 'alert', detail: 'https://new.example' },
    columns: { ...none, agent: 'agent-a', actors: ['agent-a'] },
  },
  {
    name: 'key.rotated (first key)',
    event: { type: 'key.rotated', at: T0, kid: 'kid-1', previousKid: undefined },
    body: { kid: 'kid-1', previous_kid: null },
    columns: none,
  },
  {
    name: 'key.rotated',
    event: { type: 'key.rotated', at: T0, kid: 'kid-2', previousKid: 'kid-1' },
    body: { kid: 'kid-2', previous_kid: 'kid-1' },
    columns: none,
  },
  ...(['admin.revocations.read', 'admin.audit.read', 'admin.feed.opened'] as const).map((type): Case => ({
    name: type,
    event: { type, at: T0, by: 'auditor-key', request: '/admin/audit?agent=agent-b&limit=10', clientAddress: '198.51.100.2', traceId: TRACE },
    body: { client_address: '198.51.100.2', trace_id: TRACE, by: 'auditor-key', request: '/admin/audit?agent=agent-b&limit=10' },
    columns: none,
  })),
]

describe('audit record: canonical form (RFC 8785)', () => {
  it('pins one record byte for byte: sorted keys, no whitespace, snake_case, lifetime derived', () => {
    const r = encodeRecord(CASES[0]!.event, position(7, 'cd'.repeat(32)))
    expect(r.record).toBe(
      '{"actors":["agent-c","agent-b","agent-a"],"agent":"agent-c","at":1800000000,"aud":"https://api.example",' +
        `"chain":"${CHAIN}","client_address":"203.0.113.7","event":"token.issued","exp":1800000120,` +
        `"instance":"broker-1","jti":"tok-c","lifetime":120,"parent_jti":"tok-b","policy_hash":"${POLICY_HASH}",` +
        `"root_jti":"tok-a","scopes":["read","write"],"seq":7,"sub":"alice","sub_iss":"https://idp.example",` +
        `"trace_id":"${TRACE}","v":1}`,
    )
    expect(r.prevHash).toBe('cd'.repeat(32))
    expect(r.hash).toBe(sha256('cd'.repeat(32), r.record))
  })

  it.each(CASES.map((c) => [c.name, c] as const))('%s: exactly the event’s fields, canonical, with its columns', (_, c) => {
    const r = encodeRecord(c.event, position(3, 'ef'.repeat(32)))
    const doc = JSON.parse(r.record) as unknown
    expect(doc).toStrictEqual({ v: RECORD_VERSION, chain: CHAIN, seq: 3, instance: INSTANCE, event: c.event.type, at: c.event.at, ...c.body })
    // Canonical: the independent serializer agrees, every object's keys are sorted, no whitespace outside strings.
    expect(r.record).toBe(jcs(doc))
    for (const keys of keysOf(doc)) expect(keys).toEqual([...keys].sort())
    expect(r.record.replace(/"(?:[^"\\]|\\.)*"/g, '""')).not.toMatch(/\s/)
    expect(r).toMatchObject({ chainId: CHAIN, seq: 3, at: c.event.at, event: c.event.type, instance: INSTANCE, ...c.columns })
  })

  it('one spelling per value: unicode as UTF-8, only the required escapes, integers without exponent or fraction', () => {
    const r = encodeRecord(
      {
        type: 'token.denied',
        at: T0,
        agent: A('agent-ü'),
        sub: S('zoë@example.com'),
        error: 'invalid_request',
        reason: 'tab\there "quoted" \\ ✓ \u0001 😀',
        clientAddress: undefined,
        traceId: undefined,
      },
      position(),
    )
    expect(r.record).toContain('"agent":"agent-ü"')
    expect(r.record).toContain('"reason":"tab\\there \\"quoted\\" \\\\ ✓ \\u0001 😀"')
    expect(r.record).toContain('"at":1800000000,')
    expect(r.hash).toBe(sha256(GENESIS_HASH, r.record))
  })

  it('never records anything the event type does not name: no token, no secret', () => {
    const secrets = {
      access_token: 'eyJhbGciOiJFUzI1NiJ9.secret-access.sig',
      subjectToken: 'eyJhbGciOiJFUzI1NiJ9.secret-subject.sig',
      clientSecret: 'demo-secret-value',
      authorization: 'Basic ZGVtby1hZ2VudDpkZW1vLXNlY3JldA==',
    }
    for (const c of CASES) {
      const event = { ...c.event, ...secrets } as AuditEvent
      if ('revocation' in event) (event as { revocation: object }).revocation = { ...event.revocation, ...secrets }
      const record = encodeRecord(event, position()).record
      for (const s of Object.values(secrets)) expect(record, c.name).not.toContain(s)
      for (const k of Object.keys(secrets)) expect(record, c.name).not.toContain(k)
      // The same record as without them.
      expect(record, c.name).toBe(encodeRecord(c.event, position()).record)
    }
  })
})

describe('audit record: the hash chain', () => {
  it('GENESIS_HASH is 64 zeros and chainHash is SHA-256(prev || "\\n" || record), lowercase hex', () => {
    expect(GENESIS_HASH).toBe('0'.repeat(64))
    expect(chainHash(GENESIS_HASH, '')).toBe(
      createHash('sha256')
        .update(`${'0'.repeat(64)}\n`)
        .digest('hex'),
    )
    // Vectors from coreutils: printf '%064d\n' 0 | sha256sum;  printf '%064d\n{"x":"ü"}' 0 | sha256sum
    expect(chainHash(GENESIS_HASH, '')).toBe('827d096d92f3deeaa0e8070d79f45beb176768e57a958a1cd325f5f4b754b048')
    expect(chainHash(GENESIS_HASH, '{"x":"ü"}')).toBe('cde747c400c0a255db10b224c445e982ca239b93b79bd3a3cbd58124506ca7e6')
    expect(chainHash('a'.repeat(64), '{"x":"ü"}')).toBe(sha256('a'.repeat(64), '{"x":"ü"}'))
    expect(chainHash('a'.repeat(64), '{"x":"ü"}')).toMatch(/^[0-9a-f]{64}$/)
  })

  it('a chain of records is recomputable record by record from genesis', () => {
    let prev = GENESIS_HASH
    CASES.forEach((c, i) => {
      const r = encodeRecord(c.event, position(i + 1, prev))
      expect(r.prevHash).toBe(prev)
      expect(r.hash).toBe(sha256(prev, r.record))
      expect(r.hash).toBe(chainHash(prev, r.record))
      prev = r.hash
    })
  })

  it('the record binds its chain, position and instance: moving it changes it', () => {
    const e = CASES[0]!.event
    const base = encodeRecord(e, position(5, 'ab'.repeat(32)))
    const moves = [
      encodeRecord(e, { ...position(6, 'ab'.repeat(32)) }),
      encodeRecord(e, { ...position(5, 'ab'.repeat(32)), chainId: randomUUID() }),
      encodeRecord(e, { ...position(5, 'ab'.repeat(32)), instance: 'broker-2' }),
      encodeRecord(e, position(5, 'ac'.repeat(32))),
    ]
    for (const m of moves) expect(m.hash).not.toBe(base.hash)
    for (const m of moves.slice(0, 3)) expect(m.record).not.toBe(base.record)
  })

  it('property: any single-character change of the record or of the previous hash changes the hash', () => {
    const record = encodeRecord(CASES[0]!.event, position(9, 'cd'.repeat(32))).record
    const prev = 'cd'.repeat(32)
    const hash = chainHash(prev, record)
    fc.assert(
      fc.property(fc.nat({ max: record.length - 1 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }), (i, ch) => {
        fc.pre(record[i] !== ch)
        const changed = record.slice(0, i) + ch + record.slice(i + 1)
        expect(chainHash(prev, changed)).not.toBe(hash)
      }),
      { numRuns: 500 },
    )
    fc.assert(
      fc.property(fc.nat({ max: 63 }), fc.constantFrom(...Array.from('0123456789abcdef')), (i, ch) => {
        fc.pre(prev[i] !== ch)
        expect(chainHash(prev.slice(0, i) + ch + prev.slice(i + 1), record)).not.toBe(hash)
      }),
      { numRuns: 200 },
    )
  })
})

/** Arbitrary events whose strings are anything JSON can carry (non-empty where the broker never writes empty). */
const str = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 })
const epoch = fc.integer({ min: 0, max: 253_402_300_799 })
const arbIssued: fc.Arbitrary<AuditEvent> = fc
  .record({
    at: epoch,
    agent: str,
    sub: str,
    subIssuer: str,
    older: fc.array(str, { maxLength: 4 }),
    jti: str,
    parentJti: fc.option(str, { nil: undefined }),
    rootJti: str,
    audience: str,
    scopes: fc.array(str, { maxLength: 5 }),
    life: fc.integer({ min: 1, max: 86_400 }),
    policyHash: fc.stringMatching(/^[0-9a-f]{64}$/),
    clientAddress: fc.option(str, { nil: undefined }),
    traceId: fc.option(fc.stringMatching(/^[0-9a-f]{32}$/), { nil: undefined }),
  })
  .map((r): AuditEvent => ({
    type: 'token.issued',
    at: r.at,
    agent: A(r.agent),
    sub: S(r.sub),
    subIssuer: r.subIssuer,
    actors: [A(r.agent), ...r.older.map(A)],
    jti: J(r.jti),
    parentJti: r.parentJti === undefined ? undefined : J(r.parentJti),
    rootJti: J(r.rootJti),
    audience: r.audience,
    scopes: r.scopes,
    expiresAt: r.at + r.life,
    policyHash: r.policyHash,
    clientAddress: r.clientAddress,
    traceId: r.traceId,
  }))
const arbTarget: fc.Arbitrary<RevocationTarget> = fc.oneof(
  str.map((j): RevocationTarget => ({ kind: 'jti', jti: J(j) })),
  str.map((j): RevocationTarget => ({ kind: 'chain', jti: J(j) })),
  str.map((a): RevocationTarget => ({ kind: 'agent', agent: A(a) })),
  fc.tuple(str, fc.option(str, { nil: null })).map(([s, iss]): RevocationTarget => ({ kind: 'sub', sub: S(s), iss })),
  fc.tuple(str, str, fc.option(str, { nil: null })).map(([a, s, iss]): RevocationTarget => ({ kind: 'agent_sub', agent: A(a), sub: S(s), iss })),
)
const arbEvent: fc.Arbitrary<AuditEvent> = fc.oneof(
  arbIssued,
  fc
    .record({ at: epoch, agent: str, sub: fc.option(str, { nil: undefined }), subIssuer: fc.option(str, { nil: undefined }), error: str, reason: str })
    .map((r): AuditEvent => ({
      type: 'token.denied',
      ...r,
      agent: A(r.agent),
      sub: r.sub === undefined ? undefined : S(r.sub),
      clientAddress: undefined,
      traceId: undefined,
    })),
  fc
    .record({ at: epoch, agent: str, sub: str, subIssuer: fc.option(str, { nil: undefined }), jti: str, reason: str })
    .map((r): AuditEvent => ({ type: 'token.withheld', ...r, agent: A(r.agent), sub: S(r.sub), jti: J(r.jti) })),
  fc.record({ at: epoch, by: str, target: arbTarget, reason: str, lifted: fc.boolean() }).map((r): AuditEvent => ({
    type: r.lifted ? 'revocation.lifted' : 'revocation.created',
    at: r.at,
    by: r.by,
    revocation: revocation(r.target, { reason: r.reason, createdAt: r.at, ...(r.lifted ? { liftedAt: r.at, liftedBy: r.by } : {}) }),
  })),
  fc
    .record({ at: epoch, agent: str, source: str, sha256: fc.stringMatching(/^[0-9a-f]{64}$/), unloaded: fc.boolean() })
    .map((r): AuditEvent => ({ type: r.unloaded ? 'policy.unloaded' : 'policy.loaded', at: r.at, agent: A(r.agent), source: r.source, sha256: r.sha256 })),
  fc.record({ at: epoch, kid: str, previousKid: fc.option(str, { nil: undefined }) }).map((r): AuditEvent => ({ type: 'key.rotated', ...r })),
  fc
    .record({ at: epoch, by: str, request: str, type: fc.constantFrom('admin.revocations.read', 'admin.audit.read', 'admin.feed.opened' as const) })
    .map((r): AuditEvent => ({ ...r, clientAddress: undefined, traceId: undefined })),
)

/** The same object with its own keys (recursively) inserted in another order. */
function reorder<T>(value: T, order: (keys: string[]) => string[]): T {
  if (Array.isArray(value)) return value.map((v: unknown) => reorder(v, order)) as T
  if (value === null || typeof value !== 'object') return value
  const o = value as Record<string, unknown>
  return Object.fromEntries(order(Object.keys(o)).map((k) => [k, reorder(o[k], order)])) as T
}

describe('audit record: columnsFromRecord', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s: round-trips the columns encodeRecord stored', (_, c) => {
    const r = encodeRecord(c.event, position(42, 'ef'.repeat(32)))
    const parsed = columnsFromRecord(r.record)
    expect(parsed).toMatchObject({ ok: true })
    if (!parsed.ok) return
    const { record: _r, prevHash: _p, hash: _h, ...columns } = r
    expect(parsed.columns).toStrictEqual(columns)
    expect(parsed.columns).toStrictEqual({ chainId: CHAIN, seq: 42, at: c.event.at, event: c.event.type, instance: INSTANCE, ...c.columns })
    expect(parsed.doc).toStrictEqual(JSON.parse(r.record))
  })

  it('property: any event round-trips, and key order in the event never changes the record', () => {
    fc.assert(
      fc.property(arbEvent, fc.nat({ max: 2 ** 31 }), fc.uuid({ version: 4 }), (event, seq, chainId) => {
        const pos = { chainId, seq: seq + 1, instance: INSTANCE, prevHash: GENESIS_HASH }
        const r = encodeRecord(event, pos)
        expect(r.record).toBe(jcs(JSON.parse(r.record)))
        const parsed = columnsFromRecord(r.record)
        if (!parsed.ok) throw new Error(parsed.reason)
        const { record: _r, prevHash: _p, hash: _h, ...columns } = r
        expect(parsed.columns).toStrictEqual(columns)
        for (const order of [(k: string[]) => [...k].reverse(), (k: string[]) => [...k].sort(), (k: string[]) => [...k.slice(1), ...k.slice(0, 1)]]) {
          const again = encodeRecord(reorder(event, order), pos)
          expect(again.record).toBe(r.record)
          expect(again.hash).toBe(r.hash)
        }
      }),
      { numRuns: 400 },
    )
  })

  it('property: any other serialization of a record (whitespace, key order) is refused as not canonical', () => {
    fc.assert(
      fc.property(
        arbEvent,
        fc.constantFrom<(doc: unknown) => string>(
          (d) => JSON.stringify(d, null, 1),
          (d) => JSON.stringify(reorder(d, (k) => [...k].sort().reverse())),
          (d) => ` ${jcs(d)}`,
          (d) => `${jcs(d)}\n`,
          (d) => jcs(d).replace(/:/, ': '),
        ),
        (event, respell) => {
          const record = encodeRecord(event, position()).record
          const other = respell(JSON.parse(record))
          expect(other).not.toBe(record)
          expect(columnsFromRecord(other)).toStrictEqual({ ok: false, reason: 'record is not in canonical form (RFC 8785)' })
        },
      ),
      { numRuns: 200 },
    )
  })

  it('refuses what this version did not write: not JSON, not an object, not canonical, unknown version or event, missing fields', () => {
    const doc = JSON.parse(encodeRecord(CASES[0]!.event, position()).record) as Record<string, unknown>
    const without = (k: string) => jcs({ ...doc, [k]: undefined })
    const refused: [string, string, RegExp][] = [
      ['empty', '', /not JSON/],
      ['truncated', encodeRecord(CASES[0]!.event, position()).record.slice(0, -1), /not JSON/],
      ['array', '[1,2]', /not a JSON object/],
      ['null', 'null', /not a JSON object/],
      ['string', '"x"', /not a JSON object/],
      ['unsorted keys', JSON.stringify({ v: 1, ...doc }), /canonical/],
      ['whitespace', JSON.stringify(doc, null, 2), /canonical/],
      ['escaped letter', jcs(doc).replace('"agent-c"', '"agent\\u002dc"'), /canonical/],
      ['number spelled 1.0', jcs({ ...doc, seq: 1 }).replace('"seq":1', '"seq":1.0'), /canonical/],
      ['number with exponent', jcs({ ...doc, at: 1000 }).replace('"at":1000', '"at":1e3'), /canonical/],
      ['version 2', jcs({ ...doc, v: 2 }), /unknown record version 2/],
      ['version "1"', jcs({ ...doc, v: '1' }), /unknown record version "1"/],
      ['no version', without('v'), /unknown record version/],
      ['unknown event', jcs({ ...doc, event: 'token.exploded' }), /unknown event type "token.exploded"/],
      ['event of another case', jcs({ ...doc, event: 'Token.Issued' }), /unknown event type/],
      ['no chain', without('chain'), /lacks/],
      ['no seq', without('seq'), /lacks/],
      ['fractional seq', jcs({ ...doc, seq: 1.5 }), /lacks/],
      ['seq as string', jcs({ ...doc, seq: '1' }), /lacks/],
      ['no instance', without('instance'), /lacks/],
      ['no event', without('event'), /lacks/],
      ['no at', without('at'), /lacks/],
      ['at as string', jcs({ ...doc, at: '2027-01-15T08:00:00Z' }), /lacks/],
    ]
    for (const [what, record, reason] of refused) {
      const parsed = columnsFromRecord(record)
      expect(parsed.ok, what).toBe(false)
      if (!parsed.ok) expect(parsed.reason, what).toMatch(reason)
    }
  })
})

describe('audit record: fields that are optional or empty', () => {
  // Both request-context fields are optional and independent (RequestContext in src/audit/port.ts).
  it('keeps trace_id when the event carries a traceId but no clientAddress', () => {
    const event = { type: 'token.denied', at: T0, agent: A('agent-a'), sub: S('alice'), error: 'invalid_scope', reason: 'r', traceId: TRACE } as AuditEvent
    expect(JSON.parse(encodeRecord(event, position()).record)).toMatchObject({ trace_id: TRACE })
  })

  // The agent's running copy is `agent_instance`: `instance` is the writing broker's, and a record without one
  // encodes byte for byte as before (the pinned record above has none), so old chains verify unchanged.
  it('records the agent’s instance as agent_instance beside the broker’s own instance, and an instance kill’s target', () => {
    const pod = 'spiffe://example.org/ns/prod/pod-a'
    const issued = JSON.parse(encodeRecord({ ...CASES[0]!.event, instance: pod } as AuditEvent, position()).record) as Record<string, unknown>
    expect(issued).toMatchObject({ instance: INSTANCE, agent_instance: pod })
    const denied = { type: 'token.denied', at: T0, agent: A('agent-a'), sub: undefined, instance: pod, error: 'unauthorized_client', reason: 'r' }
    expect(JSON.parse(encodeRecord(denied as AuditEvent, position()).record)).toMatchObject({ instance: INSTANCE, agent_instance: pod })
    const kill = encodeRecord(
      { type: 'revocation.created', at: T0, by: 'ops-key', revocation: revocation({ kind: 'instance', agent: A('agent-a'), instance: pod }) },
      position(),
    )
    expect((JSON.parse(kill.record) as { revocation: unknown }).revocation).toMatchObject({ kind: 'instance', agent: 'agent-a', instance: pod })
    const parsed = columnsFromRecord(kill.record)
    expect(parsed.ok && parsed.columns.agent).toBe('agent-a')
  })

  // An empty identifier is stored as '' and must come back as '' (not a null column), or verify would flag it.
  it('round-trips a revocation whose target is an empty string', () => {
    const r = encodeRecord({ type: 'revocation.created', at: T0, by: 'ops-key', revocation: revocation({ kind: 'agent', agent: A('') }) }, position())
    const parsed = columnsFromRecord(r.record)
    expect(parsed.ok && parsed.columns.agent).toBe('')
  })
})

describe('canonicalJson (the writer’s RFC 8785 serializer)', () => {
  // Records hold strings, safe integers, booleans, null, arrays and plain objects.
  const jsonValue = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.string({ unit: 'grapheme' }),
      fc.string(),
      fc.maxSafeInteger(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie('value'), { maxLength: 5 }),
      fc.dictionary(fc.string({ unit: 'grapheme' }), tie('value'), { maxKeys: 6 }),
    ),
  })).value

  it('matches the canonicalize package (the RFC’s reference implementation) on any such value', () => {
    fc.assert(
      fc.property(jsonValue, (v) => {
        expect(canonicalJson(v)).toBe(canonicalize(v))
      }),
      { numRuns: 500 },
    )
  })

  it('leaves out undefined members, as canonicalize does', () => {
    expect(canonicalJson({ b: 1, a: undefined, c: [1, 'x'] })).toBe('{"b":1,"c":[1,"x"]}')
  })

  it('stores a lone surrogate as U+FFFD (as PostgreSQL would), so the stored record stays canonical', () => {
    const out = canonicalJson({ sub: 'a\ud800b' })
    expect(out).toBe('{"sub":"a\ufffdb"}')
    expect(canonicalize(JSON.parse(out))).toBe(out)
  })

  it('refuses what a record never holds: fractions, unsafe integers, functions', () => {
    expect(() => canonicalJson({ at: 1.5 })).toThrow(TypeError)
    expect(() => canonicalJson({ at: 2 ** 60 })).toThrow(TypeError)
    expect(() => canonicalJson({ f: () => 1 })).toThrow(TypeError)
  })
})
