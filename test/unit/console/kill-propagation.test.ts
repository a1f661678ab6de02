/**
 * A kill's propagation section: in words when the broker has no
 * propagation route, every instance and subscriber with its time, the
 * moment the last one had it once complete, and who is still waited for
 * (the section refreshing itself) until then.
 */
import { describe, expect, it } from 'vitest'
import { Propagation } from '../../../src/http/routes/console/kill-propagation.js'

const html = async (answer: Parameters<typeof Propagation>[0]['answer']) => String(await Propagation({ answer }))

describe('the propagation section of a kill', () => {
  it('says so in words when the broker has no propagation route', async () => {
    const out = await html({ ok: false, status: 404, error: 'not_found', description: 'no such route' })
    expect(out).toContain('Propagation status: not available from this broker.')
    expect(out).not.toContain('data-refresh')
  })

  it('lists who has it and who is waited for, and refreshes itself while incomplete', async () => {
    const out = await html({
      ok: true,
      status: 200,
      body: {
        revocation_id: 'r',
        complete: false,
        instances: [
          { instance: 'broker-a', live: true, applied_at: '2026-12-07T21:00:01.000Z', last_seen: '2026-12-07T21:00:02.000Z' },
          { instance: 'broker-b', live: true, applied_at: null, last_seen: '2026-12-07T21:00:02.000Z' },
          // Stopped before it applied it: not waited for.
          { instance: 'broker-c', live: false, applied_at: null, last_seen: null },
        ],
        feed_subscribers: [{ subscriber: 'rs/api', connection: 'c1', instance: 'broker-a', connected_at: '2026-12-07T20:00:00.000Z', sent_at: null }],
        ssf_receivers: [{ receiver: 'siem', method: 'push', state: 'pending', attempts: 1, last_error: null, enqueued_at: '2026-12-07T21:00:01.000Z' }],
      },
    })
    expect(out).toContain('data-refresh="2000"')
    expect(out).toContain('Waiting for: broker instance broker-b, feed subscriber rs/api, SSF receiver siem.')
    expect(out).toMatch(/broker-c<\/td>.*?<span class="badge neutral">stopped<\/span>/)
    expect(out).toMatch(/<td class="mono">broker-a<\/td><td class="mono"><\/td><td><time datetime="2026-12-07T21:00:01.000Z">/)
  })

  it('says when every instance and subscriber had it, once complete, and stops refreshing', async () => {
    const out = await html({
      ok: true,
      status: 200,
      body: {
        complete: true,
        instances: [{ instance: 'broker-a', applied_at: '2026-12-07T21:00:01.000Z', last_seen: '2026-12-07T21:00:02.000Z' }],
        feed_subscribers: [{ subscriber: 'rs/api', instance: 'broker-a', sent_at: '2026-12-07T21:00:03.000Z' }],
        ssf_receivers: [
          { receiver: 'siem', method: 'push', state: 'delivered', attempts: 1, last_error: null, enqueued_at: '2026-12-07T21:00:01.000Z' },
          { receiver: 'late', method: 'poll', state: 'before_stream', attempts: 0, last_error: null, enqueued_at: null },
        ],
      },
    })
    expect(out).not.toContain('data-refresh')
    expect(out).toContain('Reached every instance and subscriber at <time datetime="2026-12-07T21:00:03.000Z">2026-12-07 21:00 UTC</time>')
  })

  it('does not take an answer it cannot read for a complete one', async () => {
    const out = await html({ ok: true, status: 200, body: { instances: 'all' } })
    expect(out).toContain('the broker’s answer is not one this console reads')
  })
})
