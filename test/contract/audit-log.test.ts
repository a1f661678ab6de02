/**
 * The `AuditLog` port (src/audit/port.ts), on every adapter: memory, and the
 * SQL writer on PGlite and on PostgreSQL. What the port promises:
 * - `append` resolves only once the record is durable: whatever resolved is
 *   held by the store;
 * - the receipt's `seq` is the record's position in its writer's chain:
 *   1, 2, 3... in call order, however many appends are in flight at once
 *   (group commit answers every caller with its own position);
 * - otherwise `append` rejects with `AuditUnavailable`, whose `outcome`
 *   says whether it may still be written; a record refused for its own
 *   values is its caller's failure alone;
 * - where the store keeps a hash chain, record 1 links to the genesis hash
 *   and each record to its predecessor (src/audit/record.ts), and the
 *   chain verifies.
 */
import { randomUUID } from 'node:crypto'
import { beforeEach, expect, it } from 'vitest'
import { AuditUnavailable, type AuditEvent, type AuditEventType, type AuditReceipt } from '../../src/audit/port.js'
import { chainHash, GENESIS_HASH } from '../../src/audit/record.js'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import type { Revocation } from '../../src/revocation/port.js'
import { auditLogAdapters, type StoredAuditRecord } from './adapters.js'
import { describeEachAdapter } from './harness.js'

const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z, epoch seconds
const A = (s: string) => s as AgentId
const S = (s: string) => s as Subject
const J = (s: string) => s as Jti

function issued(jti: string, at = T0, over: Partial<Extract<AuditEvent, { type: 'token.issued' }>> = {}): AuditEvent {
  return {
    type: 'token.issued',
    at,
    agent: A('agent-a'),
    sub: S('alice'),
    subIssuer: 'https://idp.test',
    actors: [A('agent-a')],
    jti: J(jti),
    parentJti: undefined,
    rootJti: J(jti),
    audience: 'https://api.test',
    scopes: ['read'],
    expiresAt: at + 300,
    policyHash: 'ab'.repeat(32),
    clientAddress: '203.0.113.7',
    traceId: '0af7651916cd43dd8448eb211c80319c',
    ...over,
  }
}

const denied = (at = T0): AuditEvent => ({
  type: 'token.denied',
  at,
  agent: A('agent-b'),
  sub: undefined,
  error: 'invalid_scope',
  reason: 'scope exceeds policy',
})

function revocation(at: number): Revocation {
  return {
    id: randomUUID(),
    target: { kind: 'agent', agent: A('agent-c') },
    reason: 'incident',
    createdBy: 'ops',
    createdAt: at,
    expiresAt: undefined,
    liftedAt: undefined,
    liftedBy: undefined,
  }
}

