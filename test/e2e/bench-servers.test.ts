/**
 * The two reference servers of issue 6's benchmark (bench/support/peer.ts,
 * bench/support/floor.ts) really do a token exchange: each, started as its
 * own process from the shared inputs (bench/support/inputs.ts), answers a
 * pre-signed exchange with an RFC 8693 response whose token verifies against
 * its published keys, and refuses a subject token signed by another key.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose'
import { parse } from 'yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Policy } from '../../src/policy/schema.js'
import { ACCESS_TOKEN_TYPE, createRequests, generateInputs, writeInputs, type Inputs, type PreparedRequest } from '../../bench/support/inputs.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

interface Started {
  child: ChildProcess
  base: string
  tokenEndpoint: string
}

/** Starts `script` on a port of the OS's choosing and waits for its ready line. */
async function start(script: string, settingsFile: string): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, script), settingsFile], {
    cwd: root,
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const stderr: string[] = []
  child.stderr!.on('data', (d: Buffer) => stderr.push(String(d)))
  const lines = createInterface({ input: child.stdout! })
  const ready = await new Promise<{ port: number; token_endpoint: string }>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${script} exited ${String(code)}: ${stderr.join('')}`)))
    lines.on('line', (line) => {
      const msg = JSON.parse(line) as { ready?: boolean; port: number; token_endpoint: string }
      if (msg.ready === true) resolve(msg)
    })
  })
  const base = `http://127.0.0.1:${ready.port}`
  return { child, base, tokenEndpoint: `${base}${ready.token_endpoint}` }
}

function post(url: string, body: string): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body })
}

describe('bench reference servers: oidc-provider peer and crypto floor', () => {
  let dir: string
  let inputs: Inputs
  let settingsFile: string
  let good: PreparedRequest[]
  let forged: PreparedRequest[]
  const children: ChildProcess[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-bench-servers-'))
    inputs = generateInputs({ agents: 3, users: 5 })
    settingsFile = (await writeInputs(dir, inputs)).server
    good = await createRequests(inputs.generator, 6)
    const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
    forged = await createRequests(inputs.generator, 2, { subjectKey: otherKey })
  }, 20_000)

  afterAll(async () => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve()
            c.once('exit', () => resolve())
            c.kill('SIGTERM')
          }),
      ),
    )
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('generates the deterministic sizes, real policy files, and keeps private keys out of the server settings', () => {
    const sized = generateInputs({ agents: 8, users: 100 })
    expect(sized.server.agents).toHaveLength(8)
    expect(sized.generator.users).toHaveLength(100)
    for (const agent of sized.server.agents) {
      const policy = Policy.parse(parse(agent.policy))
      expect(policy.agent).toBe(agent.id)
      expect(policy.grants.map((g) => g.audience)).toEqual(agent.grants.map((g) => g.audience))
    }
    const server = JSON.stringify(sized.server.agents) + JSON.stringify(sized.server.idp)
    expect(server).not.toMatch(/"d":/)
    expect(sized.server.idp.jwks.keys[0]).toMatchObject({ kty: 'RSA', alg: 'RS256' })
    const subject = decodeJwt(good[0]!.subjectToken)
    expect(subject).toMatchObject({ iss: inputs.server.idp.issuer, aud: inputs.server.issuer, sub: good[0]!.user })
    expect(subject.exp! - subject.iat!).toBe(3600)
    const assertion = decodeJwt(good[0]!.clientAssertion)
    expect(assertion).toMatchObject({ iss: good[0]!.agent, sub: good[0]!.agent, aud: inputs.server.issuer })
    expect(assertion.exp! - assertion.iat!).toBe(60)
    expect(new Set(good.map((r) => decodeJwt(r.clientAssertion).jti)).size).toBe(good.length)
  })

  for (const [name, script] of [
    ['peer (oidc-provider)', 'bench/support/peer.ts'],
    ['crypto floor (Hono)', 'bench/support/floor.ts'],
  ] as const) {
    describe(name, () => {
      let server: Started
      let jwks: ReturnType<typeof createLocalJWKSet>

      beforeAll(async () => {
        server = await start(script, settingsFile)
        children.push(server.child)
        let jwksUri = `${server.base}/jwks`
        if (script.endsWith('peer.ts')) {
          // The peer's issuer is the shared broker identifier, not its loopback URL: keep only the path.
          const meta = (await (await fetch(`${server.base}/.well-known/openid-configuration`)).json()) as { jwks_uri: string }
          jwksUri = `${server.base}${new URL(meta.jwks_uri).pathname}`
        }
        jwks = createLocalJWKSet((await (await fetch(jwksUri)).json()) as JSONWebKeySet)
      }, 15_000)

      it('exchanges a pre-signed request for an access token that verifies against its JWKS', async () => {
        for (const request of good.slice(0, 3)) {
          const response = await post(server.tokenEndpoint, request.body)
          const body = (await response.json()) as Record<string, unknown>
          expect(response.status, JSON.stringify(body)).toBe(200)
          expect(body).toMatchObject({ issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: inputs.server.tokenTtl, scope: request.scope })
          const { payload, protectedHeader } = await jwtVerify(body['access_token'] as string, jwks, {
            algorithms: ['ES256'],
            issuer: inputs.server.issuer,
            audience: request.audience,
            typ: 'at+jwt',
          })
          expect(protectedHeader.kid).toBe(inputs.server.signing.kid)
          expect(payload).toMatchObject({ sub: request.user, client_id: request.agent, scope: request.scope, act: { sub: request.agent } })
        }
      })

      it('refuses a subject token signed by another key with an OAuth error', async () => {
        const response = await post(server.tokenEndpoint, forged[0]!.body)
        const body = (await response.json()) as Record<string, unknown>
        expect(response.status).toBe(400)
        expect(body['error']).toBe('invalid_request')
        expect(body).not.toHaveProperty('access_token')
      })
    })
  }
})
