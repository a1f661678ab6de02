import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadConfig } from '../../../src/config/load.js'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-config-notifications-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function load(webhooks: string) {
  const path = join(dir, 'mandate.yaml')
  await writeFile(path, `notifications:\n  webhooks:\n${webhooks}`)
  return loadConfig(path, {}, { dev: true })
}

const hook = (id: string, url: string, events = '[kill.created]', extra = '') =>
  `    - { id: ${id}, url: '${url}', events: ${events}, secret_file: /run/secrets/${id}${extra} }\n`

describe('notifications.webhooks', () => {
  it('takes https, and http on loopback, with the standard format by default', async () => {
    const r = await load(hook('a', 'https://hooks.example.com/x') + hook('b', 'http://127.0.0.1:9000/x', '[kill.created, agent.dormant]', ', format: slack'))
    if (!r.ok) throw new Error(r.issues.join('\n'))
    expect(r.config.notifications.webhooks.map((h) => [h.id, h.format])).toEqual([
      ['a', 'standard'],
      ['b', 'slack'],
    ])
    expect(r.config.notifications.retry.max_attempts).toBe(20)
  })

  it.each([
    ['plain http off loopback', hook('a', 'http://hooks.example.com/x'), 'notifications.webhooks.0.url'],
    ['an unknown event type', hook('a', 'https://hooks.example.com/x', '[kill.maybe]'), 'notifications.webhooks.0.events.0'],
    ['no events', hook('a', 'https://hooks.example.com/x', '[]'), 'notifications.webhooks.0.events'],
    ['a repeated id', hook('a', 'https://hooks.example.com/x') + hook('a', 'https://hooks.example.com/y'), 'notifications.webhooks.1.id'],
    [
      'an inline secret',
      `    - { id: a, url: 'https://h.example.com', events: [kill.created], secret_file: /s, secret: whsec_x }\n`,
      'notifications.webhooks.0',
    ],
  ])('refuses %s', async (_, yaml, path) => {
    const r = await load(yaml)
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.issues.map((i) => i.slice(0, i.indexOf(': ')))).toContain(path)
  })
})
