/**
 * An agent that calls a Mandate-protected MCP server for its user:
 *
 * 1. it asks the server without a token and reads `resource_metadata` from
 *    the 401 challenge (MCP authorization, 2025-11-25: protected resource
 *    metadata discovery), then that RFC 9728 document: the resource's
 *    identifier and the broker that issues tokens for it;
 * 2. it exchanges its user's token at the broker (@mandate/client, RFC 8693)
 *    for a token whose audience is that resource, with the scopes its task
 *    needs and no more;
 * 3. it calls tools with the SDK's client over Streamable HTTP, the token in
 *    `Authorization: Bearer` (client.fetch attaches it, and gets a new one
 *    once when the server says the token is invalid);
 * 4. on 403 `insufficient_scope` it steps up: it asks the broker for the
 *    scopes it held plus those the challenge names (the client accumulates
 *    them, as SEP-2350 has it) and calls once more. The broker grants only
 *    what the agent's policy allows.
 *
 * Run: `node examples/mcp/agent.ts` (Node 22.18+) with MCP_URL, USER_TOKEN,
 * MANDATE_CLIENT_SECRET, and optionally MANDATE_CLIENT_ID (default mcp-agent).
 * It lists the user's tickets and prints them.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { discoverOAuthProtectedResourceMetadata, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js'
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { clientSecret, createClient } from '@mandate/client'

export interface AgentOptions {
  /** The MCP server's URL, e.g. https://mcp.example.com/mcp. */
  readonly mcpUrl: string
  /** The user's access token, from the identity provider the broker trusts. */
  readonly userToken: string
  readonly clientId: string
  readonly clientSecret: string
  /** The scopes to start with. Default `tickets:read`: the least the task needs. */
  readonly scopes?: readonly string[]
}

/** A challenge the server answered with (RFC 6750 §3), as the agent saw it. */
export interface Challenge {
  readonly status: number
  readonly error: string | undefined
  readonly scope: string | undefined
  readonly resourceMetadata: string | undefined
}

export interface Agent {
  /** The RFC 9728 `resource`: the audience of the agent's tokens. */
  readonly resource: string
  /** The broker, from `authorization_servers`. */
  readonly issuer: string
  /** The scopes the agent asks tokens for; a step-up adds to them. */
  readonly scopes: ReadonlySet<string>
  /** Every 401 and 403 challenge the server sent, oldest first. */
  readonly challenges: readonly Challenge[]
  /** Calls a tool; steps up once on 403 insufficient_scope. Throws `StreamableHTTPError` or `MandateClientError` when refused. */
  callTool(name: string, args?: Record<string, unknown>): Promise<string>
  close(): Promise<void>
}

function challengeOf(res: Response): Challenge {
  const { error, scope, resourceMetadataUrl } = extractWWWAuthenticateParams(res)
  return { status: res.status, error, scope, resourceMetadata: resourceMetadataUrl?.href }
}

export async function connectAgent(options: AgentOptions): Promise<Agent> {
  // 1. Discovery: the 401 names the metadata; the metadata names the resource and the broker.
  const probe = await fetch(options.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'ping' }),
  })
  await probe.body?.cancel()
  const first = challengeOf(probe)
  if (probe.status !== 401 || first.resourceMetadata === undefined) throw new Error(`expected a 401 naming resource_metadata, got ${probe.status}`)
  const metadata = await discoverOAuthProtectedResourceMetadata(options.mcpUrl, { resourceMetadataUrl: first.resourceMetadata })
  // RFC 9728 §3.3: the document must be for the resource the agent is talking to.
  if (metadata.resource.replace(/\/$/, '') !== options.mcpUrl.replace(/\/$/, '')) throw new Error(`metadata is for ${metadata.resource}, not ${options.mcpUrl}`)
  const issuer = metadata.authorization_servers?.[0]
  if (issuer === undefined) throw new Error('the metadata names no authorization server')
  const resource = metadata.resource

  // 2. The broker, as this agent.
  const mandate = createClient({ issuer, clientId: options.clientId, auth: clientSecret(options.clientSecret) })
  const scopes = new Set(options.scopes ?? ['tickets:read'])
  const challenges: Challenge[] = [first]
  const authorized = mandate.fetch(options.userToken, {
    audienceFor: (url) => (url.href.startsWith(resource) ? { audience: resource, scope: [...scopes] } : undefined),
  })
  const recording = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const res = await authorized(input, init)
    if (res.status === 401 || res.status === 403) challenges.push(challengeOf(res))
    return res
  }

  // 3. The SDK's client over Streamable HTTP, every request through the Mandate fetch.
  const client = new Client({ name: 'mandate-example-agent', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(options.mcpUrl), { fetch: recording }))

  async function call(name: string, args: Record<string, unknown>): Promise<string> {
    const result = await client.callTool({ name, arguments: args })
    const text = (result.content as { type: string; text?: string }[]).map((c) => c.text ?? '').join('\n')
    if (result.isError === true) throw new Error(`${name}: ${text}`)
    return text
  }

  return {
    resource,
    issuer,
    scopes,
    challenges,
    async callTool(name, args = {}) {
      try {
        return await call(name, args)
      } catch (err) {
        // 4. Step-up: a 403 insufficient_scope names the scopes this call needs.
        const last = challenges.at(-1)
        if (!(err instanceof StreamableHTTPError && err.code === 403 && last?.error === 'insufficient_scope' && last.scope !== undefined)) throw err
        for (const s of last.scope.split(' ')) scopes.add(s)
        return call(name, args)
      }
    },
    close: () => client.close(),
  }
}

if (import.meta.main) {
  const env = (name: string) => {
    const value = process.env[name]
    if (value === undefined || value === '') throw new Error(`set ${name}`)
    return value
  }
  const agent = await connectAgent({
    mcpUrl: env('MCP_URL'),
    userToken: env('USER_TOKEN'),
    clientId: process.env['MANDATE_CLIENT_ID'] ?? 'mcp-agent',
    clientSecret: env('MANDATE_CLIENT_SECRET'),
  })
  console.log(`resource ${agent.resource}, authorization server ${agent.issuer}`)
  console.log(`tickets.list: ${await agent.callTool('tickets.list')}`)
  await agent.close()
}
