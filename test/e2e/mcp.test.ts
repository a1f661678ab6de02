/**
 * examples/mcp as written, end to end: `mandate serve --dev` (a separate
 * process; the user token comes from its built-in dev issuer, the upstream
 * IdP here) with a `resource_servers` entry and an agent policy for the MCP
 * server; examples/mcp/server.ts run by `node` as a user runs it, once per
 * Node line of `packageRuntimes()`; examples/mcp/agent.ts run by `node` too,
 * and imported here to time a kill.
 *
 * - without a token the server answers 401 with a bare challenge naming its
 *   RFC 9728 metadata, which names the broker; the agent discovers it from
 *   there, gets a Mandate token for the server's resource and calls a tool;
 * - a tool whose scope the token lacks gets 403 `insufficient_scope` with
 *   `scope="tickets:write"`, and the agent steps up with it;
 * - a kill of the agent through the admin API is enforced by every server
 *   within 100 ms of the broker acknowledging it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { clientSecret, createClient } from '@mandate/client'
import { connectAgent } from '../../examples/mcp/agent.js'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'
import { packageRuntimes, type NodeRuntime } from '../support/node-runtimes.js'

const root = new URL('../../', import.meta.url).pathname
const RS_SECRET = randomBytes(24).toString('base64url')
const AGENT_SECRET = randomBytes(24).toString('base64url')
const DEV_USER_ISSUER = 'https://users.dev.mandate.invalid'
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

interface Mcp {
  readonly runtime: NodeRuntime
  /** Its URL and RFC 9728 resource: http://127.0.0.1:<port>/mcp. */
  readonly resource: string
  readonly metadataUrl: string
}

async function waitFor(what: string, probe: () => Promise<boolean>, ms: number, exited: () => boolean): Promise<void> {
  const deadline = performance.now() + ms
  for (;;) {
    if (await probe().catch(() => false)) return
    if (exited() || performance.now() > deadline) throw new Error(`${what} did not come up`)
    // Polls a starting process, bounded by the deadline above.
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A JSON-RPC `tools/call` over Streamable HTTP with `token`, as the SDK's client sends it. */
function callTool(resource: string, name: string, token?: string): Promise<Response> {
  return fetch(resource, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: name === 'tickets.close' ? { id: 'T-2' } : {} } }),
  })
}

