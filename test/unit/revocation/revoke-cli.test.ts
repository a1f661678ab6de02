/**
 * `mandate revoke` as it talks to a broker: the CLI's HTTP calls are served
 * by a real test broker's app (its `fetch` routed to `app.request`), so the
 * flags are checked against what the admin API does with them: `--iss`
 * names the user's issuer, `--force` kills an agent no policy defines, and
 * a second lift is refused.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { revokeAgent, revokeInstance, revokeLift, revokeSub } from '../../../src/cli/revoke.js'
import { ADMIN_KEYS, startTestBroker, USER_ISSUER, type TestBroker } from '../../support/broker.js'

describe('mandate revoke against a broker', () => {
  let b: TestBroker
  let out: string[]
  let err: string[]
  const requests: unknown[] = []

  beforeAll(async () => {
    b = await startTestBroker({ extraUserIssuers: ['https://idp-b.test'] })
    vi.stubEnv('MANDATE_ADMIN_KEY', ADMIN_KEYS.responder)
    vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
      requests.push(init.body === undefined ? undefined : JSON.parse(init.body as string))
      return b.mandate.app.request(new URL(url).pathname, init)
    })
  })
  afterAll(async () => {
    vi.unstubAllGlobals()
    vi.unstubAllEnvs()
    await b.close()
  })
  afterEach(() => {
    process.exitCode = undefined
  })

  /** Runs one CLI call; returns its exit code, what it printed (parsed) and what it wrote to stderr. */
  async function run(call: () => Promise<void>): Promise<{ code: number; json: Record<string, unknown> | undefined; stderr: string }> {
    out = []
    err = []
    process.exitCode = undefined
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((s) => out.push(String(s)) > 0)
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((s) => err.push(String(s)) > 0)
    try {
      await call()
    } finally {
      stdout.mockRestore()
      stderr.mockRestore()
    }
    const text = out.join('')
    return { code: process.exitCode ?? 0, json: text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>), stderr: err.join('') }
  }

  it('revoke sub --iss kills the user of that issuer; without --iss, with two issuers trusted, the broker refuses', async () => {
    const vague = await run(() => revokeSub('alice', { reason: 'r', url: 'http://broker.test', json: true }))
    expect(vague.code).toBe(1)
    expect(vague.stderr).toMatch(/^mandate: 400 invalid_request/)
    const killed = await run(() => revokeSub('alice', { reason: 'r', iss: USER_ISSUER, url: 'http://broker.test', json: true }))
    expect(killed.code).toBe(0)
    expect(killed.json).toMatchObject({ kind: 'sub', target: { sub: 'alice', iss: USER_ISSUER } })
    expect(requests.at(-1)).toStrictEqual({ sub: 'alice', iss: USER_ISSUER, reason: 'r' })
  })

  it('revoke agent refuses an agent no policy defines (404) unless --force; --sub --iss kill it for one user', async () => {
    const unknown = await run(() => revokeAgent('no-such-agent', { reason: 'r', url: 'http://broker.test', json: true }))
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^mandate: 404 not_found/)
    const forced = await run(() => revokeAgent('no-such-agent', { reason: 'r', force: true, url: 'http://broker.test', json: true }))
    expect(forced.code).toBe(0)
    expect(forced.json).toMatchObject({ kind: 'agent', target: { agent: 'no-such-agent' } })
    const pair = await run(() => revokeAgent('secret-agent', { reason: 'r', sub: 'bob', iss: 'https://idp-b.test', url: 'http://broker.test', json: true }))
    expect(pair.code).toBe(0)
    expect(pair.json).toMatchObject({ kind: 'agent_sub', target: { agent: 'secret-agent', sub: 'bob', iss: 'https://idp-b.test' } })
  })

  it('revoke lift twice: the second is refused with 409', async () => {
    const kill = await run(() => revokeAgent('jwt-agent', { reason: 'r', url: 'http://broker.test', json: true }))
    const id = kill.json!['id'] as string
    expect((await run(() => revokeLift(id, { url: 'http://broker.test', json: true }))).code).toBe(0)
    const again = await run(() => revokeLift(id, { url: 'http://broker.test', json: true }))
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/^mandate: 409 conflict/)
  })

  it('revoke instance kills one running copy of an agent, and it can be lifted; an undefined agent needs --force', async () => {
    const pod = 'spiffe://test/ns/agents/pod-a'
    const killed = await run(() => revokeInstance('workload-agent', pod, { reason: 'r', url: 'http://broker.test', json: true }))
    expect(killed.code).toBe(0)
    expect(killed.json).toMatchObject({ kind: 'instance', target: { agent: 'workload-agent', instance: pod }, in_force: true })
    expect(requests.at(-1)).toStrictEqual({ agent: 'workload-agent', instance: pod, reason: 'r' })
    const lifted = await run(() => revokeLift(killed.json!['id'] as string, { url: 'http://broker.test', json: true }))
    expect(lifted.json).toMatchObject({ kind: 'instance', in_force: false })
    const unknown = await run(() => revokeInstance('no-such-agent', 'pod-1', { reason: 'r', url: 'http://broker.test', json: true }))
    expect(unknown.stderr).toMatch(/^mandate: 404 not_found/)
    const forced = await run(() => revokeInstance('no-such-agent', 'pod-1', { reason: 'r', force: true, url: 'http://broker.test', json: true }))
    expect(forced.json).toMatchObject({ kind: 'instance', target: { agent: 'no-such-agent', instance: 'pod-1' } })
    const blank = await run(() => revokeInstance('workload-agent', 'pod 1', { reason: 'r', url: 'http://broker.test', json: true }))
    expect(blank.stderr).toMatch(/^mandate: 400 invalid_request/)
  })
})
