/**
 * What the usage summaries cost PostgreSQL: `tsx bench/usage-statement.ts [GROUP] [GROUPS]`.
 *
 * Writes groups of GROUP `token.issued` records (default 32: 8 agents, 100 users, 2 scopes) through the
 * group INSERT the audit writer uses, alternately without and with the summaries' upserts (the CTEs of
 * src/audit/usage.ts), in a database of its own (dropped afterwards), and prints per record: the wall
 * time, the writer's synchronous CPU (encoding and parameters), this process's CPU in all (the writer, the
 * PostgreSQL client's serialization and parsing, the event loop), and the CPU of the PostgreSQL backends
 * serving this database (from /proc: CPU time, so less sensitive to a busy machine than throughput).
 * Four rounds of each, one after the other, so that the tables' growth shows.
 */
import { randomUUID } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import type { AuditEvent } from '../src/audit/port.js'
import { INSERT_GROUP, groupParams } from '../src/audit/group-insert.js'
import { encodeRecord, GENESIS_HASH } from '../src/audit/record.js'
import { USAGE_PARAMS } from '../src/audit/usage.js'
import { openDatabase } from '../src/storage/database.js'
import { ownBacking } from './support/backing.js'

const GROUP = Number(process.argv[2] ?? 32)
const GROUPS = Number(process.argv[3] ?? 300)
const ROUNDS = 4

const backing = await ownBacking({ redis: false })
if (typeof backing === 'string') {
  console.log(`PostgreSQL: skipped (${backing})`)
  process.exit(0)
}
const database = await openDatabase(backing.databaseUrl, { dataDir: '/nonexistent' })
await database.migrate()

/** The statement without the summaries: INSERT_GROUP from its `insert into audit_log` on. */
const RECORDS_ONLY = INSERT_GROUP.slice(INSERT_GROUP.indexOf('insert into audit_log'))
const dbName = new URL(backing.databaseUrl).pathname.slice(1)

function cpuMsOf(pid: string): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
}
/** CPU of every backend connected to this bench's database. */
function backendCpuMs(): number {
  let total = 0
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      if (cmd.startsWith('postgres:') && cmd.includes(` ${dbName} `)) total += cpuMsOf(pid)
    } catch {
      // The process ended while it was read.
    }
  }
  return total
}

const chainId = randomUUID()
let seq = 0
let prevHash = GENESIS_HASH
const now = Math.floor(Date.now() / 1000)
const group = (): AuditEvent[] =>
  Array.from({ length: GROUP }, (_, i) => {
    const jti = randomUUID()
    return {
      type: 'token.issued',
      at: now,
      agent: `agent-${i % 8}`,
      sub: `user-${Math.floor(Math.random() * 100)}`,
      subIssuer: 'https://idp.example',
      actors: [`agent-${i % 8}`],
      jti,
      parentJti: undefined,
      rootJti: jti,
      audience: 'https://api.example',
      scopes: ['read', 'write'],
      expiresAt: now + 300,
      policyHash: 'ab'.repeat(32),
      // Every token request carries one (X-Request-Id); the log indexes it for `mandate audit show`.
      requestId: randomUUID(),
    } as unknown as AuditEvent
  })

async function round(withSummaries: boolean): Promise<string> {
  let syncMs = 0
  const node0 = process.cpuUsage()
  const cpu0 = backendCpuMs()
  const t0 = performance.now()
  for (let g = 0; g < GROUPS; g++) {
    const events = group()
    const c0 = process.cpuUsage()
    const rows = events.map((e) => {
      const row = encodeRecord(e, { chainId, seq: ++seq, instance: 'bench', prevHash })
      prevHash = row.hash
      return row
    })
    const { params } = groupParams(rows, events)
    const sent = withSummaries ? database.statement(INSERT_GROUP, params) : database.statement(RECORDS_ONLY, params.slice(0, params.length - USAGE_PARAMS))
    const c1 = process.cpuUsage(c0)
    syncMs += (c1.user + c1.system) / 1000
    await sent
  }
  const wallMs = performance.now() - t0
  const backendMs = backendCpuMs() - cpu0
  const node = process.cpuUsage(node0)
  const perRecord = (ms: number) => ((ms * 1000) / GROUPS / GROUP).toFixed(1)
  const nodeMs = (node.user + node.system) / 1000
  return `wall ${perRecord(wallMs)} µs, writer ${perRecord(syncMs)} µs, Node in all ${perRecord(nodeMs)} µs, PostgreSQL ${perRecord(backendMs)} µs`
}

console.log(`usage summaries: ${ROUNDS} rounds of ${GROUPS} groups of ${GROUP} token.issued records; per record:`)
try {
  for (let r = 1; r <= ROUNDS; r++) {
    console.log(`  round ${r}  records only: ${await round(false)}`)
    console.log(`  round ${r}  + summaries:  ${await round(true)}`)
  }
} finally {
  await database.close()
  await backing.cleanup()
}
