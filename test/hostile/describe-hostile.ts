/**
 * Runs one group of the suite's properties under vitest, each against a
 * broker of its own file, with the seed of `HOSTILE_SEED` when it is set.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basic, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { hostileContext, type HostileContext } from './arbitraries.js'
import { identityContext, identitySetup, type IdentitySetup } from './identity.js'
import { runCase, stackTracesInLogs } from './harness.js'
import { brokerFor, PROPERTIES, TOTAL_RUNS, type HostileGroup } from './properties.js'

/** The run's seed, when one is to be replayed; fast-check prints the seed of every failure. */
export function seedFromEnv(): number | undefined {
  const text = process.env['HOSTILE_SEED']
  if (text === undefined || text === '') return undefined
  const seed = Number(text)
  if (!Number.isSafeInteger(seed)) throw new TypeError(`HOSTILE_SEED must be an integer, got ${JSON.stringify(text)}`)
  return seed
}

export function describeHostile(group: HostileGroup): void {
  const { postgres, ssf, identity } = brokerFor(group)
  ;(postgres ? describePostgres : describe)(`hostile input: ${group}`, () => {
    let b: TestBroker
    let ctx: HostileContext
    let db: TestDatabase | undefined
    let setup: IdentitySetup | undefined
    const seed = seedFromEnv()

    beforeAll(async () => {
      db = postgres ? await createTestDatabase() : undefined
      setup = identity === true ? await identitySetup() : undefined
      b = await startTestBroker({
        logLevel: 'debug',
        ...(db === undefined ? {} : { database: db.url }),
        ...(ssf === undefined ? {} : { ssf }),
        ...(setup === undefined ? {} : setup.options),
      })
      ctx = await hostileContext(b)
      if (setup !== undefined) ctx = { ...ctx, identity: await identityContext(b, ctx, setup) }
    })
    afterAll(async () => {
      await b?.close()
      await db?.drop()
      await setup?.close()
    })

    for (const p of PROPERTIES.filter((x) => x.group === group)) {
      it(p.name, async () => {
        const mark = b.logLines.length
        try {
          await fc.assert(
            fc.asyncProperty(p.cases(ctx), (c) => runCase(b, c)),
            { numRuns: p.runs, ...(seed === undefined ? {} : { seed }) },
          )
        } finally {
          // Lines logged after a case answered (none should be) are checked here.
          expect(stackTracesInLogs(b, mark)).toEqual([])
        }
      })
    }

    if (group === 'token-requests') {
      // Checked in one file of the suite: each file imports the whole broker, a file of its own costs seconds.
      it('generates at least 20,000 cases per run, under names unique for `fuzz --only`', () => {
        expect(TOTAL_RUNS).toBeGreaterThanOrEqual(20_000)
        expect(new Set(PROPERTIES.map((p) => p.name)).size).toBe(PROPERTIES.length)
      })
    }

    it('still issues a token afterwards (the process stays up)', async () => {
      const res = await b.token(b.exchangeForm(await b.userToken()), basic('secret-agent', SECRET))
      expect(res.status).toBe(200)
    })
  })
}
