/**
 * Human approval end to end against a real `mandate serve --dev` (a separate
 * process, PGlite under its data dir): the agent asks through
 * `@mandate/client` (`requestApproval`, OpenID CIBA poll mode, with RFC 9396
 * details and a binding message), a person decides with `mandate approvals`
 * (an admin key whose `approver` is the user the agent acts for), and the
 * agent's `waitForApproval` gets the token, or `access_denied`, or
 * `expired_token` when nobody decides in time. Also: a key
 * that names another person may not decide (exit 4), a decision is taken once
 * (409, exit 1), the auth_req_id is never shown, and the client slows down by
 * 5 s when the broker says `slow_down` (CIBA §11).
 *
 * The client's waits are real in the approve and deny cases (the broker's
 * clock is the machine's: a poll sooner than `interval` would be answered
 * slow_down); in the slow_down case they are recorded and skipped, so that
 * the client polls too fast on purpose.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { clientSecret, createClient, MandateClientError, type Clock, type MandateClient, type PendingApproval } from '@mandate/client'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse, stringify } from 'yaml'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'

const root = new URL('../../', import.meta.url).pathname
const bin = join(root, 'bin/mandate.js')
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

/** The built-in dev user issuer (`serve --dev`), whose tokens /dev/users/{sub}/token hands out. */
const DEV_USERS = 'https://users.dev.mandate.invalid'
const AGENT = 'approval-agent'
const AGENT_SECRET = 'approval-agent-secret-2f6b9d1c4e8a0b3d5f7a'
const AUDIENCE = 'https://reports.example'
/** Admin keys: alice's (the user), bob's (another person), an auditor's. */
const KEYS = {
  /** Made by `mandate admin-key alice --role approver --approver ISSUER:alice` in beforeAll, as an operator would. */
  alice: '',
  bob: 'approvals-test-bob-key-8c0a2e4f6b1d3f5a',
  auditor: 'approvals-test-auditor-key-1e3a5c7b9d0f2a4c',
}

const POLICY = `agent: ${AGENT}
owner: platform-team@example.com
purpose: Deletes reports, each deletion approved by the user it acts for.
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${sha256(AGENT_SECRET)} }
users:
  - issuer: ${DEV_USERS}
grants:
  - audience: ${AUDIENCE}
    scopes: [reports:read, reports:delete]
    default_scopes: [reports:read]
    approval: { required: true, approvers: user, timeout: 300s, reuse: none }
    authorization_details:
      report_deletion:
        type: object
        properties:
          report: { type: string }
          reason: { type: string }
        required: [report]
        additionalProperties: false
token_ttl: { default: 300, max: 300 }
`

const OTHER_ADMIN_KEYS = `- name: bob
  sha256: ${sha256(KEYS.bob)}
  roles: [approver]
  approver: { issuer: ${DEV_USERS}, sub: bob }
- name: approvals-auditor
  sha256: ${sha256(KEYS.auditor)}
  roles: [auditor]
`

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

interface ApprovalJson {
  id: string
  status: string
  agent: string
  user: { iss: string; sub: string }
  audience: string
  scopes: string[]
  authorization_details: Record<string, unknown>[]
  binding_message: string | null
  approvers: string
  decided_by: string | null
  decided_via: string | null
  note: string | null
}

const DETAILS = [{ type: 'report_deletion', report: 'q3-revenue', reason: 'superseded by q3-revenue-v2' }]

