/**
 * The servers of `npm run bench` really do a token exchange: the two
 * references (bench/support/peer.ts, bench/support/floor.ts) and Mandate
 * itself (`mandate serve`, embedded, with the config the benchmark writes),
 * each started as its own process from the shared inputs
 * (bench/support/inputs.ts), answer a pre-signed exchange with an RFC 8693
 * response whose token verifies against their published keys, and refuse a
 * subject token signed by another key. The load generator
 * (bench/support/load.ts) drives the floor and counts what it got.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose'
import { parse } from 'yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Policy } from '../../src/policy/schema.js'
import {
  ACCESS_TOKEN_TYPE,
  createRequests,
  generateInputs,
  mandateConfig,
  signingKeySet,
  writeInputs,
  type Inputs,
  type PreparedRequest,
} from '../../bench/support/inputs.js'
import type { LoadResult } from '../../bench/support/load.js'
import { freePort } from '../support/net.js'

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
  child.stderr.on('data', (d: Buffer) => stderr.push(String(d)))
  const lines = createInterface({ input: child.stdout })
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

/** `mandate serve` (embedded: no DATABASE_URL, no REDIS_URL) with the config file the benchmark writes; ready once /readyz says so. */
async function startMandate(dir: string, inputs: Inputs, policiesDir: string, idpJwksUri: string): Promise<Started> {
  const port = await freePort()
  const signingKeysFile = join(dir, 'signing-keys.json')
  await writeFile(signingKeysFile, JSON.stringify(signingKeySet(inputs.server)), { mode: 0o600 })
  const config = join(dir, 'mandate.yaml')
  await writeFile(config, mandateConfig(inputs.server, { port, policiesDir, dataDir: join(dir, 'mandate-data'), signingKeysFile, idpJwksUri }))
  const env: NodeJS.ProcessEnv = { ...process.env, MANDATE_CONFIG: config, LOG_LEVEL: 'warn' }
  for (const k of Object.keys(env)) if (k.startsWith('OTEL_') || (k.startsWith('MANDATE_') && k !== 'MANDATE_CONFIG')) delete env[k]
  delete env['DATABASE_URL']
  delete env['REDIS_URL']
  delete env['PORT']
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve'], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += String(d)))
  const base = `http://127.0.0.1:${port}`
  for (const deadline = Date.now() + 30_000; ;) {
    if (child.exitCode !== null) throw new Error(`mandate serve exited ${child.exitCode}: ${stderr}`)
    if (
      await fetch(`${base}/readyz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break
    if (Date.now() > deadline) throw new Error(`mandate serve not ready in 30 s: ${stderr}`)
    await new Promise((r) => setTimeout(r, 200))
  }
  return { child, base, tokenEndpoint: `${base}/oauth2/token` }
}

function post(url: string, body: string): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body })
}

describe('bench reference servers: oidc-provider peer and crypto floor', () => {
  let dir: string
  let inputs: Inputs
  let settingsFile: string
  let generatorFile: string
  let policiesDir: string
  let idp: Server
  let idpJwksUri: string
  let good: PreparedRequest[]
  let forged: PreparedRequest[]
  const children: ChildProcess[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-bench-servers-'))
    inputs = generateInputs({ agents: 3, users: 5 })
    const written = await writeInputs(dir, inputs)
    settingsFile = written.server
    generatorFile = written.generator
    policiesDir = written.policiesDir
    // The IdP's JWKS, served as the benchmark serves it for Mandate (the peer and the floor read server.json).
    idp = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(inputs.server.idp.jwks)))
    await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve))
    idpJwksUri = `http://127.0.0.1:${(idp.address() as { port: number }).port}/jwks`
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
    idp?.close()
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
    ['Mandate (mandate serve, embedded, the benchmark config)', 'mandate'],
  ] as const) {
    describe(name, () => {
      let server: Started
      let jwks: ReturnType<typeof createLocalJWKSet>

      beforeAll(async () => {
        server = script === 'mandate' ? await startMandate(dir, inputs, policiesDir, idpJwksUri) : await start(script, settingsFile)
        children.push(server.child)
        if (script === 'mandate') {
          // An embedded broker's replay memory begins at its start: assertions made before (these were signed
          // before it started), or in the same second (iat is whole seconds), may predate it and are refused.
          await new Promise((resolve) => setTimeout(resolve, 1010 - (Date.now() % 1000)))
          good = await createRequests(inputs.generator, 6)
          forged = await createRequests(inputs.generator, 2, { subjectKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey })
        }
        let jwksUri = `${server.base}/jwks`
        if (script === 'mandate') jwksUri = `${server.base}/.well-known/jwks.json`
        else if (script.endsWith('peer.ts')) {
          // The peer's issuer is the shared broker identifier, not its loopback URL: keep only the path.
          const meta = (await (await fetch(`${server.base}/.well-known/openid-configuration`)).json()) as { jwks_uri: string }
          jwksUri = `${server.base}${new URL(meta.jwks_uri).pathname}`
        }
        jwks = createLocalJWKSet((await (await fetch(jwksUri)).json()) as JSONWebKeySet)
      }, 40_000)

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
  it('load generator: signs its exchanges first, then drives a server and counts every answer', async () => {
    const floor = await start('bench/support/floor.ts', settingsFile)
    children.push(floor.child)
    const gen = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/support/load.ts'), generatorFile], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] })
    children.push(gen)
    const answers = createInterface({ input: gen.stdout })[Symbol.asyncIterator]()
    const next = async () => JSON.parse((await answers.next()).value as string) as Record<string, unknown>
    expect(await next()).toEqual({ ready: true })

    const run = { url: floor.tokenEndpoint, series: 'floor', connections: 4, warmupMs: 100, durationMs: 600 }
    gen.stdin.write(`${JSON.stringify({ id: 'a', ...run, count: 40 })}\n`)
    const few = (await next()) as unknown as LoadResult
    // 40 exchanges run out long before 700 ms: the window ends at the last one sent.
    expect(few).toMatchObject({ id: 'a', series: 'floor', connections: 4, sent: 40, errors: 0, exhausted: true, statuses: { '200': 40 } })
    expect(few.ok).toBeLessThanOrEqual(40)

    // More than 4 connections can use in 400 ms (the floor makes about 6,000/s on 2 cores).
    gen.stdin.write(`${JSON.stringify({ id: 'b', ...run, durationMs: 300, count: 8_000 })}\n`)
    const full = (await next()) as unknown as LoadResult
    expect(full.exhausted).toBe(false)
    expect(full.errors).toBe(0)
    expect(Object.keys(full.statuses)).toEqual(['200'])
    expect(full.ok).toBeGreaterThan(0)
    expect(full.perSecond).toBeCloseTo((full.ok / full.windowMs) * 1000, 6)
    expect(full.p50).toBeGreaterThan(0)
    expect(full.p99).toBeGreaterThanOrEqual(full.p50)
    expect(full.max).toBeGreaterThanOrEqual(full.p999)
    expect(full.windowMs).toBe(300)

    // A refused exchange is counted by status with its body, not hidden: assertions for another audience.
    gen.stdin.write(`${JSON.stringify({ id: 'c', ...run, url: `${floor.base}/no-such-path`, count: 8 })}\n`)
    const refused = (await next()) as unknown as LoadResult
    expect(refused.statuses).toEqual({ '404': 8 })
    expect(refused.samples[0]).toMatch(/^404 /)

    gen.stdin.write('not json\n')
    expect(String((await next())['error'])).toMatch(/^bad command/)
    gen.stdin.end()
  }, 60_000)
})