/** One event of every type the port defines, in a fixed order. */
function everyType(): AuditEvent[] {
  const kill = revocation(T0 + 3)
  const events: AuditEvent[] = [
    issued('every-1', T0 + 1, { parentJti: J('every-0'), rootJti: J('every-0'), actors: [A('agent-a'), A('agent-z')] }),
    { type: 'token.denied', at: T0 + 2, agent: A('agent-b'), sub: S('bob'), subIssuer: 'https://idp.test', error: 'invalid_request', reason: 'revoked' },
    { type: 'token.withheld', at: T0 + 2, agent: A('agent-a'), sub: S('alice'), subIssuer: 'https://idp.test', jti: J('every-2'), reason: 'answered 503' },
    { type: 'revocation.created', at: T0 + 3, by: 'ops', revocation: kill },
    { type: 'revocation.lifted', at: T0 + 4, by: 'lead', revocation: { ...kill, liftedAt: T0 + 4, liftedBy: 'lead' }, clientAddress: '2001:db8::1' },
    { type: 'policy.loaded', at: T0 + 5, agent: A('agent-c'), source: 'agent-c.yaml', sha256: 'cd'.repeat(32) },
    { type: 'policy.unloaded', at: T0 + 6, agent: A('agent-c'), source: 'agent-c.yaml', sha256: 'cd'.repeat(32) },
    { type: 'key.rotated', at: T0 + 7, kid: 'k2', previousKid: 'k1' },
    { type: 'key.rotated', at: T0 + 7, kid: 'k1', previousKid: undefined },
    { type: 'admin.revocations.read', at: T0 + 8, by: 'auditor', request: '/admin/revocations?limit=10' },
    { type: 'admin.audit.read', at: T0 + 9, by: 'auditor', request: '/admin/audit?agent=agent-a' },
    { type: 'admin.feed.opened', at: T0 + 10, by: 'verifier', request: '/revocations/feed' },
    { type: 'admin.policy.explained', at: T0 + 11, by: 'auditor', request: '/admin/policy/explain' },
    { type: 'agent.attested', at: T0 + 12, agent: A('agent-a'), by: 'owner-key', nextDue: T0 + 90 * 86_400, note: 'still needed' },
    { type: 'agent.lifecycle', at: T0 + 13, agent: A('agent-b'), transition: 'attestation_overdue', suspended: true, detail: 'attestation overdue' },
    {
      type: 'agent.anomaly',
      at: T0 + 14,
      agent: A('agent-b'),
      rule: 'denial-burst',
      action: 'quarantine',
      detail: '20 denials in 60 s',
      revocationId: 'rev-1',
    },
    {
      type: 'approval.requested',
      at: T0 + 15,
      agent: A('agent-a'),
      sub: S('alice'),
      subIssuer: 'https://idp.test',
      approval: 'apr_1',
      audience: 'https://payments.test',
      scopes: ['pay'],
      details: '[{"type":"payment_initiation","amount":"12.50"}]',
      bindingMessage: 'pay 12.50 EUR',
      approvers: 'user',
      purpose: 'pays invoices',
      expiresAt: T0 + 315,
    },
    {
      type: 'approval.decided',
      at: T0 + 16,
      agent: A('agent-a'),
      sub: S('alice'),
      subIssuer: 'https://idp.test',
      approval: 'apr_1',
      decision: 'approved',
      by: 'alice',
      via: 'link',
    },
    { type: 'approval.cancelled', at: T0 + 17, agent: A('agent-a'), sub: S('alice'), subIssuer: 'https://idp.test', approval: 'apr_2', reason: 'agent killed' },
  ]
  const covered = new Set(events.map((e) => e.type))
  const all: Record<AuditEventType, true> = {
    'token.issued': true,
    'token.denied': true,
    'token.withheld': true,
    'revocation.created': true,
    'revocation.lifted': true,
    'policy.loaded': true,
    'policy.unloaded': true,
    'key.rotated': true,
    'admin.revocations.read': true,
    'admin.audit.read': true,
    'admin.feed.opened': true,
    'admin.policy.explained': true,
    'agent.attested': true,
    'agent.lifecycle': true,
    'agent.anomaly': true,
    'approval.requested': true,
    'approval.decided': true,
    'approval.cancelled': true,
  }
  for (const type of Object.keys(all)) if (!covered.has(type as AuditEventType)) throw new Error(`everyType() lacks ${type}`)
  return events
}

const jtiOf = (e: AuditEvent): string | null => ('jti' in e ? e.jti : null)
const summary = (e: AuditEvent, seq: number) => ({ seq, type: e.type, at: e.at, jti: jtiOf(e) })
const summaries = (stored: readonly StoredAuditRecord[]) => stored.map(({ seq, type, at, jti }) => ({ seq, type, at, jti }))
const seqs = (n: number, from = 1) => Array.from({ length: n }, (_, i) => from + i)

