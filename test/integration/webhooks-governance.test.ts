/**
 * Governance notifications end to end: a real broker writing its delegation
 * log to its SQL database (PostgreSQL, and PGlite as embedded mode runs it)
 * records agent lifecycle transitions and anomalies through that log, and a
 * real HTTP receiver verifies every delivery with the `standardwebhooks`
 * package. The records are appended as their producers append them (the
 * broker's `AuditLog`): each must reach the webhooks subscribed to its type,
 * and only those, signed, in order, once.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LIFECYCLE_TRANSITIONS, type AuditEvent, type LifecycleTransition } from '../../src/audit/port.js'
import type { AgentId } from '../../src/core/claims.js'
import { ADMIN_KEYS, bearer, startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { mandate, payload, secret, startReceiver, until, type Delivery, type Receiver } from '../support/webhook-receiver.js'

/**
 * Bound on record durable → verified delivery. The scan interval is set to a
 * minute below, so only the wake on the durable record can meet it; 2 s
 * leaves room for a loaded 2-core machine.
 */
const DELIVERY_BOUND_MS = 2_000

const GOVERNANCE_TYPES = [
  'agent.quarantined',
  'agent.anomaly_alert',
  'agent.attestation_due',
  'agent.attestation_overdue',
  'agent.expiry_near',
  'agent.expired',
  'agent.orphaned',
  'agent.dormant',
  'agent.reinstated',
]

const TYPE_OF_TRANSITION: Record<LifecycleTransition, string> = {
  attestation_due: 'agent.attestation_due',
  attestation_overdue: 'agent.attestation_overdue',
  expiry_near: 'agent.expiry_near',
  expired: 'agent.expired',
  orphaned: 'agent.orphaned',
  dormant: 'agent.dormant',
  reinstated: 'agent.reinstated',
}

const lifecycle = (at: number, agent: string, transition: LifecycleTransition, detail = `${transition} <@here> & co`): AuditEvent => ({
  type: 'agent.lifecycle',
  at,
  agent: agent as AgentId,
  transition,
  suspended: transition === 'attestation_overdue' || transition === 'dormant',
  detail,
})

const anomaly = (at: number, agent: string, action: 'alert' | 'quarantine', revocationId?: string): AuditEvent => ({
  type: 'agent.anomaly',
  at,
  agent: agent as AgentId,
  rule: action === 'quarantine' ? 'denial_burst' : 'new_audience',
  action,
  detail: action === 'quarantine' ? '25 denials in 60 s (limit 20)' : 'first token for https://new.test',
  ...(revocationId === undefined ? {} : { revocationId }),
})

/** The governance deliveries a receiver accepted (2xx), in arrival order. */
const governance = (r: Receiver): Delivery[] => r.deliveries.filter((d) => d.status === 200 && d.verified && payload(d).type.startsWith('agent.'))
/** Those about one agent: the broker's own lifecycle sweep records transitions of the test policies too. */
const governanceOf = (r: Receiver, agent: string): Delivery[] => governance(r).filter((d) => (payload(d).data as { agent?: string }).agent === agent)

