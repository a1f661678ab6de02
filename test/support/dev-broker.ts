/**
 * `mandate serve --dev` as a separate process, as a reader starts it (the
 * built CLI through bin/mandate.js), on a free port with a data directory of
 * its own; plus the dev flows an agent uses against it: a dev user's token
 * (POST /dev/users/{sub}/token) and a token exchange with the demo agents'
 * public dev secrets (README "Walkthrough").
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { logSink } from './log-sink.js'
import { freePort } from './net.js'
import { stopChild } from './nginx.js'

const root = new URL('../../', import.meta.url).pathname

/** The dev agents' public secrets (policies/dev/). */
export const DEV_AGENTS = {
  'demo-agent': 'demo-secret',
  'demo-subagent': 'demo-sub-secret',
  'demo-payer': 'demo-payer-secret',
} as const
export type DevAgent = keyof typeof DEV_AGENTS

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
export const CIBA = 'urn:openid:params:grant-type:ciba'

export interface DevBroker {
  /** http://127.0.0.1:PORT */
  readonly base: string
  /** What the broker printed on stderr so far, for failure messages. */
  stderr(): string
  /** SIGTERM (it writes its last audit group), SIGKILL after 10 s; removes the data directory. */
  stop(): Promise<void>
}

export async function startDevBroker(name: string): Promise<DevBroker> {
  const port = await freePort()
  const dataDir = await mkdtemp(join(tmpdir(), `mandate-${name}-`))
  let stderr = ''
  const child: ChildProcess = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
    cwd: root,
    env: { ...process.env, PORT: String(port), MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  child.stderr!.on('data', logSink(`${name} broker stderr`))
  child.stdout!.on('data', logSink(`${name} broker stdout`))
  const base = `http://127.0.0.1:${port}`
  const broker: DevBroker = {
    base,
    stderr: () => stderr,
    async stop() {
      await stopChild(child, 'SIGTERM')
      await rm(dataDir, { recursive: true, force: true })
    },
  }
  const deadline = Date.now() + 60_000
  for (;;) {
    try {
      if ((await fetch(`${base}/.well-known/oauth-authorization-server`)).ok) return broker
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      await broker.stop()
      throw new Error(`the dev broker did not start: ${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 200))
  }
}

const basicAuth = (agent: DevAgent) => `Basic ${Buffer.from(`${agent}:${DEV_AGENTS[agent]}`).toString('base64')}`

/** A token of the dev user issuer for `sub`. */
export async function devUserToken(base: string, sub: string, scope: string): Promise<string> {
  const res = await fetch(`${base}/dev/users/${encodeURIComponent(sub)}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ scope }),
  })
  if (!res.ok) throw new Error(`dev user token for ${sub}: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { access_token: string }).access_token
}

/** POSTs `form` to the token endpoint (or `path`) as `agent`, with its dev secret: the answer's status and JSON. */
export async function agentPost(
  base: string,
  agent: DevAgent,
  form: Record<string, string>,
  path = '/oauth2/token',
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: basicAuth(agent), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

/** An RFC 8693 exchange of `subjectToken` by `agent` for `audience` (scope optional). */
export function exchange(base: string, agent: DevAgent, subjectToken: string, audience: string, scope?: string) {
  return agentPost(base, agent, {
    grant_type: TOKEN_EXCHANGE,
    subject_token_type: ACCESS_TOKEN_TYPE,
    subject_token: subjectToken,
    audience,
    ...(scope === undefined ? {} : { scope }),
  })
}