describe('human approval: @mandate/client and mandate approvals against a running broker', () => {
  let server: ChildProcess
  let dir: string
  let xdg: string
  let base: string
  let serverErr = ''
  let agent: MandateClient

  function mandate(args: string[], key: string): Promise<Run> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MANDATE_URL' && k !== 'MANDATE_ADMIN_KEY'))
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...env, XDG_CONFIG_HOME: xdg, MANDATE_URL: base, MANDATE_ADMIN_KEY: key },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })))
  }

  const userToken = async (sub = 'alice') => {
    const answer = await fetch(`${base}/dev/users/${sub}/token`, { method: 'POST', body: '{"scope":"reports:read reports:delete"}' })
    expect(answer.status).toBe(200)
    return ((await answer.json()) as { access_token: string }).access_token
  }

  /** The pending approval the broker lists for this binding message (the id is the approval's, public; never the auth_req_id). */
  const approvalFor = async (bindingMessage: string): Promise<ApprovalJson> => {
    const r = await mandate(['approvals', 'list', '--status', 'pending', '--agent', AGENT, '--json'], KEYS.auditor)
    expect(r.status, r.stderr).toBe(0)
    const page = JSON.parse(r.stdout) as { approvals: ApprovalJson[]; total: number }
    const found = page.approvals.filter((a) => a.binding_message === bindingMessage)
    expect(found).toHaveLength(1)
    return found[0]!
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-approvals-'))
    xdg = join(dir, 'xdg')
    const policies = join(dir, 'policies')
    await mkdir(xdg)
    await mkdir(policies)
    await writeFile(join(policies, `${AGENT}.yaml`), POLICY)
    // Alice's key as \`mandate admin-key\` makes it: the key, and the config entry naming her as the approver.
    const made = spawnSync(process.execPath, [bin, 'admin-key', 'alice', '--role', 'approver', '--approver', `${DEV_USERS}:alice`], {
      cwd: root,
      encoding: 'utf8',
    })
    expect(made.status, made.stderr).toBe(0)
    KEYS.alice = made.stdout.split('\n')[1]!.trim()
    const entry = (parse(made.stdout.slice(made.stdout.indexOf('for the config file:\n') + 21)) as { admin: { keys: Record<string, unknown>[] } }).admin
      .keys[0]!
    expect(entry).toEqual({ name: 'alice', sha256: sha256(KEYS.alice), roles: ['approver'], approver: { issuer: DEV_USERS, sub: 'alice' } })
    const keysFile = join(dir, 'admin-keys.yaml')
    await writeFile(keysFile, `${stringify([entry])}${OTHER_ADMIN_KEYS}`)
    const port = await freePort()
    base = `http://localhost:${port}`
    const env: Record<string, string | undefined> = {
      ...process.env,
      PORT: String(port),
      MANDATE_DATA_DIR: join(dir, 'data'),
      MANDATE_POLICIES_DIR: policies,
      MANDATE_ADMIN_KEYS_FILE: keysFile,
      LOG_LEVEL: 'warn',
    }
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    delete env['MANDATE_ADMIN_PORT']
    delete env['MANDATE_ISSUER']
    server = spawn(process.execPath, [bin, 'serve', '--dev'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    server.stderr!.on('data', (d: Buffer) => (serverErr += d.toString()))
    server.stderr!.on('data', logSink('approvals test broker stderr'))
    server.stdout!.on('data', logSink('approvals test broker stdout'))
    const deadline = Date.now() + 50_000
    for (;;) {
      try {
        if ((await fetch(`${base}/healthz`)).ok) break
      } catch {
        // not listening yet
      }
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`broker did not start: ${serverErr}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    agent = createClient({ issuer: base, clientId: AGENT, auth: clientSecret(AGENT_SECRET) })
  }, 60_000)

  afterAll(async () => {
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    await rm(dir, { recursive: true, force: true })
  })

  it('the broker advertises CIBA poll mode (RFC 8414), which the client relies on', async () => {
    const metadata = (await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>
    expect(metadata['backchannel_authentication_endpoint']).toBe(`${base}/oauth2/bc-authorize`)
    expect(metadata['backchannel_token_delivery_modes_supported']).toEqual(['poll'])
    expect(metadata['grant_types_supported']).toContain('urn:openid:params:grant-type:ciba')
  })

  it('approve: the user approves with the CLI, waitForApproval gets the token with the approved details', async () => {
    const message = 'Delete report q3-revenue 4711'
    const pending = await agent.requestApproval({
      subjectToken: await userToken(),
      audience: AUDIENCE,
      scope: 'reports:delete',
      authorizationDetails: DETAILS,
      bindingMessage: message,
    })
    expect(pending.authReqId).toEqual(expect.any(String))
    expect(pending.expiresIn).toBeGreaterThan(0)
    expect(pending.expiresIn).toBeLessThanOrEqual(300)
    expect(pending.interval).toBeGreaterThanOrEqual(0)

    const approval = await approvalFor(message)
    expect(approval).toMatchObject({
      status: 'pending',
      agent: AGENT,
      user: { iss: DEV_USERS, sub: 'alice' },
      audience: AUDIENCE,
      scopes: ['reports:delete'],
      authorization_details: DETAILS,
      approvers: 'user',
    })

    // What a person sees: the binding message first and quoted, the details in one line, never the auth_req_id.
    const list = await mandate(['approvals', 'list', '--status', 'pending'], KEYS.auditor)
    expect(list.status, list.stderr).toBe(0)
    expect(list.stdout).toContain(approval.id)
    expect(list.stdout).toContain('report_deletion:')
    const show = await mandate(['approvals', 'show', approval.id], KEYS.auditor)
    expect(show.status, show.stderr).toBe(0)
    expect(show.stdout.split('\n')[0]).toBe(`binding message: "${message}"`)
    expect(show.stdout).toContain('report_deletion: report=q3-revenue reason="superseded by q3-revenue-v2"')
    expect(show.stdout).toMatch(/status\s+│?\s*pending/)
    for (const r of [list, show]) expect(r.stdout + r.stderr).not.toContain(pending.authReqId)

    // An auditor may look but not decide; bob is not the user the grant's approvers name.
    const auditor = await mandate(['approvals', 'approve', approval.id], KEYS.auditor)
    expect(auditor.status).toBe(4)
    const bob = await mandate(['approvals', 'approve', approval.id], KEYS.bob)
    expect(bob.status).toBe(4)
    expect(bob.stderr).toMatch(/^mandate: .*403/)

    const approve = await mandate(['approvals', 'approve', approval.id, '--note', 'yes, v2 replaces it'], KEYS.alice)
    expect(approve.status, approve.stderr).toBe(0)
    expect(approve.stdout).toMatch(new RegExp(`^approved ${approval.id}: ${AGENT} for alice at ${AUDIENCE} \\(reports:delete\\)\n`))
    expect(approve.stdout).toContain(`binding message: "${message}"`)
    expect(approve.stdout).not.toContain(pending.authReqId)
    // A decision is taken once.
    const again = await mandate(['approvals', 'deny', approval.id], KEYS.alice)
    expect(again.status).toBe(1)
    expect(again.stderr).toMatch(/^mandate: 409 /)

    const token = await agent.waitForApproval(pending, { signal: AbortSignal.timeout(60_000) })
    expect(token.tokenType).toBe('Bearer')
    expect(token.audience).toBe(AUDIENCE)
    expect(token.scope).toEqual(['reports:delete'])
    expect(token.authorizationDetails).toEqual(DETAILS)
    const claims = decodeJwt(token.accessToken)
    expect(claims).toMatchObject({ aud: AUDIENCE, sub: 'alice', authorization_details: DETAILS, approval: approval.id })

    const decided = JSON.parse((await mandate(['approvals', 'show', approval.id, '--json'], KEYS.auditor)).stdout) as ApprovalJson
    expect(decided).toMatchObject({
      status: 'issued',
      decided_by: expect.stringContaining('alice') as unknown,
      decided_via: 'admin_api',
      note: 'yes, v2 replaces it',
    })
    // The auth_req_id is spent: its token was issued.
    const spent = await agent.waitForApproval(pending).catch((err: unknown) => err)
    expect(spent).toBeInstanceOf(MandateClientError)
    expect((spent as MandateClientError).error).toBe('invalid_grant')
  }, 120_000)

  it('deny: waitForApproval throws access_denied', async () => {
    const message = 'Delete report q4-forecast 4712'
    const pending = await agent.requestApproval({
      subjectToken: await userToken(),
      audience: AUDIENCE,
      scope: ['reports:delete'],
      authorizationDetails: [{ type: 'report_deletion', report: 'q4-forecast' }],
      bindingMessage: message,
    })
    const approval = await approvalFor(message)
    const deny = await mandate(['approvals', 'deny', approval.id, '--note', 'not mine'], KEYS.alice)
    expect(deny.status, deny.stderr).toBe(0)
    expect(deny.stdout).toMatch(new RegExp(`^denied ${approval.id}: `))
    const err = await agent.waitForApproval(pending, { signal: AbortSignal.timeout(60_000) }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect((err as MandateClientError).error).toBe('access_denied')
    expect((err as MandateClientError).status).toBe(400)
  }, 120_000)

  it('expiry: nobody decides within requested_expiry, waitForApproval throws expired_token', async () => {
    const message = 'Delete report q2-costs 4714'
    const pending = await agent.requestApproval({
      subjectToken: await userToken(),
      audience: AUDIENCE,
      scope: 'reports:delete',
      bindingMessage: message,
      requestedExpiry: 1,
    })
    expect(pending.expiresIn).toBe(1)
    // The first poll comes an interval (longer than 1 s) later: past the expiry.
    const err = await agent.waitForApproval(pending, { signal: AbortSignal.timeout(60_000) }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect((err as MandateClientError).error).toBe('expired_token')
    const r = await mandate(['approvals', 'list', '--status', 'expired', '--agent', AGENT, '--json'], KEYS.auditor)
    expect((JSON.parse(r.stdout) as { approvals: ApprovalJson[] }).approvals.map((a) => a.binding_message)).toContain(message)
  }, 120_000)

  it('slow_down: polled too fast, the client adds 5 s to its interval for every later poll (CIBA §11)', async () => {
    /** Each poll's answer at the token endpoint, read from a copy of the response. */
    const answers: string[] = []
    const sleeps: number[] = []
    const controller = new AbortController()
    const observed: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      if (new URL(new Request(input).url).pathname === '/oauth2/token') {
        const body = (await response.clone().json()) as { error?: string }
        answers.push(body.error ?? String(response.status))
      }
      return response
    }
    const clock: Partial<Clock> = {
      // No real wait: every poll comes at once, faster than the interval allows. Enough polls to see slow_down twice, then stop.
      sleep: (ms, signal) => {
        sleeps.push(ms)
        if (answers.filter((a) => a === 'slow_down').length >= 2 || sleeps.length > 20) controller.abort(new Error('test stops polling'))
        return signal?.aborted === true ? Promise.reject(signal.reason as Error) : Promise.resolve()
      },
    }
    const fast = createClient({ issuer: base, clientId: AGENT, auth: clientSecret(AGENT_SECRET), fetch: observed, clock })
    const message = 'Delete report q1-budget 4713'
    const pending: PendingApproval = await fast.requestApproval({
      subjectToken: await userToken(),
      audience: AUDIENCE,
      scope: 'reports:delete',
      bindingMessage: message,
    })
    const err = await fast.waitForApproval(pending, { signal: controller.signal }).catch((e: unknown) => e)
    expect((err as Error).message).toBe('test stops polling')
    expect(answers).toContain('slow_down')
    expect(answers.every((a) => a === 'slow_down' || a === 'authorization_pending')).toBe(true)
    // Before the first poll: the interval. After each slow_down: 5 s more than before, for good.
    const interval = pending.interval * 1000
    expect(sleeps[0]).toBe(interval)
    let expected = interval
    for (let i = 0; i < answers.length; i++) {
      if (answers[i] === 'slow_down') expected += 5000
      expect(sleeps[i + 1]).toBe(expected)
    }
    // Left pending: deny it, so that it does not count against the agent's pending requests.
    const approval = await approvalFor(message)
    expect((await mandate(['approvals', 'deny', approval.id], KEYS.alice)).status).toBe(0)
  }, 120_000)

  it('the client refuses a request that cannot work before sending it', async () => {
    const subjectToken = 'not-sent'
    await expect(agent.requestApproval({ subjectToken, audience: AUDIENCE, bindingMessage: 'x'.repeat(65) })).rejects.toThrow(TypeError)
    await expect(agent.requestApproval({ subjectToken, audience: AUDIENCE, bindingMessage: 'tab\there' })).rejects.toThrow(TypeError)
    await expect(agent.requestApproval({ subjectToken, audience: AUDIENCE, authorizationDetails: [] })).rejects.toThrow(TypeError)
    await expect(agent.requestApproval({ subjectToken, audience: AUDIENCE, requestedExpiry: 0 })).rejects.toThrow(TypeError)
  })

  it('the broker’s refusal of details the grant does not declare is invalid_authorization_details (RFC 9396 §5)', async () => {
    const err = await agent
      .requestApproval({ subjectToken: await userToken(), audience: AUDIENCE, authorizationDetails: [{ type: 'payment_initiation', amount: '1' }] })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect((err as MandateClientError).error).toBe('invalid_authorization_details')
  })

  it('approvals show of an unknown id exits 1 with the broker’s 404', async () => {
    const r = await mandate(['approvals', 'show', 'apr_AAAAAAAAAAAAAAAAAAAAAA'], KEYS.auditor)
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/^mandate: 404 /)
  })
})