function describeGovernanceWebhooks(
  name: string,
  describeIt: typeof describe,
  storage: () => Promise<{ options: { database?: string; embedded?: boolean }; drop(): Promise<void> }>,
) {
  describeIt(`governance webhook notifications (${name})`, () => {
    let dir: string
    let drop: () => Promise<void>
    let all: Receiver
    let owners: Receiver
    let slack: Receiver
    let broker: TestBroker
    const latencies: number[] = []

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'mandate-webhooks-gov-'))
      const secrets = { all: secret(), owners: secret(), slack: secret() }
      all = await startReceiver(secrets.all)
      owners = await startReceiver(secrets.owners)
      slack = await startReceiver(secrets.slack)
      for (const [file, key] of Object.entries(secrets)) await writeFile(join(dir, file), key)
      const s = await storage()
      drop = s.drop
      broker = await startTestBroker({
        ...s.options,
        sqlAudit: true,
        // A minute between scans: a delivery within DELIVERY_BOUND_MS comes from the wake on the durable record.
        ssf: { scan_interval_ms: 60_000 },
        notifications: {
          webhooks: [
            { id: 'all', url: all.url, events: ['kill.created', ...GOVERNANCE_TYPES], secret_file: join(dir, 'all') },
            { id: 'owners', url: owners.url, events: ['agent.orphaned', 'agent.dormant'], secret_file: join(dir, 'owners') },
            { id: 'chat', url: slack.url, events: ['agent.quarantined', 'agent.attestation_overdue'], secret_file: join(dir, 'slack'), format: 'slack' },
          ],
          retry: { max_attempts: 5, initial_delay_ms: 10, max_delay_ms: 50 },
          timeout_ms: 2_000,
        },
      })
    })

    afterAll(async () => {
      if (latencies.length > 0) console.info(`webhook (${name}) governance record → verified delivery (ms): ${latencies.map((l) => l.toFixed(1)).join(', ')}`)
      await broker?.close()
      await Promise.all([all?.close(), owners?.close(), slack?.close()])
      await drop?.()
      await rm(dir, { recursive: true, force: true })
    })

    it('delivers what the broker’s own lifecycle sweep records: expired-agent’s policy is past its expiry at start', async () => {
      await until(() => governanceOf(all, 'expired-agent').length > 0, DELIVERY_BOUND_MS * 2, 'the sweep’s transition delivered')
      expect(governanceOf(all, 'expired-agent').map((d) => payload(d).type)).toEqual(['agent.expired'])
      expect(payload(governanceOf(all, 'expired-agent')[0]!).data).toMatchObject({ agent: 'expired-agent', transition: 'expired', suspended: true })
    })

    it('delivers every lifecycle transition and both anomaly actions as their own event types, in the order they were recorded', async () => {
      const at = broker.now()
      const before = governanceOf(all, 'jwt-agent').length
      const killed = await broker.revocations.killAgent('jwt-agent' as AgentId)
      const transitions = LIFECYCLE_TRANSITIONS
      for (const t of transitions) await broker.mandate.audit.append(lifecycle(at, 'jwt-agent', t))
      await broker.mandate.audit.append(anomaly(at, 'jwt-agent', 'alert'))
      await broker.mandate.audit.append(anomaly(at, 'jwt-agent', 'quarantine', killed))
      const expected = [...transitions.map((t) => TYPE_OF_TRANSITION[t]), 'agent.anomaly_alert', 'agent.quarantined']
      await until(() => governanceOf(all, 'jwt-agent').length >= before + expected.length, DELIVERY_BOUND_MS * 2, 'every governance event delivered')
      const got = governanceOf(all, 'jwt-agent').slice(before)
      expect(got.map((d) => payload(d).type)).toEqual(expected)
      expect(new Set(got.map((d) => d.id)).size).toBe(expected.length)
      const quarantine = payload(got.at(-1)!)
      expect(quarantine.data).toMatchObject({ agent: 'jwt-agent', rule: 'denial_burst', action: 'quarantine', revocation_id: killed })
      expect(payload(got.at(-2)!).data).toMatchObject({ action: 'alert', rule: 'new_audience', revocation_id: null })
      const dormant = got.find((d) => payload(d).type === 'agent.dormant')!
      expect(payload(dormant).data).toMatchObject({ transition: 'dormant', suspended: true, detail: 'dormant <@here> & co' })
      // The quarantine's kill comes from the revocation log, as kill.created, to a webhook that takes it.
      await all.waitFor((x) => payload(x).type === 'kill.created' && payload(x).data['revocation_id'] === killed, DELIVERY_BOUND_MS)
    })

    it('sends a webhook only the event types it names', async () => {
      await until(() => governance(owners).length >= 2, DELIVERY_BOUND_MS, 'orphaned and dormant delivered')
      // Settled: nothing pending, so anything else would already have arrived.
      await until(
        async () => {
          const res = await broker.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.auditor) })
          return ((await res.json()) as { webhooks: { pending: number }[] }).webhooks.every((w) => w.pending === 0)
        },
        DELIVERY_BOUND_MS,
        'every queue drained',
      )
      expect(owners.deliveries.map((d) => payload(d).type)).toEqual(['agent.orphaned', 'agent.dormant'])
      expect(owners.deliveries.every((d) => d.verified)).toBe(true)
    })

    it('sends the Slack shape for a slack-format webhook, names escaped', async () => {
      await until(() => slack.deliveries.length >= 2, DELIVERY_BOUND_MS, 'two Slack deliveries')
      const bodies = slack.deliveries.map((d) => JSON.parse(d.body) as { text: string; blocks: { type: string; text?: { text: string } }[] })
      expect(slack.deliveries.every((d) => d.verified)).toBe(true)
      expect(bodies.map((b) => Object.keys(b).sort())).toEqual([
        ['blocks', 'text'],
        ['blocks', 'text'],
      ])
      const [overdue, quarantined] = bodies
      expect(overdue!.text).toBe('Mandate: agent jwt-agent is overdue for attestation (tokens suspended): attestation_overdue &lt;@here&gt; &amp; co')
      expect(quarantined!.text).toBe('Mandate: agent jwt-agent quarantined by anomaly rule denial_burst: 25 denials in 60 s (limit 20)')
      expect(quarantined!.blocks[0]).toEqual({ type: 'section', text: { type: 'mrkdwn', text: quarantined!.text } })
    })

    it('delivers a lifecycle record as soon as it is durable (no scan runs meanwhile), signed, with its payload', async () => {
      const started = performance.now()
      await broker.mandate.audit.append(lifecycle(broker.now(), 'secret-agent', 'attestation_due', 'attestation due in 14 days'))
      const d = await all.waitFor((x) => payload(x).type === 'agent.attestation_due' && payload(x).data['agent'] === 'secret-agent', DELIVERY_BOUND_MS)
      latencies.push(performance.now() - started)
      expect(d.verified).toBe(true)
      expect(d.id).toMatch(/^msg_[A-Za-z0-9_-]{22}$/)
      expect(d.headers['content-type']).toBe('application/json')
      const p = payload(d)
      expect(p.timestamp).toBe(new Date(broker.now() * 1000).toISOString())
      expect(p.data).toEqual({
        agent: 'secret-agent',
        transition: 'attestation_due',
        suspended: false,
        detail: 'attestation due in 14 days',
        at: broker.now(),
        audit: { id: expect.any(Number), chain: expect.stringMatching(/^[0-9a-f-]{36}$/), seq: expect.any(Number) },
      })
    })

    it('retries a receiver that answers 500 twice, then delivers the record once, same id and bytes', async () => {
      all.statuses.push(500, 500)
      await broker.mandate.audit.append(lifecycle(broker.now(), 'sub-agent', 'expiry_near', 'expires in 7 days'))
      const mine = (x: Delivery) => x.verified && payload(x).type === 'agent.expiry_near' && payload(x).data['agent'] === 'sub-agent'
      await until(() => all.deliveries.some((x) => mine(x) && x.status === 200), 5_000, 'delivered after two 500s')
      const tries = all.deliveries.filter(mine)
      expect(tries.map((x) => x.status)).toEqual([500, 500, 200])
      expect(new Set(tries.map((x) => x.id)).size).toBe(1)
      expect(new Set(tries.map((x) => x.body)).size).toBe(1)
    })

    it('shows the delivery state of governance events in `mandate webhooks list --json`', async () => {
      const { serve } = await import('@hono/node-server')
      const server = serve({ fetch: broker.mandate.app.fetch, hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => server.once('listening', () => resolve()))
      try {
        const { port } = server.address() as { port: number }
        await until(
          async () => {
            const res = await broker.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.auditor) })
            return ((await res.json()) as { webhooks: { pending: number }[] }).webhooks[0]?.pending === 0
          },
          DELIVERY_BOUND_MS,
          'all drained',
        )
        const json = await mandate(['webhooks', 'list', '--url', `http://127.0.0.1:${port}`, '--json'], { MANDATE_ADMIN_KEY: ADMIN_KEYS.auditor }, dir)
        expect(json.status).toBe(0)
        const listed = (
          JSON.parse(json.stdout) as {
            webhooks: { id: string; events: string[]; pending: number; last_failure: string | null; last_success_at: string | null }[]
          }
        ).webhooks
        expect(listed.map((w) => [w.id, w.pending])).toEqual([
          ['all', 0],
          ['owners', 0],
          ['chat', 0],
        ])
        expect(listed[0]!.events).toEqual(['kill.created', ...GOVERNANCE_TYPES])
        expect(listed[0]!.last_failure).toBe('status 500')
        expect(listed.every((w) => w.last_success_at !== null)).toBe(true)
        const table = await mandate(['webhooks', 'list', '--url', `http://127.0.0.1:${port}`], { MANDATE_ADMIN_KEY: ADMIN_KEYS.auditor }, dir)
        expect(table.status).toBe(0)
        expect(table.stdout).toContain('agent.quarantined')
        expect(table.stdout).toContain('agent.dormant')
      } finally {
        await new Promise((resolve) => server.close(resolve))
      }
    })
  })
}

