/**
 * The `RevocationLog` port (src/revocation/port.ts), on every adapter:
 * memory, and the SQL adapter on PGlite and on PostgreSQL (whose databases
 * default to a non-UTC time zone and a non-ISO DateStyle, so epoch seconds
 * must survive whatever the server prints). What the port promises: records
 * round-trip exactly; an id is stored once; a kill is lifted once and the
 * first lifter kept, even when lifts race; `listRelevant(now)` is every kill
 * and every unexpired jti/chain entry, oldest first; `list` pages newest
 * first behind a keyset cursor; bad input is a `TypeError` before anything
 * is written.
 */
import { randomUUID } from 'node:crypto'
import { beforeEach, expect, it } from 'vitest'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import type { Revocation, RevocationLog, RevocationTarget } from '../../src/revocation/port.js'
import { revocationLogAdapters } from './adapters.js'
import { describeEachAdapter, rejection } from './harness.js'

const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z, epoch seconds
const MAX_TIME = 253_402_300_799 // 9999-12-31T23:59:59Z

const jti = (v: string) => ({ kind: 'jti', jti: v as Jti }) as const
const chain = (v: string) => ({ kind: 'chain', jti: v as Jti }) as const
const agent = (v: string) => ({ kind: 'agent', agent: v as AgentId }) as const
const IDP = 'https://idp.example'
/** A user is (issuer, sub); `null` is any issuer (kills recorded before kills named one). */
const sub = (v: string, iss: string | null = IDP) => ({ kind: 'sub', sub: v as Subject, iss }) as const
const agentSub = (a: string, s: string, iss: string | null = IDP) => ({ kind: 'agent_sub', agent: a as AgentId, sub: s as Subject, iss }) as const

function revocation(target: RevocationTarget, over: Partial<Revocation> = {}): Revocation {
  const token = target.kind === 'jti' || target.kind === 'chain'
  return {
    id: randomUUID(),
    target,
    reason: 'incident 42',
    createdBy: 'responder',
    createdAt: T0,
    expiresAt: token ? T0 + 3600 : undefined,
    liftedAt: undefined,
    liftedBy: undefined,
    ...over,
  }
}

/** Newest first, as `list` answers. */
const newestFirst = (a: Revocation, b: Revocation) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

