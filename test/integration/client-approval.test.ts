/**
 * `@mandate/client`'s human approval (OpenID CIBA poll mode) against a real
 * broker served over HTTP on 127.0.0.1: the test broker of
 * test/support/broker.ts with PGlite (approvals live in the database), its
 * fixed clock shared with the client, so that every wait the client asks for
 * moves the clock instead of sleeping. The person decides through the admin
 * API with a key whose `approver` is the user, alice.
 *
 * As in client.test.ts, the client's injected fetch sends the broker's
 * issuer (https://mandate.test) to the local server, and one stand-in for a
 * network element can answer 503 instead of passing a poll on.
 */
import { createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { clientSecret, createClient, MandateClientError, type MandateClient, type PendingApproval } from '@mandate/client'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { ADMIN_KEYS, AUDIENCE, bearer, BROKER, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { payloadOf } from '../support/tokens.js'

const AGENT = 'approval-agent'
const APPROVER_KEY = 'client-approval-test-alice-key-4c8e2a6b0d1f3e5a'
const TIMEOUT = 300
/** The broker's default `approvals.poll_interval`, seconds. */
const INTERVAL = 5

const POLICY = secretAgentPolicy(AGENT, USER_ISSUER).replace(
  /grants: .*\n/,
  `grants:
  - audience: ${AUDIENCE}
    scopes: [read, write]
    default_scopes: [read]
    approval: { required: true, approvers: user, timeout: ${TIMEOUT}s, reuse: none }
    authorization_details:
      file_deletion:
        type: object
        properties: { path: { type: string } }
        required: [path]
        additionalProperties: false
`,
)

async function listen(handler: (req: Request) => Response | Promise<Response>): Promise<{ server: ServerType; origin: string }> {
  const server = serve({ fetch: handler, hostname: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

interface ApprovalJson {
  id: string
  status: string
  binding_message: string | null
}

describe('@mandate/client human approval against a real broker over HTTP', () => {
  let broker: TestBroker
  let server: ServerType
  let origin: string
  let agent: MandateClient
  /** Every wait the client asked for, ms. */
  let sleeps: number[] = []
  /** Polls of the token endpoint the broker answered, by `error` (or `200`). */
  let answers: string[] = []
  /** Where the client's waits stop (after that many answers) until released, and the signal that they did. */
  let hold: { after: number; reached: () => void; released: Promise<void> } | undefined
  /** Polls the 503 switch answers itself, and the Retry-After it sends. */
  let unavailable = { count: 0, retryAfter: undefined as string | undefined }

  const route: typeof fetch = (input, init) => {
    const request = new Request(input, init)
    return fetch(new Request(request.url.replace(BROKER, origin), request))
  }

  const admin = (method: string, path: string, key: string, body?: object) =>
    broker.mandate.app.request(path, {
      method,
      headers: { ...bearer(key), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })

  /** The pending approval with this binding message, through the admin API (auditor role). */
  const approvalFor = async (bindingMessage: string): Promise<ApprovalJson> => {
    const answer = await admin('GET', `/admin/approvals?status=pending&agent=${AGENT}`, ADMIN_KEYS.auditor)
    expect(answer.status).toBe(200)
    const { approvals } = (await answer.json()) as { approvals: ApprovalJson[] }
    const found = approvals.filter((a) => a.binding_message === bindingMessage)
    expect(found).toHaveLength(1)
    return found[0]!
  }

  const decide = async (bindingMessage: string, decision: 'approve' | 'deny') => {
    const { id } = await approvalFor(bindingMessage)
    const answer = await admin('POST', `/admin/approvals/${id}`, APPROVER_KEY, { decision })
    expect(answer.status).toBe(200)
    return id
  }

  const ask = async (bindingMessage: string, extra: { authorizationDetails?: { type: string; path: string }[] } = {}): Promise<PendingApproval> =>
    agent.requestApproval({ subjectToken: await broker.userToken(), audience: AUDIENCE, scope: 'write', bindingMessage, ...extra })

  beforeAll(async () => {
    broker = await startTestBroker({
      policies: { [`${AGENT}.yaml`]: POLICY },
      embedded: true,
      adminKeys: [
        {
          name: 'alice',
          sha256: createHash('sha256').update(APPROVER_KEY).digest('hex'),
          roles: ['approver'],
          approver: { issuer: USER_ISSUER, sub: 'alice' },
        },
      ],
    })
    ;({ server, origin } = await listen(async (req) => {
      if (new URL(req.url).pathname === '/oauth2/token') {
        if (unavailable.count > 0) {
          unavailable.count--
          const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' }
          if (unavailable.retryAfter !== undefined) headers['retry-after'] = unavailable.retryAfter
          return new Response(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'try again' }), { status: 503, headers })
        }
        const response = await broker.mandate.app.fetch(req)
        answers.push(response.status === 200 ? '200' : ((await response.clone().json()) as { error: string }).error)
        return response
      }
      return broker.mandate.app.fetch(req)
    }))
    agent = createClient({
      issuer: BROKER,
      clientId: AGENT,
      auth: clientSecret(SECRET),
      fetch: route,
      clock: {
        // One clock for broker and client; a wait moves it, and nothing really sleeps.
        now: () => broker.now() * 1000,
        sleep: async (ms) => {
          sleeps.push(ms)
          // A test that decides while the client polls holds the client here, between two polls.
          if (hold !== undefined && answers.length >= hold.after) {
            hold.reached()
            await hold.released
          }
          broker.advance(Math.ceil(ms / 1000))
        },
      },
    })
  }, 60_000)

  afterAll(async () => {
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      ;(server as unknown as { closeAllConnections(): void }).closeAllConnections()
    })
    await broker.close()
  })

  beforeEach(() => {
    hold = undefined
    sleeps = []
    answers = []
    unavailable = { count: 0, retryAfter: undefined }
  })
  afterEach(() => broker.advance(3600))

  it('approved before the first poll: one poll, one interval after the request, and the token with the approved details', async () => {
    const details = [{ type: 'file_deletion', path: '/reports/q3.pdf' }]
    const pending = await ask('Delete q3.pdf', { authorizationDetails: details })
    expect(pending).toMatchObject({ expiresIn: TIMEOUT, interval: INTERVAL, audience: AUDIENCE, scope: ['write'] })
    expect(pending.expiresAt).toBe((broker.now() + TIMEOUT) * 1000)
    const id = await decide('Delete q3.pdf', 'approve')
    const token = await agent.waitForApproval(pending)
    expect(sleeps).toEqual([INTERVAL * 1000])
    expect(answers).toEqual(['200'])
    expect(token).toMatchObject({ tokenType: 'Bearer', audience: AUDIENCE, scope: ['write'], authorizationDetails: details })
    expect(token.expiresAt).toBe((broker.now() + 300) * 1000)
    expect(payloadOf(token.accessToken)).toMatchObject({ sub: 'alice', aud: AUDIENCE, act: { sub: AGENT }, authorization_details: details, approval: id })
  })

  it('with a DPoP key, the poll carries a proof and the approved token is bound to the key (RFC 9449 §5)', async () => {
    const dpopAgent = createClient({
      issuer: BROKER,
      clientId: AGENT,
      auth: clientSecret(SECRET),
      fetch: route,
      dpop: true,
      clock: { now: () => broker.now() * 1000, sleep: (ms) => Promise.resolve(broker.advance(Math.ceil(ms / 1000))) },
    })
    const pending = await dpopAgent.requestApproval({
      subjectToken: await broker.userToken(),
      audience: AUDIENCE,
      scope: 'write',
      bindingMessage: 'Delete q5.pdf',
    })
    await decide('Delete q5.pdf', 'approve')
    const token = await dpopAgent.waitForApproval(pending)
    expect(answers).toEqual(['200'])
    expect(token.tokenType).toBe('DPoP')
    expect(payloadOf(token.accessToken)['cnf']).toEqual({ jkt: await dpopAgent.dpopThumbprint() })
  })

  it('pending for a while: polls every interval until the approval, then the token', async () => {
    const pending = await ask('Delete q4.pdf')
    // Three polls, then the client is held between two polls while the person decides.
    let release = () => {}
    const reached = new Promise<void>((resolve) => {
      hold = { after: 3, reached: resolve, released: new Promise<void>((r) => (release = r)) }
    })
    const waiting = agent.waitForApproval(pending)
    await reached
    await decide('Delete q4.pdf', 'approve')
    release()
    const token = await waiting
    expect(token.authorizationDetails).toEqual([])
    expect(answers).toEqual(['authorization_pending', 'authorization_pending', 'authorization_pending', '200'])
    expect(sleeps.every((ms) => ms === INTERVAL * 1000)).toBe(true)
    expect(sleeps).toHaveLength(answers.length)
  })

  it('denied: access_denied, after which the auth_req_id is spent', async () => {
    const pending = await ask('Delete q1.pdf')
    await decide('Delete q1.pdf', 'deny')
    const err = await agent.waitForApproval(pending).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect(err).toMatchObject({ error: 'access_denied', status: 400, attempts: 1 })
  })

  it('nobody decides: polls every interval until the broker says expired_token at the timeout', async () => {
    const pending = await ask('Delete q2.pdf')
    const err = await agent.waitForApproval(pending).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect((err as MandateClientError).error).toBe('expired_token')
    expect(sleeps).toHaveLength(TIMEOUT / INTERVAL)
    expect(answers.filter((a) => a === 'authorization_pending')).toHaveLength(TIMEOUT / INTERVAL - 1)
    expect(answers.at(-1)).toBe('expired_token')
  })

  it('a 503 while polling is waited out (Retry-After, at least the interval), then polling goes on', async () => {
    const pending = await ask('Delete q5.pdf')
    await decide('Delete q5.pdf', 'approve')
    unavailable = { count: 2, retryAfter: '12' }
    const token = await agent.waitForApproval(pending)
    expect(token.scope).toEqual(['write'])
    // The interval before the first poll, then Retry-After twice (longer than the interval), then the token.
    expect(sleeps).toEqual([INTERVAL * 1000, 12_000, 12_000])
    expect(answers).toEqual(['200'])
  })

  it('aborted: the wait rejects with the signal’s reason, and the request stays pending', async () => {
    const pending = await ask('Delete q6.pdf')
    const controller = new AbortController()
    controller.abort(new Error('the user cancelled'))
    await expect(agent.waitForApproval(pending, { signal: controller.signal })).rejects.toThrow('the user cancelled')
    expect((await approvalFor('Delete q6.pdf')).status).toBe('pending')
  })

  it('details of a type the grant does not declare: invalid_authorization_details (RFC 9396 §5), nothing stored', async () => {
    const err = await agent
      .requestApproval({ subjectToken: await broker.userToken(), audience: AUDIENCE, authorizationDetails: [{ type: 'payment_initiation', amount: '1' }] })
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ error: 'invalid_authorization_details', status: 400 })
  })

  it('an audience that needs no approval: invalid_request (the agent exchanges the token instead)', async () => {
    const plain = createClient({ issuer: BROKER, clientId: 'secret-agent', auth: clientSecret(SECRET), fetch: route })
    const err = await plain.requestApproval({ subjectToken: await broker.userToken(), audience: AUDIENCE, scope: 'read' }).catch((e: unknown) => e)
    expect(err).toMatchObject({ error: 'invalid_request', status: 400 })
  })

  it('getToken for a grant that needs approval: interaction_required, the cue to call requestApproval', async () => {
    const err = await agent.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE, scope: 'write' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect((err as MandateClientError).error).toBe('interaction_required')
  })
})
