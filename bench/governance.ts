/**
 * The agent inventory at scale: `npm run bench:governance [-- --quick]` (`npm run build` first: the
 * broker runs from dist/, as `mandate serve`).
 *
 * 1. A PostgreSQL database of its own (dropped afterwards) receives the usage summaries that 1,000
 *    agents and 10,000,000 delegation-log records over 30 days would leave: SYNTHETIC summary rows,
 *    INSERTed directly for the agents' ids; the records themselves are not written, since the
 *    inventory never reads them (test/integration/inventory.test.ts checks that the summaries equal a
 *    recount of a real log).
 * 2. A real broker (`bin/mandate.js serve`, a production config, 1,000 generated policy files, an
 *    auditor key) starts on that database.
 * 3. Real exchanges: signed requests spread over the agents, each a fresh client assertion and
 *    subject token. Every one must be answered 200, and the summaries must then hold exactly that many
 *    more tokens: the statement that writes the records keeps them.
 * 4. `GET /admin/agents?sort=tokens_24h&limit=100` and `GET /admin/agents/{id}` over HTTP, one after
 *    the other: p50 and p99 against the 200 ms target. Each read is itself an audit record, as in use.
 *
 * Prints the figures and writes its section of bench/RESULTS.md. What the summaries cost the token
 * endpoint is `npm run bench`'s to measure (docs/performance.md, "Regressions").
 */
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { cpus, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { freePort } from '../test/support/net.js'
import { ownBacking } from './support/backing.js'
import { createRequests, generateInputs, mandateConfig, signingKeySet, writeInputs } from './support/inputs.js'
import { writeOwnedSection } from './support/results-md.js'

const quick = process.argv.includes('--quick')
const AGENTS = 1_000
const RECORDS = 10_000_000
const DAYS = 30
const USERS_PER_AGENT = 50
const EXCHANGES = quick ? 500 : 2_000
const ITERATIONS = quick ? 20 : 100
const TARGET_MS = 200
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const say = (line: string) => process.stdout.write(`${line}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const backing = await ownBacking({ redis: false })
if (typeof backing === 'string') {
  say(`bench:governance: skipped (${backing})`)
  process.exit(0)
}
const dir = mkdtempSync(join(tmpdir(), 'mandate-bench-governance-'))
const sql = postgres(backing.databaseUrl, { max: 2, onnotice: () => {} })
let broker: ReturnType<typeof spawn> | undefined
let brokerErr = ''
const idp = createServer()
try {
  // --- Inputs: 1,000 agents with policy files, the IdP's JWKS, an auditor key.
  const inputs = generateInputs({ agents: AGENTS, users: 100 })
  const files = await writeInputs(dir, inputs)
  writeFileSync(join(dir, 'signing-keys.json'), JSON.stringify(signingKeySet(inputs.server)), { mode: 0o600 })
  idp.on('request', (req, res) => {
    if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(inputs.server.idp.jwks))
    else res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve))
  const auditorKey = randomBytes(24).toString('base64url')
  const port = await freePort()
  const configFile = join(dir, 'mandate.yaml')
  writeFileSync(
    configFile,
    mandateConfig(inputs.server, {
      port,
      policiesDir: files.policiesDir,
      dataDir: join(dir, 'data'),
      signingKeysFile: join(dir, 'signing-keys.json'),
      idpJwksUri: `http://127.0.0.1:${(idp.address() as { port: number }).port}/jwks`,
      extra: `admin:\n  keys:\n    - name: bench-auditor\n      sha256: ${createHash('sha256').update(auditorKey).digest('hex')}\n      roles: [auditor]\n`,
    }),
  )

  // --- The broker (it migrates the database), then the synthetic summaries under it.
  const env: NodeJS.ProcessEnv = { ...process.env, MANDATE_CONFIG: configFile, MANDATE_CHECKPOINT_DIR: join(dir, 'checkpoints'), LOG_LEVEL: 'warn' }
  for (const k of Object.keys(env))
    if (k.startsWith('OTEL_') || (k.startsWith('MANDATE_') && k !== 'MANDATE_CONFIG' && k !== 'MANDATE_CHECKPOINT_DIR')) delete env[k]
  delete env['REDIS_URL']
  env['DATABASE_URL'] = backing.databaseUrl
  broker = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve'], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] })
  broker.stderr!.on('data', (d: Buffer) => (brokerErr = (brokerErr + String(d)).slice(-4000)))
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 120_000
  while (
    !(await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    ))
  ) {
    if (broker.exitCode !== null || Date.now() > deadline) throw new Error(`the broker did not start: ${brokerErr.trim().slice(-1500)}`)
    await sleep(200)
  }

  const now = Math.floor(Date.now() / 1000)
  const today = Math.floor(now / 86_400)
  const hourNow = Math.floor(now / 3_600)
  const perDay = Math.floor(RECORDS / AGENTS / DAYS)
  const ids = inputs.server.agents.map((a) => a.id)
  const built = performance.now()
  // Each agent: `perDay` records a day (5 % of them denials), spread over 24 hours; 2 scopes on 1 audience; 50 users.
  // The 30 days before today: today's rows are left to the real exchanges below, so that their count can be checked.
  await sql`insert into agent_usage_day (agent, day, tokens, denials, last_token_at)
    select a, ${today} - d, ${Math.round(perDay * 0.95)}, ${Math.round(perDay * 0.05)}, (${today} - d) * 86400 + 86399
    from unnest(${ids}::text[]) a, generate_series(1, ${DAYS}) d`
  await sql`insert into agent_usage_hour (agent, hour, tokens, denials)
    select a, ${hourNow} - h, ${Math.round((perDay * 0.95) / 24)}, ${Math.round((perDay * 0.05) / 24)}
    from unnest(${ids}::text[]) a, generate_series(1, ${DAYS * 24}) h`
  await sql`insert into agent_grant_usage_day (agent, audience, scope, day, tokens, last_token_at)
    select a, 'https://api-' || (ordinality % 20) || '.example', s, ${today} - d, ${Math.round(perDay * 0.95)}, (${today} - d) * 86400 + 86399
    from unnest(${ids}::text[]) with ordinality a, generate_series(1, ${DAYS}) d, unnest(array['read', 'write']) s`
  await sql`insert into agent_users (agent, sub_iss, sub, first_at, last_at)
    select a, 'https://idp.example', 'user-' || u, ${now - DAYS * 86_400}, ${now} - 86400 - (u * 3600)
    from unnest(${ids}::text[]) a, generate_series(1, ${USERS_PER_AGENT}) u`
  await sql`analyze`
  const rows = await sql<{ n: string }[]>`select (select count(*) from agent_usage_day) + (select count(*) from agent_usage_hour)
    + (select count(*) from agent_grant_usage_day) + (select count(*) from agent_users) as n`
  const buildSeconds = (performance.now() - built) / 1000
  say(
    `bench:governance${quick ? ' (quick)' : ''}: ${AGENTS.toLocaleString('en')} agents; SYNTHETIC summaries of ${(perDay * AGENTS * DAYS).toLocaleString('en')} records over the ${DAYS} days before today: ${Number(rows[0]!.n).toLocaleString('en')} rows, built in ${buildSeconds.toFixed(1)} s`,
  )

  // --- Real exchanges: all answered, all counted.
  const tokensToday = async () => Number((await sql<{ n: string | null }[]>`select sum(tokens) as n from agent_usage_day where day = ${today}`)[0]!.n ?? 0)
  const before = await tokensToday()
  const requests = await createRequests(inputs.generator, EXCHANGES)
  let next = 0
  const statuses = new Map<number, number>()
  const exchanged = performance.now()
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < requests.length) {
        const r = requests[next++]!
        const res = await fetch(`${base}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: r.body })
        await res.arrayBuffer()
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      }
    }),
  )
  const exchangeSeconds = (performance.now() - exchanged) / 1000
  const answered = statuses.get(200) ?? 0
  const counted = (await tokensToday()) - before
  say(
    `  real exchanges: ${EXCHANGES.toLocaleString('en')} over the agents in ${exchangeSeconds.toFixed(1)} s (16 connections): ` +
      `${[...statuses].map(([s, n]) => `${n} × ${s}`).join(', ')}; summaries counted ${counted.toLocaleString('en')} more tokens`,
  )
  if (answered !== EXCHANGES || counted !== answered)
    throw new Error(`expected ${EXCHANGES} answered 200 and counted; got ${answered} answered, ${counted} counted`)

  // --- The reads, over HTTP.
  const auth = { authorization: `Bearer ${auditorKey}` }
  async function timed(path: string): Promise<{ p50: number; p99: number; body: unknown }> {
    const times: number[] = []
    let body: unknown
    for (let i = 0; i < ITERATIONS; i++) {
      const t = performance.now()
      const res = await fetch(`${base}${path}`, { headers: auth })
      body = await res.json()
      times.push(performance.now() - t)
      if (res.status !== 200) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`)
    }
    times.sort((a, b) => a - b)
    const pick = (p: number) => times[Math.min(times.length - 1, Math.ceil(p * times.length) - 1)]!
    return { p50: pick(0.5), p99: pick(0.99), body }
  }
  const list = await timed('/admin/agents?sort=tokens_24h&limit=100')
  const listed = list.body as { total: number; agents: { usage?: unknown }[] }
  const show = await timed(`/admin/agents/${ids[0]!}`)
  const ms = (x: number) => x.toFixed(1)
  const verdict = (x: number) => (x < TARGET_MS ? 'met' : 'MISSED')
  say(
    `  GET /admin/agents?sort=tokens_24h&limit=100 (${listed.total} agents), ${ITERATIONS}×: p50 ${ms(list.p50)} ms, p99 ${ms(list.p99)} ms (target < ${TARGET_MS} ms: ${verdict(list.p99)})`,
  )
  say(`  GET /admin/agents/${ids[0]!}, ${ITERATIONS}×: p50 ${ms(show.p50)} ms, p99 ${ms(show.p99)} ms (target < ${TARGET_MS} ms: ${verdict(show.p99)})`)
  if (listed.total !== AGENTS) throw new Error(`the inventory lists ${listed.total} agents, not ${AGENTS}`)
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
  say(`  machine: ${cpus().length} cores, Node ${process.version}, load ${load}`)

  writeOwnedSection(root, 'governance', [
    '## Governance: the agent inventory at scale',
    '',
    `Written by \`npm run bench:governance\`${quick ? ' with --quick' : ''} (bench/governance.ts), ${new Date().toISOString()}; ${cpus().length} cores, Node ${process.version}, load average ${load}.`,
    '',
    `- **Data:** ${AGENTS.toLocaleString('en')} agents (generated policy files) and the usage summaries of ${(perDay * AGENTS * DAYS).toLocaleString('en')} delegation-log records over the ${DAYS} days before today, ${Number(rows[0]!.n).toLocaleString('en')} rows: SYNTHETIC, inserted directly (the inventory reads only the summaries).`,
    `- **Real traffic:** ${EXCHANGES.toLocaleString('en')} exchanges through a real broker (\`mandate serve\`, PostgreSQL), all answered 200; the summaries grew by exactly ${counted.toLocaleString('en')} tokens.`,
    '',
    '| read, over HTTP | p50 | p99 | target | verdict |',
    '|---|---:|---:|---:|---|',
    `| \`GET /admin/agents?sort=tokens_24h&limit=100\` (${listed.total} agents) | ${ms(list.p50)} ms | ${ms(list.p99)} ms | < ${TARGET_MS} ms | ${verdict(list.p99)} |`,
    `| \`GET /admin/agents/{id}\` | ${ms(show.p50)} ms | ${ms(show.p99)} ms | < ${TARGET_MS} ms | ${verdict(show.p99)} |`,
    '',
    'What keeping the summaries costs the token endpoint is measured by `npm run bench` against the code without them: see docs/performance.md, "Regressions".',
  ])
  say('wrote the governance section of bench/RESULTS.md')
} finally {
  if (broker !== undefined && broker.exitCode === null) {
    broker.kill('SIGTERM')
    await new Promise((r) => broker!.once('exit', r))
  }
  idp.close()
  await sql.end({ timeout: 1 })
  await backing.cleanup()
  rmSync(dir, { recursive: true, force: true })
}