describeEachAdapter('RevocationLog', revocationLogAdapters(), (_adapter, backing) => {
  let log: RevocationLog
  beforeEach(async () => {
    log = await backing().fresh()
  })

  it('round-trips every target kind exactly, with undefined (not null) for absent fields', async () => {
    const records = [
      revocation(jti('tok-1'), { createdAt: T0 + 1, expiresAt: T0 + 901 }),
      revocation(chain('tok-2'), { createdAt: 0, expiresAt: MAX_TIME }),
      revocation(agent('billing-bot'), { createdAt: T0 + 3 }),
      revocation(sub('user@example.com'), { createdAt: MAX_TIME }),
      revocation(agentSub('billing-bot', 'user@example.com'), { reason: 'ünïcode ✓ \'quoted\' "x"', createdBy: 'ops:key-7' }),
      // The same user name at two issuers, and at any issuer: three users, three records.
      revocation(sub('user@example.com', 'https://other-idp.example/tenants/7')),
      revocation(sub('user@example.com', null)),
      revocation(agentSub('billing-bot', 'user@example.com', null)),
      // Stored already lifted, and a kill with an expiry: both come back as written.
      revocation(agent('old-bot'), { createdAt: T0 - 86_400, expiresAt: T0, liftedAt: T0 - 3600, liftedBy: 'admin' }),
    ]
    for (const r of records) await log.insert(r)
    for (const r of records) {
      expect(await log.get(r.id)).toStrictEqual(r)
    }
    const got = await log.get(records[2]!.id)
    expect(Object.keys(got!.target)).toEqual(['kind', 'agent'])
    expect((await log.get(records[3]!.id))!.target).toStrictEqual({ kind: 'sub', sub: 'user@example.com', iss: IDP })
    expect((await log.get(records[6]!.id))!.target).toStrictEqual({ kind: 'sub', sub: 'user@example.com', iss: null })
    expect(got!.expiresAt).toBeUndefined()
    expect(got!.liftedAt).toBeUndefined()
    expect(got!.liftedBy).toBeUndefined()
  })

  it('finds a record by its id in upper case, and returns the id lower-cased', async () => {
    const r = revocation(agent('a1'))
    await log.insert(r)
    expect(await log.get(r.id.toUpperCase())).toStrictEqual(r)
  })

  it('get with an id that is not a UUID resolves undefined', async () => {
    await log.insert(revocation(agent('a1')))
    for (const id of ['', 'not-a-uuid', '123', `${randomUUID()}x`, "' or 1=1 --", '{00000000-0000-0000-0000-000000000000}']) {
      expect(await log.get(id)).toBeUndefined()
    }
    expect(await log.get(randomUUID())).toBeUndefined()
  })

  it('refuses a second record with the same id, keeping the first', async () => {
    const r = revocation(agent('a1'))
    await log.insert(r)
    await expect(log.insert({ ...r, reason: 'other' })).rejects.toThrow(/already exists/)
    expect(await log.get(r.id)).toStrictEqual(r)
  })

  it('refuses records that cannot be stored, before anything is written', async () => {
    const bad: Revocation[] = [
      revocation(agent('a1'), { id: 'not-a-uuid' }),
      revocation(agent('a1'), { createdAt: T0 + 0.5 }),
      revocation(agent('a1'), { createdAt: -1 }),
      revocation(jti('t1'), { expiresAt: MAX_TIME + 1 }),
      revocation(jti('t1'), { liftedAt: T0, liftedBy: 'admin' }),
      revocation(agent('a1'), { liftedAt: T0 }),
      revocation(agent('a1'), { liftedBy: 'admin' }),
      revocation(agent('a\u0000b')),
      revocation({ kind: 'bogus' } as unknown as RevocationTarget),
      revocation({ kind: 'agent_sub', agent: 'a1' } as unknown as RevocationTarget),
      // A user kill states its issuer, or null for any: a forgotten one must not widen the kill.
      revocation({ kind: 'sub', sub: 'u1' } as unknown as RevocationTarget),
      revocation({ kind: 'agent_sub', agent: 'a1', sub: 'u1' } as unknown as RevocationTarget),
      revocation(sub('u1', '')),
      revocation(sub('u1', 'https://idp\u0000.example')),
    ]
    for (const r of bad) {
      expect(await rejection(log.insert(r)), JSON.stringify(r)).toBeInstanceOf(TypeError)
    }
    expect(await log.list({ limit: 100 })).toEqual([])
  })

  it('lift sets liftedAt and liftedBy once and returns the record', async () => {
    const kill = revocation(agentSub('a1', 'u1'))
    await log.insert(kill)
    const lifted = await log.lift(kill.id, 'alice', T0 + 60)
    expect(lifted).toStrictEqual({ record: { ...kill, liftedAt: T0 + 60, liftedBy: 'alice' }, changed: true })
    expect(await log.get(kill.id)).toStrictEqual(lifted!.record)
  })

  it('lifting again returns the record unchanged, says nothing changed: the first lifter is kept', async () => {
    const kill = revocation(sub('u1'))
    await log.insert(kill)
    const first = await log.lift(kill.id, 'alice', T0 + 60)
    const second = await log.lift(kill.id, 'bob', T0 + 120)
    expect(first?.changed).toBe(true)
    expect(second).toStrictEqual({ record: first!.record, changed: false })
    expect(second!.record).toMatchObject({ liftedAt: T0 + 60, liftedBy: 'alice' })
    expect(await log.get(kill.id)).toStrictEqual(first!.record)
  })

  it('concurrent lifts: exactly one lifter wins and every caller sees it', async () => {
    const kill = revocation(agent('a1'))
    await log.insert(kill)
    const results = await Promise.all(['l0', 'l1', 'l2', 'l3', 'l4'].map((by, i) => log.lift(kill.id, by, T0 + 10 + i)))
    const stored = await log.get(kill.id)
    expect(stored?.liftedBy).toMatch(/^l[0-4]$/)
    for (const r of results) expect(r?.record).toStrictEqual(stored)
    expect(results.filter((r) => r?.changed === true)).toHaveLength(1)
  })

  it('lift of an unknown or malformed id resolves undefined and writes nothing', async () => {
    expect(await log.lift(randomUUID(), 'alice', T0)).toBeUndefined()
    expect(await log.lift('not-a-uuid', 'alice', T0)).toBeUndefined()
    expect(await log.list({ limit: 10 })).toEqual([])
  })

  it('lift of a jti or chain revocation is refused (a revoked token stays revoked)', async () => {
    const token = revocation(jti('t1'))
    const tree = revocation(chain('t2'))
    await log.insert(token)
    await log.insert(tree)
    expect(await rejection(log.lift(token.id, 'alice', T0 + 1))).toBeInstanceOf(TypeError)
    expect(await rejection(log.lift(tree.id, 'alice', T0 + 1))).toBeInstanceOf(TypeError)
    expect(await log.get(token.id)).toStrictEqual(token)
    expect(await log.get(tree.id)).toStrictEqual(tree)
  })

  it('listRelevant: every kill (lifted or not) and unexpired jti/chain, oldest first', async () => {
    const now = T0 + 1000
    const keep = [
      revocation(agent('a1'), { createdAt: T0 + 5 }),
      revocation(jti('fresh'), { createdAt: T0 + 1, expiresAt: now + 1 }),
      revocation(sub('u1'), { createdAt: T0 + 3, liftedAt: T0 + 4, liftedBy: 'admin' }),
      revocation(chain('fresh'), { createdAt: T0 + 2, expiresAt: MAX_TIME }),
      revocation(agentSub('a1', 'u1'), { createdAt: T0 + 4, expiresAt: T0 }), // a kill's expiresAt is not read
      revocation(jti('no-expiry'), { createdAt: T0 + 6, expiresAt: undefined }), // never lapses
      revocation(agent('same-second-1'), { createdAt: T0 + 7 }),
      revocation(agent('same-second-2'), { createdAt: T0 + 7 }),
    ]
    const drop = [
      revocation(jti('expired'), { createdAt: T0, expiresAt: now - 1 }),
      revocation(jti('expires-now'), { createdAt: T0, expiresAt: now }),
      revocation(chain('expired'), { createdAt: T0, expiresAt: T0 + 10 }),
    ]
    for (const r of [...drop, ...keep]) await log.insert(r)
    const oldestFirst = [...keep].sort((a, b) => newestFirst(b, a))
    expect(await log.listRelevant(now)).toStrictEqual(oldestFirst)
    // A fractional `now` (Date.now() / 1000) is accepted; expiry is strict (`expiresAt > now`).
    expect(await log.listRelevant(now + 0.5)).toStrictEqual(oldestFirst)
    expect(await log.listRelevant(now + 1)).toStrictEqual(oldestFirst.filter((r) => r !== keep[1]))
  })

  it('list pages newest first by (createdAt, id) with a keyset cursor: 25 records → 10/10/5', async () => {
    // Three records per second: ties are broken by id, descending.
    const records = Array.from({ length: 25 }, (_, i) => revocation(i % 2 === 0 ? agent(`a${i}`) : jti(`t${i}`), { createdAt: T0 + Math.floor(i / 3) }))
    // Inserted out of order: the order comes from the data, not insertion.
    for (const r of [...records].reverse()) await log.insert(r)
    const expected = [...records].sort(newestFirst)

    const page1 = await log.list({ limit: 10 })
    const page2 = await log.list({ limit: 10, before: page1.at(-1)!.id })
    const page3 = await log.list({ limit: 10, before: page2.at(-1)!.id })
    const page4 = await log.list({ limit: 10, before: page3.at(-1)!.id })
    expect([page1.length, page2.length, page3.length, page4.length]).toEqual([10, 10, 5, 0])
    expect([...page1, ...page2, ...page3]).toStrictEqual(expected)
    expect(new Set([...page1, ...page2, ...page3].map((r) => r.id)).size).toBe(25)

    // Records strictly older than the cursor, whichever record it is.
    expect(await log.list({ limit: 100, before: expected[7]!.id })).toStrictEqual(expected.slice(8))
    expect(await log.list({ limit: 100, before: expected[7]!.id.toUpperCase() })).toStrictEqual(expected.slice(8))
    expect(await log.list({ limit: 3 })).toStrictEqual(expected.slice(0, 3))
    expect(await log.list({ limit: 0 })).toEqual([])
  })

  it('list with an unknown or malformed cursor is empty; a bad limit is refused', async () => {
    await log.insert(revocation(agent('a1')))
    expect(await log.list({ limit: 10, before: randomUUID() })).toEqual([])
    expect(await log.list({ limit: 10, before: 'not-a-uuid' })).toEqual([])
    for (const limit of [-1, 1.5, Number.NaN]) {
      expect(await rejection(log.list({ limit }))).toBeInstanceOf(TypeError)
    }
  })

  it('concurrent inserts of one id: exactly one is stored, the others are refused as duplicates', async () => {
    const r = revocation(agent('a1'))
    const outcomes = await Promise.allSettled(['first', 'second', 'third', 'fourth'].map((reason) => log.insert({ ...r, reason })))
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1)
    for (const o of outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')) {
      expect(o.reason).toBeInstanceOf(Error)
      expect(o.reason).not.toBeInstanceOf(TypeError)
      expect(String(o.reason)).toMatch(/already exists/)
    }
    const stored = await log.get(r.id)
    expect(['first', 'second', 'third', 'fourth']).toContain(stored?.reason)
    expect(await log.list({ limit: 10 })).toStrictEqual([stored])
  })

  it('an id in upper case is the same id: a second insert of it is a duplicate', async () => {
    const r = revocation(agent('a1'))
    await log.insert(r)
    await expect(log.insert({ ...r, id: r.id.toUpperCase() })).rejects.toThrow(/already exists/)
    expect(await log.list({ limit: 10 })).toStrictEqual([r])
  })

  it('a kill stored already lifted is not lifted again: the stored lifter is kept', async () => {
    const kill = revocation(agent('a1'), { liftedAt: T0 + 5, liftedBy: 'alice' })
    await log.insert(kill)
    expect(await log.lift(kill.id, 'bob', T0 + 60)).toStrictEqual({ record: kill, changed: false })
    expect(await log.get(kill.id)).toStrictEqual(kill)
  })

  it('lift by an upper-case id lifts the record, returned with its id lower-cased', async () => {
    const kill = revocation(sub('u1'))
    await log.insert(kill)
    expect(await log.lift(kill.id.toUpperCase(), 'alice', T0 + 1)).toStrictEqual({ record: { ...kill, liftedAt: T0 + 1, liftedBy: 'alice' }, changed: true })
  })

  it('bad arguments are a TypeError, and nothing is written: lift’s by and at, listRelevant’s now', async () => {
    const kill = revocation(agent('a1'))
    await log.insert(kill)
    for (const [by, at] of [
      ['a\u0000b', T0],
      [42 as unknown as string, T0],
      ['alice', T0 + 0.5],
      ['alice', -1],
      ['alice', MAX_TIME + 1],
      ['alice', Number.NaN],
    ] as const) {
      expect(await rejection(log.lift(kill.id, by, at)), `lift(${by}, ${at})`).toBeInstanceOf(TypeError)
    }
    expect(await log.get(kill.id)).toStrictEqual(kill)
    for (const now of [Number.NaN, -1, MAX_TIME + 1, Number.POSITIVE_INFINITY]) {
      expect(await rejection(log.listRelevant(now)), `listRelevant(${now})`).toBeInstanceOf(TypeError)
    }
  })

  it('list with a limit above the number of records answers them all, newest first', async () => {
    const records = [revocation(agent('a1'), { createdAt: T0 }), revocation(jti('t1'), { createdAt: T0 + 1 }), revocation(sub('u1'), { createdAt: T0 + 2 })]
    for (const r of records) await log.insert(r)
    expect(await log.list({ limit: 500 })).toStrictEqual([...records].reverse())
    // The cursor is the oldest record: nothing is older.
    expect(await log.list({ limit: 500, before: records[0]!.id })).toEqual([])
  })
})
