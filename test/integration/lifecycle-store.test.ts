/**
 * The lifecycle store's contract, the same for every adapter: in memory, on
 * PGlite and on PostgreSQL. The first instance to track an agent fixes its
 * start; a later attestation replaces an earlier one and never the reverse;
 * a transition is recorded only against the version read, so of two
 * instances that read the same row only one wins.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMemoryLifecycleStore, createSqlLifecycleStore, type LifecycleStore } from '../../src/audit/lifecycle-sql.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const T0 = 1_800_000_000

function describeStore(name: string, open: () => Promise<{ store: LifecycleStore; done: () => Promise<void> }>, d: typeof describe = describe): void {
  d(`lifecycle store: ${name}`, () => {
    let store: LifecycleStore
    let done: () => Promise<void>
    beforeAll(async () => {
      ;({ store, done } = await open())
    }, 60_000)
    afterAll(async () => done?.())

    it('tracks an agent from the first time any instance saw it', async () => {
      await store.track(['agent-a', 'agent-b'], T0)
      await store.track(['agent-a', 'agent-c'], T0 + 100)
      const rows = new Map((await store.list()).map((r) => [r.agent, r]))
      expect([...rows.keys()].sort()).toEqual(['agent-a', 'agent-b', 'agent-c'])
      expect(rows.get('agent-a')).toEqual({
        agent: 'agent-a',
        trackedSince: T0,
        attestedAt: undefined,
        attestedBy: undefined,
        nextDue: undefined,
        conditions: [],
        suspended: false,
        version: 0,
      })
      expect(rows.get('agent-c')!.trackedSince).toBe(T0 + 100)
    })

    it('keeps the latest attestation, whichever is written last', async () => {
      await store.attest('agent-a', T0 + 50, 'admin-2', T0 + 50 + 90 * 86_400)
      await store.attest('agent-a', T0 + 10, 'admin-1', T0 + 10 + 90 * 86_400)
      // An agent attested before any sweep tracked it is tracked from then.
      await store.attest('agent-d', T0 + 20, 'admin-1', T0 + 20 + 86_400)
      const rows = new Map((await store.list()).map((r) => [r.agent, r]))
      expect(rows.get('agent-a')).toMatchObject({ trackedSince: T0, attestedAt: T0 + 50, attestedBy: 'admin-2', nextDue: T0 + 50 + 90 * 86_400 })
      expect(rows.get('agent-d')).toMatchObject({ trackedSince: T0 + 20, attestedAt: T0 + 20, attestedBy: 'admin-1' })
    })

    it('records a transition only against the version read: one of two racing instances wins', async () => {
      const [first, second] = await Promise.all([
        store.transition('agent-b', 0, ['attestation_overdue'], true),
        store.transition('agent-b', 0, ['attestation_overdue'], true),
      ])
      expect([first, second].filter(Boolean)).toHaveLength(1)
      const row = (await store.list()).find((r) => r.agent === 'agent-b')!
      expect(row).toMatchObject({ conditions: ['attestation_overdue'], suspended: true, version: 1 })
      expect(await store.transition('agent-b', 0, [], false)).toBe(false)
      expect(await store.transition('agent-b', 1, [], false)).toBe(true)
      expect(await store.transition('nobody', 0, [], false)).toBe(false)
    })
  })
}

describeStore('memory', async () => ({ store: createMemoryLifecycleStore(), done: async () => {} }))

describeStore('PGlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-lifecycle-store-'))
  const database: Database = await openDatabase(undefined, { dataDir: dir })
  await database.migrate()
  return {
    store: createSqlLifecycleStore(database.db),
    done: async () => {
      await database.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
})

describeStore(
  'PostgreSQL',
  async () => {
    const test: TestDatabase = await createTestDatabase()
    const database = await openDatabase(test.url, { dataDir: '/nonexistent' })
    await database.migrate()
    return {
      store: createSqlLifecycleStore(database.db),
      done: async () => {
        await database.close()
        await test.drop()
      },
    }
  },
  describePostgres,
)
