/**
 * `npm run fuzz`: the hostile-input suite's properties in a longer seeded
 * run. Unlike `npm test` it does not stop at a property's first failing
 * case: it counts every one, prints a progress line as it goes, and ends
 * with each kind of failure and the command that replays it (and shrinks it
 * to a minimal input).
 *
 *   npm run fuzz -- [--seed N] [--cases N] [--only TEXT] [--every N] [--path P]
 *
 * --seed (or HOSTILE_SEED): the run's seed, random when absent, always printed.
 * --cases (or HOSTILE_CASES): cases over all selected properties (default
 * 200000), shared as `npm test` shares them. --only: properties whose name
 * contains TEXT. --every: a progress line every N cases (and every 5 s).
 * --path: with --seed and an --only naming one property, replays that case.
 */
import { parseArgs } from 'node:util'
import fc from 'fast-check'
import { startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, type TestDatabase } from '../support/pg-database.js'
import { hostileContext, type HostileContext } from './arbitraries.js'
import { identityContext, identitySetup, type IdentitySetup } from './identity.js'
import { runCase } from './harness.js'
import { brokerFor, PROPERTIES, type HostileProperty } from './properties.js'

const { values: args } = parseArgs({
  options: {
    seed: { type: 'string' },
    cases: { type: 'string' },
    only: { type: 'string' },
    every: { type: 'string' },
    path: { type: 'string' },
  },
})

function integer(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isSafeInteger(n)) {
    console.error(`fuzz: ${name} must be an integer, got ${JSON.stringify(text)}`)
    process.exit(2)
  }
  return n
}

const seed = integer('--seed', args.seed ?? process.env['HOSTILE_SEED'], (Math.random() * 2 ** 31) | 0)
const total = integer('--cases', args.cases ?? process.env['HOSTILE_CASES'], 200_000)
const every = integer('--every', args.every, 2_000)
const selected = PROPERTIES.filter((p) => args.only === undefined || p.name.toLowerCase().includes(args.only.toLowerCase()))
if (selected.length === 0) {
  console.error(`fuzz: no property name contains ${JSON.stringify(args.only)}; they are:\n${PROPERTIES.map((p) => `  ${p.name}`).join('\n')}`)
  process.exit(2)
}

/** A broker (and its context) per kind, started when a property first needs it. */
interface Target {
  readonly broker: TestBroker
  readonly ctx: HostileContext
  readonly db: TestDatabase | undefined
  readonly setup: IdentitySetup | undefined
}
const targets = new Map<string, Promise<Target>>()
function targetFor(p: HostileProperty): Promise<Target> {
  const { postgres, ssf, identity } = brokerFor(p.group)
  const kind = `${postgres ? 'postgres' : 'memory'}${ssf === undefined ? '' : '+ssf'}${identity === true ? '+identity' : ''}`
  let t = targets.get(kind)
  if (t === undefined) {
    t = (async () => {
      const db = postgres ? await createTestDatabase() : undefined
      const setup = identity === true ? await identitySetup() : undefined
      const broker = await startTestBroker({
        logLevel: 'debug',
        ...(db === undefined ? {} : { database: db.url }),
        ...(ssf === undefined ? {} : { ssf }),
        ...(setup === undefined ? {} : setup.options),
      })
      const ctx = await hostileContext(broker)
      return { broker, ctx: setup === undefined ? ctx : { ...ctx, identity: await identityContext(broker, ctx, setup) }, db, setup }
    })()
    targets.set(kind, t)
  }
  return t
}
async function closeTargets(): Promise<void> {
  for (const t of targets.values()) {
    const { broker, db, setup } = await t
    await broker.close()
    await db?.drop()
    await setup?.close()
  }
}

const replay = (p: HostileProperty, path: string) => `npm run fuzz -- --seed ${seed} --only ${JSON.stringify(p.name)} --path ${path}`

