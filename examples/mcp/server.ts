/**
 * An MCP server (Streamable HTTP, @modelcontextprotocol/sdk) protected by
 * Mandate, as the MCP authorization spec (2025-11-25) asks of a server:
 *
 * - it is an OAuth resource server: RFC 9728 metadata at
 *   `/.well-known/oauth-protected-resource/mcp` names the broker as the
 *   authorization server, and a request without a token gets 401 with
 *   `WWW-Authenticate: Bearer resource_metadata="…"`;
 * - it takes only tokens issued for it (`aud` = its resource URL), checked
 *   locally by @mandate/verifier, with every kill seen within the second;
 * - each tool names the scope it needs: a call whose token lacks it gets
 *   403 `insufficient_scope` with `scope` set to that tool's scopes alone
 *   (RFC 6750 §3.1), which is what an MCP client steps up with.
 *
 * Run: `node examples/mcp/server.ts` (Node 22.18+ strips the types) with
 * MANDATE_ISSUER, MANDATE_RS_SECRET, and optionally MCP_RESOURCE (default
 * http://localhost:3000/mcp), MANDATE_RS_ID (default rs/mcp), PORT.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js'
import { createVerifier, type Verifier } from '@mandate/verifier'
import { mandateAuth, mandateResourceMetadata } from '@mandate/verifier/express'
import * as z from 'zod/v4'

/** The scopes each tool needs. A call to a tool not listed needs only a valid token (the SDK then answers "unknown tool"). */
export const TOOL_SCOPES: Readonly<Record<string, readonly string[]>> = {
  'tickets.list': ['tickets:read'],
  'tickets.close': ['tickets:write'],
}

interface Ticket {
  id: string
  title: string
  open: boolean
}

/** Each user's tickets, in memory: the example's stand-in for a ticket system. */
function ticketStore(): (user: string) => Ticket[] {
  const byUser = new Map<string, Ticket[]>()
  return (user) => {
    let tickets = byUser.get(user)
    if (tickets === undefined) {
      tickets = [
        { id: 'T-1', title: 'Printer on fire', open: true },
        { id: 'T-2', title: 'VPN drops every hour', open: true },
      ]
      byUser.set(user, tickets)
    }
    return tickets
  }
}

/** Defence in depth: the HTTP layer checked the scope already; a tool never runs on a token that lacks its own. */
function hasScopes(auth: AuthInfo | undefined, tool: string): auth is AuthInfo {
  return auth !== undefined && (TOOL_SCOPES[tool] ?? []).every((s) => auth.scopes.includes(s))
}

function mcpServerFor(tickets: (user: string) => Ticket[]): McpServer {
  const server = new McpServer({ name: 'mandate-tickets', version: '1.0.0' })
  const refused = { isError: true, content: [{ type: 'text' as const, text: 'not authorized for this tool' }] }
  server.registerTool('tickets.list', { description: "Lists the user's tickets", inputSchema: {} }, (_args, extra) => {
    if (!hasScopes(extra.authInfo, 'tickets.list')) return refused
    const user = String(extra.authInfo.extra?.['sub'])
    return { content: [{ type: 'text', text: JSON.stringify(tickets(user)) }] }
  })
  server.registerTool('tickets.close', { description: 'Closes one of the user’s tickets', inputSchema: { id: z.string().max(64) } }, ({ id }, extra) => {
    if (!hasScopes(extra.authInfo, 'tickets.close')) return refused
    const ticket = tickets(String(extra.authInfo.extra?.['sub'])).find((t) => t.id === id)
    if (ticket === undefined) return { isError: true, content: [{ type: 'text', text: `no ticket ${id}` }] }
    ticket.open = false
    return { content: [{ type: 'text', text: `closed ${id}` }] }
  })
  return server
}

/** The tools a JSON-RPC message (or a batch of them) calls. */
function toolsCalled(body: unknown): string[] {
  const messages: unknown[] = Array.isArray(body) ? body : [body]
  return messages.flatMap((m) => {
    if (typeof m !== 'object' || m === null) return []
    const { method, params } = m as { method?: unknown; params?: { name?: unknown } }
    return method === 'tools/call' && typeof params?.name === 'string' ? [params.name] : []
  })
}