describeGovernanceWebhooks('PostgreSQL', describePostgres, async () => {
  const db: TestDatabase = await createTestDatabase()
  return { options: { database: db.url }, drop: () => db.drop() }
})

describeGovernanceWebhooks('PGlite', describe, async () => Promise.resolve({ options: { embedded: true }, drop: () => Promise.resolve() }))

describePostgres('governance webhook notifications (two brokers, one database)', () => {
  let db: TestDatabase
  let dir: string
  let receiver: Receiver
  let brokers: TestBroker[] = []

  beforeAll(async () => {
    db = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'mandate-webhooks-gov-two-'))
    const key = secret()
    await writeFile(join(dir, 'secret'), key)
    receiver = await startReceiver(key)
    const options = {
      database: db.url,
      sqlAudit: true,
      // Each broker is woken only by its own records; the other's arrive by this scan.
      ssf: { scan_interval_ms: 100 },
      notifications: {
        webhooks: [{ id: 'ops', url: receiver.url, events: ['agent.dormant', 'agent.anomaly_alert'], secret_file: join(dir, 'secret') }],
        retry: { initial_delay_ms: 10, max_delay_ms: 50 },
      },
    }
    brokers = [await startTestBroker(options), await startTestBroker(options)]
  })

  afterAll(async () => {
    for (const b of brokers) await b.close()
    await receiver?.close()
    await db?.drop()
    await rm(dir, { recursive: true, force: true })
  })

  it('delivers each record once, whichever broker wrote it, in the order they were written (one sender: the lease)', async () => {
    const agents: string[] = []
    for (let i = 0; i < 6; i++) {
      const broker = brokers[i % 2]!
      agents.push(`agent-${i}`)
      await broker.mandate.audit.append(i % 3 === 2 ? anomaly(broker.now(), `agent-${i}`, 'alert') : lifecycle(broker.now(), `agent-${i}`, 'dormant'))
    }
    await until(() => agents.every((a) => receiver.deliveries.some((d) => payload(d).data['agent'] === a)), 5_000, 'all six delivered')
    await until(
      async () => {
        const res = await brokers[1]!.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.auditor) })
        return ((await res.json()) as { webhooks: { pending: number }[] }).webhooks[0]?.pending === 0
      },
      2_000,
      'queue drained',
    )
    // Settled: nothing is pending, so a duplicate could only already have arrived.
    expect(receiver.deliveries.every((d) => d.verified && d.status === 200)).toBe(true)
    expect(receiver.deliveries.map((d) => payload(d).data['agent'])).toEqual(agents)
    expect(new Set(receiver.deliveries.map((d) => d.id)).size).toBe(6)
  })
})