if (args.path !== undefined) {
  // Replays one case, then lets fast-check shrink it to a minimal failing input.
  const exact = selected.filter((p) => p.name === args.only)
  const p = exact[0] ?? selected[0]!
  if (exact.length !== 1 && selected.length !== 1) {
    console.error('fuzz: --path needs --only naming exactly one property')
    process.exit(2)
  }
  const { broker, ctx } = await targetFor(p)
  console.log(`fuzz: replaying ${JSON.stringify(p.name)}, seed ${seed}, path ${args.path}`)
  const result = await fc.check(
    fc.asyncProperty(p.cases(ctx), (c) => runCase(broker, c)),
    { seed, path: args.path },
  )
  if (result.failed) {
    const why = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)
    console.log(`${fc.defaultReportMessage(result) ?? ''}\n\n${why}`)
  } else {
    console.log('fuzz: that case passes now')
  }
  await closeTargets()
  process.exit(result.failed ? 1 : 0)
}

const planned = selected.reduce((n, p) => n + p.runs, 0)
const runsOf = (p: HostileProperty) => Math.max(1, Math.round((p.runs * total) / planned))
const grand = selected.reduce((n, p) => n + runsOf(p), 0)
console.log(`fuzz: seed ${seed}, ${grand} cases over ${selected.length} properties (replay this run: npm run fuzz -- --seed ${seed} --cases ${total})`)

interface Failure {
  readonly property: HostileProperty
  readonly path: string
  /** What the case was, numbers blurred. */
  readonly label: string
  readonly message: string
}
const failures: Failure[] = []
const blur = (s: string) => s.replace(/\d+/g, '#')

const started = performance.now()
let done = 0
let lastLine = started
const progress = (name: string, force = false) => {
  const now = performance.now()
  if (!force && done % every !== 0 && now - lastLine < 5_000) return
  lastLine = now
  const rate = Math.round(done / ((now - started) / 1000))
  console.log(`fuzz: ${done}/${grand} cases, ${rate}/s, ${failures.length} failures — ${name}`)
}

for (const p of selected) {
  const { broker, ctx } = await targetFor(p)
  const logs = broker.logLines as string[]
  let index = 0
  await fc.check(
    fc.asyncProperty(p.cases(ctx), async (c) => {
      const path = String(index++)
      try {
        await runCase(broker, c)
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err)
        failures.push({ property: p, path, label: blur(c.label), message })
      }
      // The per-case checks have read them; a long run must not hold every line.
      logs.length = 0
      done++
      progress(p.name)
      return true
    }),
    { seed, numRuns: runsOf(p) },
  )
}
progress('done', true)
await closeTargets()

if (failures.length === 0) {
  console.log(`fuzz: no failure in ${done} cases (seed ${seed})`)
  process.exit(0)
}
// A kind of failure: one property answering one wrong way; its cases listed by what they were.
const kinds = new Map<string, Failure[]>()
for (const f of failures) {
  // The first complaint, without what varies from case to case (the excerpt of a log line, a trace).
  const key = `${f.property.name}\n${blur(f.message.split('\n')[0]!.split(' (')[0]!)}`
  kinds.set(key, [...(kinds.get(key) ?? []), f])
}
console.log(`\nfuzz: ${failures.length} failing cases of ${done}, ${kinds.size} kinds (seed ${seed}):`)
for (const [key, list] of [...kinds].sort((a, b) => b[1].length - a[1].length)) {
  const [property, complaint] = key.split('\n') as [string, string]
  const labels = new Map<string, Failure[]>()
  for (const f of list) labels.set(f.label, [...(labels.get(f.label) ?? []), f])
  console.log(`\n  ${list.length}× ${property}: ${complaint}`)
  for (const [label, of] of [...labels].sort((a, b) => b[1].length - a[1].length).slice(0, 12)) {
    console.log(`     ${String(of.length).padStart(5)}× ${label.length > 160 ? `${label.slice(0, 160)}…` : label}   (--path ${of[0]!.path})`)
  }
  if (labels.size > 12) console.log(`            … and ${labels.size - 12} more`)
  console.log(`     replay one: ${replay(list[0]!.property, list[0]!.path)}`)
}
process.exit(1)