describeEachAdapter('AuditLog', auditLogAdapters(), (adapter, store) => {
  beforeEach(async () => {
    await store().reset()
  })

  /** Where the store keeps a hash chain: every link holds, from the genesis hash. */
  function expectLinked(stored: readonly StoredAuditRecord[]): void {
    let prev = GENESIS_HASH
    for (const r of stored) {
      expect(r.chain, `seq ${r.seq}`).toBeDefined()
      expect(r.chain!.prevHash, `prev_hash of seq ${r.seq}`).toBe(prev)
      expect(r.chain!.hash, `hash of seq ${r.seq}`).toBe(chainHash(r.chain!.prevHash, r.chain!.record))
      prev = r.chain!.hash
    }
  }

  it('appends one after another: receipts 1..n in call order, each record held as soon as its append resolves', async () => {
    const { log, stored } = store().writer()
    const events = everyType()
    for (const [i, event] of events.entries()) {
      expect(await log.append(event)).toEqual({ seq: i + 1 })
      // Resolved means durable: the store holds it now, not eventually.
      expect((await stored()).length, `after append ${i + 1}`).toBe(i + 1)
    }
    expect(summaries(await stored())).toEqual(events.map((e, i) => summary(e, i + 1)))
  })

  it('concurrent appends (one group, or several): every caller gets its own position, 1..n in call order, held in that order', async () => {
    const { log, stored } = store().writer()
    const events = Array.from({ length: 200 }, (_, i) => (i % 3 === 2 ? denied(T0 + i) : issued(`c-${i}`, T0 + i)))
    const receipts = await Promise.all(events.map((e) => log.append(e)))
    expect(receipts).toEqual(seqs(200).map((seq) => ({ seq })))
    expect(summaries(await stored())).toEqual(events.map((e, i) => summary(e, i + 1)))
  })

  it('appends made across event-loop turns while earlier ones are in flight keep call order', async () => {
    const { log, stored } = store().writer()
    const pending: Promise<AuditReceipt>[] = []
    for (let i = 0; i < 40; i++) {
      pending.push(log.append(issued(`turn-${i}`, T0 + i)))
      if (i % 4 === 3) await new Promise((resolve) => setImmediate(resolve))
    }
    expect((await Promise.all(pending)).map((r) => r.seq)).toEqual(seqs(40))
    expect((await stored()).map((r) => r.jti)).toEqual(seqs(40, 0).map((i) => `turn-${i}`))
  })

  it('two writers on one store each number their own chain from 1', async () => {
    const one = store().writer()
    const two = store().writer()
    const [a, b] = await Promise.all([
      Promise.all(seqs(13).map((i) => one.log.append(issued(`one-${i}`)))),
      Promise.all(seqs(9).map((i) => two.log.append(issued(`two-${i}`)))),
    ])
    expect(a.map((r) => r.seq)).toEqual(seqs(13))
    expect(b.map((r) => r.seq)).toEqual(seqs(9))
    expect((await one.stored()).map((r) => r.jti)).toEqual(seqs(13).map((i) => `one-${i}`))
    expect((await two.stored()).map((r) => r.jti)).toEqual(seqs(9).map((i) => `two-${i}`))
  })

  // The edge refuses such values; these reach the writer directly, as a bug past the edge would.
  for (const [what, bad] of [
    ['a NUL in a text field (PostgreSQL text cannot hold one)', (i: number) => issued(`bad-${i}`, T0 + i, { sub: S('ali\u0000ce') })],
    ['a time that is not whole epoch seconds', (i: number) => issued(`bad-${i}`, T0 + i + 0.5)],
  ] as const) {
    it(`a record the store cannot hold (${what}) is its caller's failure alone: the rest of its group is held, in call order`, async () => {
      const { log, stored } = store().writer()
      const refusedAt = new Set([0, 17, 41])
      const events = seqs(42, 0).map((i) => (refusedAt.has(i) ? bad(i) : issued(`good-${i}`, T0 + i)))
      const outcomes = await Promise.allSettled(events.map((e) => log.append(e)))
      const held: AuditEvent[] = []
      for (const [i, o] of outcomes.entries()) {
        if (o.status === 'fulfilled') held.push(events[i]!)
        else {
          // Only a record of its own may fail; and it is then certainly not written.
          expect(refusedAt.has(i), `append ${i} (a good record) was refused: ${String(o.reason)}`).toBe(true)
          expect(o.reason, `append ${i}`).toBeInstanceOf(AuditUnavailable)
          expect((o.reason as AuditUnavailable).outcome).toBe('not_written')
        }
      }
      // The records held are numbered 1..k in call order, with no gap where a refused one was.
      const receipts = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.seq] : []))
      expect(receipts).toEqual(seqs(held.length))
      expect((await stored()).map((r) => r.jti)).toEqual(held.map(jtiOf))
      // And the writer goes on from there.
      expect(await log.append(denied())).toEqual({ seq: held.length + 1 })
      if (adapter.hashChain) expectLinked(await stored())
    })
  }

  if (!adapter.hashChain) return

  it('hash chain: record 1 links to the genesis hash, each later one to its predecessor; the store verifies', async () => {
    const { log, stored } = store().writer()
    await Promise.all(everyType().map((e) => log.append(e)))
    for (const e of everyType()) await log.append(e)
    const records = await stored()
    expect(records).toHaveLength(2 * everyType().length)
    expectLinked(records)
    expect(await store().verify!()).toEqual({ ok: true, records: records.length, chains: 1 })
  })

  it('hash chain: two writers keep two chains, each linked from the genesis hash, and both verify', async () => {
    const one = store().writer()
    const two = store().writer()
    await Promise.all([...seqs(20).map((i) => one.log.append(issued(`x-${i}`))), ...seqs(7).map((i) => two.log.append(denied(T0 + i)))])
    expectLinked(await one.stored())
    expectLinked(await two.stored())
    expect(await store().verify!()).toEqual({ ok: true, records: 27, chains: 2 })
  })
})
