/**
 * The agent inventory's read cost at scale: `tsx bench/governance.ts [--days=N] [--iterations=N]`.
 *
 * Builds, in a PostgreSQL database of its own (dropped afterwards), the usage
 * summaries that 1,000 agents and 10,000,000 delegation-log records would
 * leave over 30 days: the summary rows are INSERTed directly (SYNTHETIC: no
 * audit_log rows, no exchanges; the summaries' agreement with a real log is
 * what test/integration/inventory.test.ts checks). Then it times the reads
 * and the in-memory merge `GET /admin/agents` makes (no HTTP, no admin-read
 * record), and prints p50/p99 against the 200 ms target.
 */
import { sql } from 'drizzle-orm'
import { agentKills, buildInventory, selectInventory } from '../src/core/inventory.js'
import { createUsageReads } from '../src/audit/inventory.js'
import { openDatabase } from '../src/storage/database.js'
import { ownBacking } from './support/backing.js'

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback)
const AGENTS = 1_000
const RECORDS = 10_000_000
const DAYS = arg('days', 30)
const USERS_PER_AGENT = arg('users', 50)
const ITERATIONS = arg('iterations', 50)

const backing = await ownBacking({ redis: false })
if (typeof backing === 'string') {
  console.log(`PostgreSQL: skipped (${backing})`)
  process.exit(0)
}
const database = await openDatabase(backing.databaseUrl, { dataDir: '/nonexistent' })
try {
  await database.migrate()
  const now = Math.floor(Date.now() / 1000)
  const today = Math.floor(now / 86_400)
  const hourNow = Math.floor(now / 3_600)
  const perDay = Math.floor(RECORDS / AGENTS / DAYS)
  const built = performance.now()
  // Each agent: `perDay` tokens a day (5 % of them denials), spread over 24 hours; 2 scopes on 1 audience; USERS_PER_AGENT users.
  await database.db.execute(
    sql.raw(`insert into agent_usage_day (agent, day, tokens, denials, last_token_at)
    select 'agent-' || a, ${today} - d, ${Math.round(perDay * 0.95)}, ${Math.round(perDay * 0.05)}, (${today} - d) * 86400 + 86399
    from generate_series(1, ${AGENTS}) a, generate_series(0, ${DAYS - 1}) d`),
  )
  await database.db.execute(
    sql.raw(`insert into agent_usage_hour (agent, hour, tokens, denials)
    select 'agent-' || a, ${hourNow} - h, ${Math.round((perDay * 0.95) / 24)}, ${Math.round((perDay * 0.05) / 24)}
    from generate_series(1, ${AGENTS}) a, generate_series(0, ${DAYS * 24 - 1}) h`),
  )
  await database.db.execute(
    sql.raw(`insert into agent_grant_usage_day (agent, audience, scope, day, tokens, last_token_at)
    select 'agent-' || a, 'https://api-' || (a % 20) || '.example', s, ${today} - d, ${Math.round(perDay * 0.95)}, (${today} - d) * 86400 + 86399
    from generate_series(1, ${AGENTS}) a, generate_series(0, ${DAYS - 1}) d, unnest(array['read', 'write']) s`),
  )
  await database.db.execute(
    sql.raw(`insert into agent_users (agent, sub_iss, sub, first_at, last_at)
    select 'agent-' || a, 'https://idp.example', 'user-' || u, ${now} - ${DAYS} * 86400, ${now} - (u * 3600)
    from generate_series(1, ${AGENTS}) a, generate_series(1, ${USERS_PER_AGENT}) u`),
  )
  await database.db.execute(sql.raw('analyze'))
  const buildSeconds = (performance.now() - built) / 1000
  const reads = createUsageReads(database.db)
  const times: number[] = []
  let agents = 0
  for (let i = 0; i < ITERATIONS; i++) {
    const t = performance.now()
    const usage = await reads.usage(now)
    selectInventory(buildInventory([], usage, agentKills([]), now), {}, 'tokens_24h', now).slice(0, 100)
    times.push(performance.now() - t)
    agents = usage.size
  }
  times.sort((a, b) => a - b)
  const pick = (p: number) => times[Math.min(times.length - 1, Math.ceil(p * times.length) - 1)]!.toFixed(1)
  console.log(`governance: SYNTHETIC summaries for ${AGENTS} agents x ${DAYS} days = ${(perDay * AGENTS * DAYS).toLocaleString('en')} records' worth`)
  console.log(
    `  rows: ${AGENTS * DAYS} day, ${AGENTS * DAYS * 24} hour, ${AGENTS * DAYS * 2} grant-day, ${AGENTS * USERS_PER_AGENT} agent-user; built in ${buildSeconds.toFixed(1)} s`,
  )
  console.log(
    `  inventory read + merge (${agents} agents, sort tokens_24h, first 100), ${ITERATIONS} iterations: p50 ${pick(0.5)} ms, p99 ${pick(0.99)} ms (target < 200 ms)`,
  )
  console.log(
    `  load: ${(await import('node:os'))
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  )
} finally {
  await database.close()
  await backing.cleanup()
}
