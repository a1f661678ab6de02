/**
 * Webhook notifications end to end: a real broker (PostgreSQL, and PGlite
 * as embedded mode runs it) kills and lifts, and a real HTTP receiver
 * (node:http) verifies every delivery with the `standardwebhooks` package as
 * a receiver would.
 */
import { serve } from '@hono/node-server'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentId } from '../../src/core/claims.js'
import { ADMIN_KEYS, bearer, startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { mandate, payload, secret, startReceiver, until, type Receiver } from '../support/webhook-receiver.js'

/** Bound on kill → verified delivery: the kill wakes the notifier at once (no scan tick); 2 s leaves room for a loaded 2-core machine. */
const DELIVERY_BOUND_MS = 2_000

function describeWebhooks(
  name: string,
  describeIt: typeof describe,
  storage: () => Promise<{ options: { database?: string; embedded?: boolean }; drop(): Promise<void> }>,
) {
  describeIt(`webhook notifications (${name})`, () => {
    let dir: string
    let drop: () => Promise<void>
    let standard: Receiver
    let slack: Receiver
    let wrongKey: Receiver
    let broker: TestBroker
    const latencies: number[] = []

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'mandate-webhooks-'))
      const standardSecret = secret()
      const slackSecret = secret()
      standard = await startReceiver(standardSecret)
      slack = await startReceiver(slackSecret)
      // Verifies with a secret other than the one Mandate signs with: every delivery must fail verification.
      wrongKey = await startReceiver(secret())
      const files = { standard: join(dir, 'standard'), slack: join(dir, 'slack'), wrong: join(dir, 'wrong') }
      await writeFile(files.standard, `${standardSecret}\n`)
      await writeFile(files.slack, slackSecret)
      await writeFile(files.wrong, secret())
      const s = await storage()
      drop = s.drop
      broker = await startTestBroker({
        ...s.options,
        notifications: {
          webhooks: [
            { id: 'ops', url: standard.url, events: ['kill.created', 'kill.lifted'], secret_file: files.standard },
            { id: 'chat', url: slack.url, events: ['kill.created'], secret_file: files.slack, format: 'slack' },
            { id: 'forged', url: wrongKey.url, events: ['kill.created'], secret_file: files.wrong },
          ],
          retry: { max_attempts: 5, initial_delay_ms: 10, max_delay_ms: 50 },
          timeout_ms: 2_000,
        },
      })
    })

    afterAll(async () => {
      if (latencies.length > 0) console.info(`webhook (${name}) kill → verified delivery (ms): ${latencies.map((l) => l.toFixed(1)).join(', ')}`)
      await broker?.close()
      await Promise.all([standard?.close(), slack?.close(), wrongKey?.close()])
      await drop?.()
      await rm(dir, { recursive: true, force: true })
    })

    it('delivers a kill, signed per Standard Webhooks, within the bound', async () => {
      const started = performance.now()
      const id = await broker.revocations.killAgent('secret-agent' as AgentId)
      const d = await standard.waitFor((x) => payload(x).data['revocation_id'] === id, DELIVERY_BOUND_MS)
      latencies.push(performance.now() - started)
      expect(d.verified).toBe(true)
      expect(d.id).toMatch(/^msg_[A-Za-z0-9_-]{22}$/)
      expect(d.headers['content-type']).toBe('application/json')
      const p = payload(d)
      expect(p.type).toBe('kill.created')
      expect(p.data).toMatchObject({ revocation_id: id, target: { kind: 'agent', agent: 'secret-agent' } })
      expect(p.data).not.toHaveProperty('lifted_at')
    })

    it('delivers the lift of that kill after it, in order', async () => {
      const kill = await standard.waitFor((x) => payload(x).type === 'kill.created' && x.status === 200, DELIVERY_BOUND_MS)
      await broker.revocations.liftAgent('secret-agent' as AgentId)
      const lift = await standard.waitFor((x) => payload(x).type === 'kill.lifted', DELIVERY_BOUND_MS)
      expect(lift.verified).toBe(true)
      expect(payload(lift).data).toMatchObject({ revocation_id: payload(kill).data['revocation_id'], lifted_by: expect.any(String) })
      expect(lift.id).not.toBe(kill.id)
      expect(standard.deliveries.indexOf(lift)).toBeGreaterThan(standard.deliveries.indexOf(kill))
    })

    it('sends the Slack shape ({ text, blocks }) to a slack-format webhook, signed the same way', async () => {
      const d = await slack.waitFor((x) => x.verified, DELIVERY_BOUND_MS)
      const body = JSON.parse(d.body) as { text: string; blocks: { type: string; text?: { type: string; text: string } }[] }
      expect(Object.keys(body).sort()).toEqual(['blocks', 'text'])
      expect(body.text).toContain('agent secret-agent killed')
      expect(body.blocks[0]).toEqual({ type: 'section', text: { type: 'mrkdwn', text: body.text } })
      // Not subscribed to kill.lifted.
      expect(slack.deliveries.every((x) => !x.body.includes('lifted'))).toBe(true)
    })

    it('signs with its own secret only: a receiver holding another secret fails verification', async () => {
      const d = await wrongKey.waitFor(() => true, DELIVERY_BOUND_MS)
      expect(d.verified).toBe(false)
      expect(d.error).toMatch(/signature/i)
    })

    it('retries a receiver that answers 500 twice, then delivers the event once, and shows the failure in /admin/webhooks', async () => {
      standard.statuses.push(500, 500)
      const id = await broker.revocations.killUser('mallory' as never)
      await until(() => standard.deliveries.some((x) => x.status === 200 && payload(x).data['revocation_id'] === id), 5_000, 'delivered after two 500s')
      const tries = standard.deliveries.filter((x) => payload(x).data['revocation_id'] === id)
      expect(tries.map((x) => x.status)).toEqual([500, 500, 200])
      expect(new Set(tries.map((x) => x.id)).size).toBe(1)
      expect(tries.every((x) => x.verified)).toBe(true)
      // A retry is signed afresh, the body is the same bytes.
      expect(new Set(tries.map((x) => x.body)).size).toBe(1)

      await until(
        async () => {
          const res = await broker.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.auditor) })
          const body = (await res.json()) as { webhooks: { id: string; pending: number; last_success_at: string | null }[] }
          return body.webhooks.find((w) => w.id === 'ops')?.pending === 0
        },
        2_000,
        'ops queue drained',
      )
      const res = await broker.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.auditor) })
      expect(res.status).toBe(200)
      expect(res.headers.get('cache-control')).toBe('no-store')
      const { webhooks } = (await res.json()) as { webhooks: Record<string, unknown>[] }
      expect(webhooks.map((w) => w['id'])).toEqual(['ops', 'chat', 'forged'])
      const ops = webhooks[0]!
      expect(ops).toMatchObject({ pending: 0, last_failure: 'status 500', next_attempt_at: null, format: 'standard' })
      expect(Date.parse(ops['last_success_at'] as string)).toBeGreaterThanOrEqual(Date.parse(ops['last_failure_at'] as string))
      // The forged receiver answers 401 to every delivery: retried, and the failure is visible.
      const forged = webhooks[2]!
      expect(forged['last_failure']).toBe('status 401')
      expect(forged['last_success_at']).toBeNull()
    })

    it('shows that state in `mandate webhooks list`, as a table and as --json', async () => {
      const server = serve({ fetch: broker.mandate.app.fetch, hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => server.once('listening', () => resolve()))
      try {
        const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
        const env = { MANDATE_ADMIN_KEY: ADMIN_KEYS.auditor }
        const table = await mandate(['webhooks', 'list', '--url', url], env, dir)
        expect(table.stderr).toBe('')
        expect(table.status).toBe(0)
        const lines = table.stdout.split('\n')
        expect(lines.find((l) => l.includes(' ops '))).toMatch(/status 500|kill\.created/)
        expect(table.stdout).toContain('status 500')
        expect(table.stdout).toContain('status 401')
        expect(table.stdout).toMatch(/│ chat +│ http:\/\/127\.0\.0\.1:\d+\/hook/)
        const json = await mandate(['webhooks', 'list', '--url', url, '--json'], env, dir)
        expect(json.status).toBe(0)
        const parsed = JSON.parse(json.stdout) as { webhooks: { id: string; last_failure: string | null }[] }
        expect(parsed.webhooks.map((w) => [w.id, w.last_failure])).toEqual([
          ['ops', 'status 500'],
          ['chat', null],
          ['forged', 'status 401'],
        ])
        const refused = await mandate(['webhooks', 'list', '--url', url], { MANDATE_ADMIN_KEY: ADMIN_KEYS.responder }, dir)
        expect(refused.status).not.toBe(0)
        expect(refused.stdout).toBe('')
      } finally {
        await new Promise((resolve) => server.close(resolve))
      }
    })

    it('refuses /admin/webhooks without a key and to a key without the read role', async () => {
      const none = await broker.mandate.app.request('/admin/webhooks')
      expect(none.status).toBe(401)
      expect(((await none.json()) as { error: string }).error).toBe('unauthorized')
      const responder = await broker.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.responder) })
      expect(responder.status).toBe(403)
      expect(responder.headers.get('cache-control')).toBe('no-store')
    })
  })
}

