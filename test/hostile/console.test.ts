/**
 * Hostile requests riding on a console session (the console on, as under
 * `--dev`, on PGlite): every state-changing route a session cookie can
 * reach, the admin API's and the console's own forms, asked with the CSRF
 * token absent, wrong, another person's or right, from the same site or
 * another, by a person whose role may or may not act, with bodies good and
 * bad. The property: nothing changes unless the token is the session's own,
 * the request is not cross-site and the role allows it; a refusal is a 4xx
 * (never a 5xx), and no answer holds a stack trace.
 */
import { createHash } from 'node:crypto'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { consoleSignIn } from '../support/console.js'
import { seedFromEnv } from './describe-hostile.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const ADMIN_KEY = 'hostile-console-admin-key-0123456789'
const ADMIN = { authorization: `Bearer ${ADMIN_KEY}` }

interface Person {
  readonly cookie: string
  readonly csrf: string
  /** May kill and lift. */
  readonly responder: boolean
}

describe('hostile input: console sessions', () => {
  let dir: string
  let m: Mandate
  const people: Record<string, Person> = {}

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-hostile-console-'))
    await cp(join(root, 'policies/dev'), join(dir, 'policies'), { recursive: true })
    const config = Config.parse({
      issuer: 'http://localhost:8080',
      policies_dir: join(dir, 'policies'),
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      admin: { keys: [{ name: 'hostile-admin', sha256: createHash('sha256').update(ADMIN_KEY).digest('hex'), roles: ['admin'] }] },
      log: { level: 'silent' },
    })
    m = await composeMandate(config, { dev: true, logger: createLogger('silent') })
    for (const [person, responder] of [
      ['rita', true],
      ['vera', false],
    ] as const) {
      const { cookie, csrf } = await consoleSignIn(m.app, person)
      people[person] = { cookie, csrf, responder }
    }
  }, 120_000)
  afterAll(async () => {
    await m?.close()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  /** The state a forged request could change: kills (made and lifted) and attestations. */
  const state = async () => {
    const kills = (await (await m.app.request('/admin/revocations?limit=1000', { headers: ADMIN })).json()) as {
      revocations: { id: string; lifted_at: string | null }[]
    }
    const agent = (await (await m.app.request('/admin/agents/demo-agent', { headers: ADMIN })).json()) as { attestation: unknown }
    return JSON.stringify({ kills: kills.revocations.map((k) => [k.id, k.lifted_at]), attestation: agent.attestation })
  }

  const target = fc.constantFrom(
    { method: 'POST', path: '/admin/revocations', json: true, acts: 'revoke' },
    { method: 'DELETE', path: '/admin/revocations/:kill', json: false, acts: 'revoke' },
    { method: 'POST', path: '/admin/agents/demo-agent/attest', json: true, acts: 'attest' },
    { method: 'POST', path: '/console/sign-out', json: false, acts: 'none' },
    // The console's own forms: a kill at its confirmed step, a lift, an attestation.
    { method: 'POST', path: '/console/kill', json: false, acts: 'revoke', form: 'kind=agent&agent=demo-agent&reason=forged&confirm=yes' },
    { method: 'POST', path: '/console/kills/:kill/lift', json: false, acts: 'revoke' },
    { method: 'POST', path: '/console/agents/demo-agent/attest', json: false, acts: 'attest' },
  )
  const body = fc.oneof(
    fc.constant('{"agent":"demo-agent","reason":"forged"}'),
    fc.constant('{"agent":"demo-subagent","reason":"forged","force":true}'),
    fc.constant('{}'),
    fc.string({ maxLength: 200 }),
    fc.json({ maxDepth: 3 }),
  )

  it('changes nothing without the session’s own CSRF token, from another site, or beyond the role; never a 5xx', async () => {
    // A kill to lift (made with the admin key), so that DELETE has something to change.
    const made = await m.app.request('/admin/revocations', {
      method: 'POST',
      headers: { ...ADMIN, 'content-type': 'application/json' },
      body: JSON.stringify({ agent: 'demo-payer', reason: 'to lift' }),
    })
    const kill = ((await made.json()) as { id: string }).id
    const seed = seedFromEnv()
    await fc.assert(
      fc.asyncProperty(
        target,
        fc.constantFrom('rita', 'vera'),
        fc.constantFrom('absent', 'wrong', 'other', 'empty', 'own'),
        fc.constantFrom(undefined, 'same-origin', 'same-site', 'cross-site', 'none'),
        body,
        fc.boolean(),
        async (t, who, token, site, text, inForm) => {
          const person = people[who]!
          const other = people[who === 'rita' ? 'vera' : 'rita']!
          const csrf = { absent: undefined, wrong: 'A'.repeat(43), other: other.csrf, empty: '', own: person.csrf }[token]
          const headers: Record<string, string> = { cookie: person.cookie }
          if (site !== undefined) headers['sec-fetch-site'] = site
          let payload = t.json ? text : ''
          if (t.path.startsWith('/console/')) {
            headers['content-type'] = 'application/x-www-form-urlencoded'
            const fields = 'form' in t ? t.form : ''
            payload = [inForm && csrf !== undefined ? `csrf=${encodeURIComponent(csrf)}` : '', fields].filter((f) => f !== '').join('&')
          } else {
            if (t.json) headers['content-type'] = 'application/json'
            if (csrf !== undefined) headers['x-csrf-token'] = csrf
          }
          const before = await state()
          const res = await m.app.request(t.path.replace(':kill', kill), { method: t.method, headers, ...(payload === '' ? {} : { body: payload }) })
          const answer = await res.text()
          const after = await state()
          expect(res.status, answer).toBeLessThan(500)
          expect(answer).not.toMatch(/\n\s+at .+:\d+:\d+/)
          const mayAct = t.acts === 'revoke' ? person.responder : t.acts === 'attest' ? false : true
          const legitimate = token === 'own' && site !== 'cross-site' && mayAct && (!t.path.startsWith('/console/') || inForm)
          if (!legitimate)
            expect(after, `${t.method} ${t.path} as ${who}, token ${token}, site ${site ?? '-'}: ${res.status} ${answer.slice(0, 200)}`).toBe(before)
          if (!legitimate && t.path.startsWith('/admin/') && token !== 'own') expect(res.status).toBe(403)
        },
      ),
      { numRuns: 300, ...(seed === undefined ? {} : { seed }) },
    )
  })
})
