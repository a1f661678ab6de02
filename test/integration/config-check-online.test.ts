/**
 * `mandate config check --online` (`checkConfig` with `online`): each trusted
 * issuer's JWKS fetched from a real HTTP server the test controls, and the
 * PostgreSQL and Redis the config names reached, answering or not; no error
 * quotes a password from a URL.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkConfig } from '../../src/cli/config.js'
import { generateSigningJwk } from '../../src/tokens/keys.js'
import { secretAgentPolicy } from '../support/broker.js'
import { ADMIN_URL } from '../support/pg-database.js'
import { REDIS_URL, redisAvailable } from '../support/redis.js'

const redisUp = await redisAvailable('config-check-online.test.ts')

describe('checkConfig online', () => {
  let dir: string
  let server: Server
  let url: string
  let down = false

  beforeAll(async () => {
    const { publicKey } = await generateKeyPair('ES256', { extractable: true })
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] })
    server = createServer((_req, res) => {
      if (down) res.writeHead(500).end()
      else res.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

    dir = await mkdtemp(join(tmpdir(), 'mandate-check-online-'))
    await mkdir(join(dir, 'policies'))
    await writeFile(join(dir, 'policies', 'agent.yaml'), secretAgentPolicy('agent', url))
    await writeFile(join(dir, 'keys.json'), JSON.stringify({ keys: [await generateSigningJwk()] }))
    await writeFile(
      join(dir, 'mandate.yaml'),
      `issuer: https://mandate.example.com
policies_dir: ${join(dir, 'policies')}
signing: { keys_file: ${join(dir, 'keys.json')} }
trust:
  subjects:
    - { issuer: ${url}, jwks_uri: ${url}/jwks, algorithms: [ES256] }
admin:
  keys: [{ name: ops, sha256: ${'ab'.repeat(32)}, roles: [admin] }]
`,
    )
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await rm(dir, { recursive: true, force: true })
  })

  const check = (env: Record<string, string> = {}) => checkConfig({ file: join(dir, 'mandate.yaml'), env, dev: false, online: true, now: Date.UTC(2027, 0, 1) })

  it('passes when the JWKS, PostgreSQL and Redis answer', async () => {
    down = false
    const r = await check({ DATABASE_URL: ADMIN_URL, ...(redisUp ? { REDIS_URL } : {}) })
    expect(r.errors).toEqual([])
    expect(r.ok).toEqual(expect.arrayContaining([`JWKS of ${url}: fetched`, 'PostgreSQL: answers', ...(redisUp ? ['Redis: answers'] : [])]))
  })

  it('fails, located at the issuer in the config, when its JWKS cannot be fetched', async () => {
    down = true
    const r = await check()
    expect(r.errors).toEqual([
      {
        where: `${join(dir, 'mandate.yaml')}:6:17`,
        message: `trust.subjects.0.issuer: ${url}: no usable key set: fetch ${url}/jwks answered 500`,
        blocksStart: false,
      },
    ])
  })

  it('fails when PostgreSQL or Redis cannot be reached, without quoting their passwords', async () => {
    down = false
    const r = await check({ DATABASE_URL: 'postgres://mandate:pg-pw-secret@127.0.0.1:1/mandate', REDIS_URL: 'redis://:redis-pw-secret@127.0.0.1:1' })
    expect(r.errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/^storage\.database_url: cannot connect to PostgreSQL/),
      expect.stringMatching(/^storage\.redis_url: cannot reach Redis \(ECONNREFUSED\)/),
    ])
    expect(JSON.stringify(r)).not.toMatch(/pw-secret/)
  })
})