describeWebhooks('PostgreSQL', describePostgres, async () => {
  const db: TestDatabase = await createTestDatabase()
  return { options: { database: db.url }, drop: () => db.drop() }
})

describeWebhooks('PGlite', describe, async () => Promise.resolve({ options: { embedded: true }, drop: () => Promise.resolve() }))

describePostgres('webhook notifications (two brokers, one database)', () => {
  let db: TestDatabase
  let dir: string
  let receiver: Receiver
  let brokers: TestBroker[] = []

  beforeAll(async () => {
    db = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'mandate-webhooks-two-'))
    const key = secret()
    await writeFile(join(dir, 'secret'), key)
    receiver = await startReceiver(key)
    const notifications = {
      webhooks: [{ id: 'ops', url: receiver.url, events: ['kill.created', 'kill.lifted'], secret_file: join(dir, 'secret') }],
      retry: { initial_delay_ms: 10, max_delay_ms: 50 },
    }
    brokers = [await startTestBroker({ database: db.url, notifications }), await startTestBroker({ database: db.url, notifications })]
  })

  afterAll(async () => {
    for (const b of brokers) await b.close()
    await receiver?.close()
    await db?.drop()
    await rm(dir, { recursive: true, force: true })
  })

  it('delivers each event once, whichever broker made it, in the order the kills were made (one sender: the lease)', async () => {
    const ids: string[] = []
    for (let i = 0; i < 6; i++) ids.push(await brokers[i % 2]!.revocations.revokeToken(`two-${i}` as never))
    await until(() => ids.every((id) => receiver.deliveries.some((d) => payload(d).data['revocation_id'] === id)), 5_000, 'all six delivered')
    // Settled: nothing is pending at either broker, so a duplicate could only already have arrived.
    await until(
      async () => {
        const res = await brokers[0]!.mandate.app.request('/admin/webhooks', { headers: bearer(ADMIN_KEYS.auditor) })
        return ((await res.json()) as { webhooks: { pending: number }[] }).webhooks[0]?.pending === 0
      },
      2_000,
      'queue drained',
    )
    expect(receiver.deliveries.every((d) => d.verified && d.status === 200)).toBe(true)
    expect(receiver.deliveries.map((d) => payload(d).data['revocation_id'])).toEqual(ids)
    expect(new Set(receiver.deliveries.map((d) => d.id)).size).toBe(6)
  })
})