describe('examples/mcp: an MCP server protected by Mandate, and an agent calling it', () => {
  let dir: string
  let issuer: string
  let broker: ChildProcess
  const children: ChildProcess[] = []
  const servers: Mcp[] = []
  let userToken: string
  let brokerErr = ''
  const figures: Record<string, number> = {}

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-mcp-'))
    const runtimes = packageRuntimes()
    for (const runtime of runtimes) {
      const port = await freePort()
      servers.push({ runtime, resource: `http://127.0.0.1:${port}/mcp`, metadataUrl: `http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp` })
    }
    const audiences = servers.map((s) => s.resource)
    await mkdir(join(dir, 'policies'))
    await writeFile(
      join(dir, 'policies', 'mcp-agent.yaml'),
      `agent: mcp-agent
owner: e2e@example.com
purpose: reads and closes the user's tickets through the MCP server (examples/mcp)
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${sha256(AGENT_SECRET)} }
users: [{ issuer: ${DEV_USER_ISSUER} }]
grants:
${audiences.map((a) => `  - { audience: ${JSON.stringify(a)}, scopes: [tickets:read, tickets:write], default_scopes: [tickets:read] }`).join('\n')}
token_ttl: { default: 300, max: 300 }
`,
    )
    const port = await freePort()
    issuer = `http://localhost:${port}`
    const config = join(dir, 'mandate.yaml')
    await writeFile(
      config,
      `policies_dir: ${JSON.stringify(join(dir, 'policies'))}
resource_servers:
  - id: rs/mcp
    audiences: [${audiences.map((a) => JSON.stringify(a)).join(', ')}]
    authentication: { method: client_secret_basic, secret_sha256: ${sha256(RS_SECRET)} }
`,
    )
    const env: Record<string, string | undefined> = { ...process.env, PORT: String(port), MANDATE_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'warn' }
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    delete env['MANDATE_ADMIN_PORT']
    delete env['MANDATE_POLICIES_DIR']
    broker = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev', '--config', config], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    broker.stderr!.on('data', (d: Buffer) => (brokerErr += d.toString()))
    broker.stderr!.on('data', logSink('mcp broker stderr'))
    broker.stdout!.on('data', logSink('mcp broker stdout'))
    await waitFor(
      `the broker (${brokerErr})`,
      async () => (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).ok,
      50_000,
      () => broker.exitCode !== null,
    )

    for (const s of servers) {
      let output = ''
      const child = spawn(s.runtime.bin, [join(root, 'examples/mcp/server.ts')], {
        cwd: root,
        env: { PATH: process.env['PATH'], MANDATE_ISSUER: issuer, MANDATE_RS_SECRET: RS_SECRET, MCP_RESOURCE: s.resource, PORT: new URL(s.resource).port },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      children.push(child)
      child.stdout.on('data', (d: Buffer) => (output += d.toString()))
      child.stderr.on('data', (d: Buffer) => (output += d.toString()))
      await waitFor(
        `the MCP server on ${s.runtime.name} (${output})`,
        () => Promise.resolve(output.includes('listening')),
        20_000,
        () => child.exitCode !== null,
      )
    }

    const user = await fetch(`${issuer}/dev/users/alice/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ scope: 'tickets:read tickets:write' }),
    })
    expect(user.status).toBe(200)
    userToken = ((await user.json()) as { access_token: string }).access_token
  }, 90_000)

  afterAll(async () => {
    for (const child of [...children, broker]) {
      if (child === undefined || child.exitCode !== null) continue
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
    console.log(`examples/mcp figures: ${JSON.stringify(figures)}`)
  })

  it('answers no token with 401 naming its RFC 9728 metadata, which names the broker; the agent (node) discovers it and lists tickets', async () => {
    for (const s of servers) {
      const bare = await callTool(s.resource, 'tickets.list')
      expect(bare.status, s.runtime.name).toBe(401)
      expect(bare.headers.get('www-authenticate'), s.runtime.name).toBe(`Bearer realm="${s.resource}", resource_metadata="${s.metadataUrl}"`)
      const metadata = await fetch(s.metadataUrl)
      expect(await metadata.json(), s.runtime.name).toStrictEqual({
        resource: s.resource,
        authorization_servers: [issuer],
        scopes_supported: ['tickets:read', 'tickets:write'],
        bearer_methods_supported: ['header'],
      })

      // The agent as a user runs it, on the same Node line as the server.
      const run = spawnSync(s.runtime.bin, [join(root, 'examples/mcp/agent.ts')], {
        cwd: root,
        encoding: 'utf8',
        timeout: 30_000,
        env: { PATH: process.env['PATH'], MCP_URL: s.resource, USER_TOKEN: userToken, MANDATE_CLIENT_SECRET: AGENT_SECRET },
      })
      expect(run.status, `${s.runtime.name}: ${run.stderr}`).toBe(0)
      const lines = run.stdout.trim().split('\n')
      expect(lines[0], s.runtime.name).toBe(`resource ${s.resource}, authorization server ${issuer}`)
      expect(JSON.parse(lines[1]!.replace(/^tickets\.list: /, '')), s.runtime.name).toEqual([
        { id: 'T-1', title: 'Printer on fire', open: true },
        { id: 'T-2', title: 'VPN drops every hour', open: true },
      ])
    }
  })

  it('answers a tool call whose token lacks the tool’s scope with 403 insufficient_scope, scope="tickets:write"; the agent steps up', async () => {
    const mandate = createClient({ issuer, clientId: 'mcp-agent', auth: clientSecret(AGENT_SECRET) })
    for (const s of servers) {
      const { accessToken, scope } = await mandate.getToken({ subjectToken: userToken, audience: s.resource, scope: 'tickets:read' })
      expect(scope).toEqual(['tickets:read'])
      expect((await callTool(s.resource, 'tickets.list', accessToken)).status, s.runtime.name).toBe(200)
      const refused = await callTool(s.resource, 'tickets.close', accessToken)
      expect(refused.status, s.runtime.name).toBe(403)
      expect(refused.headers.get('www-authenticate'), s.runtime.name).toBe(
        `Bearer realm="${s.resource}", error="insufficient_scope", error_description="token lacks a required scope", scope="tickets:write", resource_metadata="${s.metadataUrl}"`,
      )
      expect(await refused.json()).toStrictEqual({ error: 'insufficient_scope', error_description: 'token lacks a required scope' })

      const agent = await connectAgent({ mcpUrl: s.resource, userToken, clientId: 'mcp-agent', clientSecret: AGENT_SECRET })
      try {
        expect(await agent.callTool('tickets.close', { id: 'T-1' })).toBe('closed T-1')
        expect(agent.challenges.map((c) => [c.status, c.error, c.scope, c.resourceMetadata])).toEqual([
          [401, undefined, undefined, s.metadataUrl],
          [403, 'insufficient_scope', 'tickets:write', s.metadataUrl],
        ])
        expect([...agent.scopes]).toEqual(['tickets:read', 'tickets:write'])
      } finally {
        await agent.close()
      }
    }
  })

  // Last: it kills the agent.
  it('refuses the agent within 100 ms of the admin API acknowledging its kill, on every server', async () => {
    const mandate = createClient({ issuer, clientId: 'mcp-agent', auth: clientSecret(AGENT_SECRET) })
    const agents = await Promise.all(servers.map((s) => connectAgent({ mcpUrl: s.resource, userToken, clientId: 'mcp-agent', clientSecret: AGENT_SECRET })))
    try {
      const tokens: string[] = []
      for (const [i, s] of servers.entries()) {
        expect(await agents[i]!.callTool('tickets.list')).toContain('T-1')
        tokens.push((await mandate.getToken({ subjectToken: userToken, audience: s.resource })).accessToken)
      }
      const kill = await fetch(`${issuer}/admin/revocations`, {
        method: 'POST',
        headers: { authorization: 'Bearer demo-admin-key', 'content-type': 'application/json' },
        body: JSON.stringify({ agent: 'mcp-agent', reason: 'mcp e2e test' }),
      })
      expect(kill.status).toBe(201)
      const acknowledged = performance.now()
      // Polled as fast as each server answers: the bound is the kill switch's (docs/ARCHITECTURE.md), not this loop's.
      const refusals = await Promise.all(
        servers.map(async (s, i) => {
          while (performance.now() - acknowledged < 1_000) {
            const res = await callTool(s.resource, 'tickets.list', tokens[i])
            if (res.status !== 200) return { s, res, ms: Math.round(performance.now() - acknowledged) }
            await res.body?.cancel()
          }
          return { s, res: undefined, ms: Infinity }
        }),
      )
      for (const { s, res, ms } of refusals) {
        figures[`killToRefusalMs ${s.runtime.name}`] = ms
        expect(res?.status, s.runtime.name).toBe(401)
        expect(res?.headers.get('www-authenticate'), s.runtime.name).toMatch(/error="invalid_token", error_description="token revoked"/)
        expect(ms, s.runtime.name).toBeLessThan(100)
      }
      // The agent's own call: refused by the server, then by the broker when it asks for a new token.
      for (const agent of agents) await expect(agent.callTool('tickets.list')).rejects.toMatchObject({ name: 'MandateClientError' })
    } finally {
      await Promise.all(agents.map((a) => a.close()))
    }
  }, 60_000)
})