export interface TicketServerOptions {
  /** The broker's issuer. */
  readonly issuer: string
  /** This MCP server's canonical URL (RFC 9728 `resource`, the tokens' audience), e.g. https://mcp.example.com/mcp. */
  readonly resource: string
  /** Its identity at the broker (`resource_servers`), for the revocation feed. */
  readonly credentials: { readonly clientId: string; readonly clientSecret: string }
  readonly port?: number
  /** Where to listen. Default 127.0.0.1, where the SDK's DNS-rebinding protection is on. */
  readonly host?: string
}

export interface TicketServer {
  readonly url: string
  readonly verifier: Verifier
  close(): Promise<void>
}

export async function startTicketServer(options: TicketServerOptions): Promise<TicketServer> {
  const { resource } = options
  const verifier = createVerifier({ issuer: options.issuer, audience: resource, resource, credentials: options.credentials })
  await verifier.ready()
  const tickets = ticketStore()
  const host = options.host ?? '127.0.0.1'
  const app = createMcpExpressApp({ host })
  app.use(mandateResourceMetadata(verifier, { scopesSupported: [...new Set(Object.values(TOOL_SCOPES).flat())] }))

  // One guard per scope set, built once. The body is parsed (the SDK's express.json) before the
  // token is checked because the scope a call needs depends on the tool it names.
  const guards = new Map<string, RequestHandler>()
  const guardFor = (scopes: readonly string[]): RequestHandler => {
    const key = [...new Set(scopes)].sort().join(' ')
    let guard = guards.get(key)
    if (guard === undefined) guards.set(key, (guard = mandateAuth(verifier, { scopes: key === '' ? [] : key.split(' ') })))
    return guard
  }
  const authorize = (req: Request, res: Response, next: NextFunction) => guardFor(toolsCalled(req.body).flatMap((t) => TOOL_SCOPES[t] ?? []))(req, res, next)

  app.post(new URL(resource).pathname, authorize, async (req: Request, res: Response) => {
    const claims = req.mandate!
    // What the SDK hands each tool as `extra.authInfo`.
    const auth: AuthInfo = {
      token: /^Bearer +(\S+)/i.exec(req.headers.authorization ?? '')![1]!,
      clientId: claims.client_id,
      scopes: claims.scope.split(' '),
      expiresAt: claims.exp,
      resource: new URL(resource),
      extra: { sub: claims.sub, act: claims.act },
    }
    const authenticated = Object.assign(req, { auth })
    // Stateless: a server and transport per request (the SDK's stateless example), so no session outlives its token.
    const server = mcpServerFor(tickets)
    const transport = new StreamableHTTPServerTransport({}) // no sessionIdGenerator: stateless
    res.on('close', () => {
      void transport.close()
      void server.close()
    })
    try {
      await server.connect(transport)
      await transport.handleRequest(authenticated, res, req.body)
    } catch {
      if (!res.headersSent) res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'internal error' }, id: null })
    }
  })
  // Stateless: no server-initiated stream (GET) and no session to end (DELETE), as in the SDK's example.
  app.all(new URL(resource).pathname, (_req, res) => {
    res
      .status(405)
      .set('Allow', 'POST')
      .json({ jsonrpc: '2.0', error: { code: -32000, message: 'method not allowed' }, id: null })
  })

  const listener: Server = app.listen(options.port ?? 0, host)
  await new Promise<void>((resolve, reject) => {
    listener.once('listening', resolve)
    listener.once('error', reject)
  })
  const { port } = listener.address() as AddressInfo
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}${new URL(resource).pathname}`,
    verifier,
    async close() {
      await new Promise<void>((resolve) => {
        listener.close(() => resolve())
        listener.closeAllConnections()
      })
      await verifier.close()
    },
  }
}

if (import.meta.main) {
  const issuer = process.env['MANDATE_ISSUER']
  const secret = process.env['MANDATE_RS_SECRET']
  if (issuer === undefined || secret === undefined) throw new Error('set MANDATE_ISSUER and MANDATE_RS_SECRET')
  const port = Number(process.env['PORT'] ?? 3000)
  const server = await startTicketServer({
    issuer,
    resource: process.env['MCP_RESOURCE'] ?? `http://localhost:${port}/mcp`,
    credentials: { clientId: process.env['MANDATE_RS_ID'] ?? 'rs/mcp', clientSecret: secret },
    port,
  })
  console.log(`MCP server listening on ${server.url}`)
  process.once('SIGTERM', () => void server.close().then(() => process.exit(0)))
}
