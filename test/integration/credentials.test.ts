/**
 * Agent credentials through a real broker, on PGlite and on PostgreSQL
 * through the same code: a secret list (rollover), the credential ledger
 * (first and last use, flushed in batches, merged with LEAST and GREATEST
 * across instances, loaded again at a restart), `max_credential_age`
 * (rotate_soon ahead, then invalid_client, on the test clock), the
 * inventory's credentials and `--state shared-secret`, keys published at a
 * `jwks_uri` served by a real HTTP server, and an EdDSA policy key verifying
 * an RFC 9864 `Ed25519` header.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createSqlCredentialStore } from '../../src/audit/credentials.js'
import { CREDENTIAL_TOO_OLD } from '../../src/core/credential-age.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { createCredentialLedger } from '../../src/tokens/credential-ledger.js'
import {
  ADMIN_KEYS,
  AUDIENCE,
  basic,
  bearer,
  BROKER,
  CLIENT_ASSERTION_TYPE_JWT,
  SECRET,
  startTestBroker,
  USER_ISSUER,
  type TestBroker,
} from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const DAY = 86_400
const OLD_SECRET = 'old-secret-0123456789abcdefghijklmnop'
const NEW_SECRET = 'new-secret-0123456789abcdefghijklmnop'
const RULE = { maxAge: 30 * DAY, warnBefore: 14 * DAY }

const common = (agent: string) => `agent: ${agent}
owner: creds@example.com
purpose: credentials test
expires: 2030-01-01
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`
const hex = (secret: string) => hashClientSecret(secret).toString('hex')

interface Credentials {
  kind: string
  state: string
  max_age_days: number
  oldest_age_days: number | null
  last_used_at: string | null
  suggested_fix: string | null
  credentials: { kind: string; id: string; age_days: number; state: string; in_policy: boolean | null; first_used_at: string }[]
}

/** A JWK set served over real HTTP on loopback, its keys replaceable and its requests counted. */
async function startJwksServer(): Promise<{ url: string; keys: JWK[]; requests: () => number; down: boolean; close: () => Promise<void> }> {
  let count = 0
  const state = { keys: [] as JWK[], down: false }
  const server: Server = createServer((req, res) => {
    count++
    if (state.down) {
      res.writeHead(503).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify({ keys: state.keys }))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    get keys() {
      return state.keys
    },
    set keys(k: JWK[]) {
      state.keys = k
    },
    requests: () => count,
    get down() {
      return state.down
    },
    set down(d: boolean) {
      state.down = d
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  }
}

function describeCredentials(
  name: string,
  storage: () => Promise<{ options: { database?: string; embedded?: boolean }; done: () => Promise<void> }>,
  d = describe,
) {
  d(`agent credentials: ${name}`, () => {
    let b: TestBroker
    let done: () => Promise<void>
    let jwks: Awaited<ReturnType<typeof startJwksServer>>
    let publishedKey: { privateKey: CryptoKey; kid: string }
    let edKey: CryptoKey

    const exchangeBasic = async (agent: string, secret: string) => b.token(b.exchangeForm(await b.userToken()), basic(agent, secret))
    const exchangeJwt = async (agent: string, key: CryptoKey, header: Record<string, unknown>) =>
      b.token({
        ...b.exchangeForm(await b.userToken()),
        client_assertion_type: CLIENT_ASSERTION_TYPE_JWT,
        client_assertion: await new SignJWT({ iss: agent, sub: agent, aud: BROKER, jti: `j-${Math.random()}`, iat: b.now(), exp: b.now() + 60 })
          .setProtectedHeader(header as { alg: string })
          .sign(key),
      })
    const show = async (agent: string) => {
      const res = await b.mandate.app.request(`/admin/agents/${agent}`, { headers: bearer(ADMIN_KEYS.auditor) })
      expect(res.status, await res.clone().text()).toBe(200)
      return (await res.json()) as { credentials: Credentials | null }
    }
    /** The inventory once the ledger's flush (every 100 ms here) has written what `until` waits for. */
    const shown = async (agent: string, until: (c: Credentials) => boolean) => {
      const deadline = Date.now() + 5_000
      for (;;) {
        const c = (await show(agent)).credentials
        if (c !== null && until(c)) return c
        if (Date.now() > deadline) throw new Error(`credentials of ${agent} never matched: ${JSON.stringify(c)}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    }

    beforeAll(async () => {
      const s = await storage()
      done = s.done
      jwks = await startJwksServer()
      const published = await generateKeyPair('ES256', { extractable: true })
      publishedKey = { privateKey: published.privateKey, kid: 'pub-1' }
      jwks.keys = [{ ...(await exportJWK(published.publicKey)), kid: 'pub-1', alg: 'ES256', use: 'sig' }]
      const ed = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
      edKey = ed.privateKey
      const edJwk = { ...(await exportJWK(ed.publicKey)), kid: 'ed-1', alg: 'EdDSA' }
      b = await startTestBroker({
        ...s.options,
        governance: { credentials: { flush_interval_ms: 100 } },
        policies: {
          'rollover-agent.yaml': `${common('rollover-agent')}authentication: { method: client_secret_basic, secret_sha256: [${hex(OLD_SECRET)}, ${hex(NEW_SECRET)}] }\n`,
          'aging-agent.yaml': `${common('aging-agent')}authentication: { method: client_secret_basic, secret_sha256: [${hex(OLD_SECRET)}, ${hex(NEW_SECRET)}] }\nmax_credential_age: 30d\n`,
          'published-agent.yaml': `${common('published-agent')}authentication: { method: private_key_jwt, jwks_uri: '${jwks.url}' }\n`,
          'ed-agent.yaml': `${common('ed-agent')}authentication: { method: private_key_jwt, jwks: { keys: [${JSON.stringify(edJwk)}] } }\n`,
        },
      })
    })
    afterAll(async () => {
      await b.close()
      await jwks.close()
      await done()
    })

    it('accepts every secret of the list, and only those', async () => {
      expect((await exchangeBasic('rollover-agent', OLD_SECRET)).status).toBe(200)
      expect((await exchangeBasic('rollover-agent', NEW_SECRET)).status).toBe(200)
      const wrong = await exchangeBasic('rollover-agent', SECRET)
      expect(wrong.status).toBe(401)
      expect(await wrong.json()).toMatchObject({ error: 'invalid_client', error_description: 'client authentication failed' })
    })

    it('records each secret’s first and last use and shows them with the suggested fix', async () => {
      const c = await shown('rollover-agent', (x) => x.credentials.length === 2)
      expect(c).toMatchObject({ kind: 'secret', state: 'fresh', max_age_days: 90, oldest_age_days: 0 })
      expect(c.suggested_fix).toMatch(/private_key_jwt/)
      expect(new Set(c.credentials.map((x) => x.id))).toEqual(new Set([hex(OLD_SECRET), hex(NEW_SECRET)]))
      expect(c.credentials.every((x) => x.in_policy === true && x.kind === 'secret')).toBe(true)
    })

    it('lists the agents still on shared secrets with --state shared-secret', async () => {
      const res = await b.mandate.app.request('/admin/agents?state=shared-secret', { headers: bearer(ADMIN_KEYS.auditor) })
      expect(res.status).toBe(200)
      const body = (await res.json()) as { agents: { agent: string; authentication: string; credentials: Credentials | null }[] }
      expect(body.agents.length).toBeGreaterThan(0)
      expect(body.agents.every((a) => a.authentication === 'client_secret_basic')).toBe(true)
      expect(body.agents.map((a) => a.agent)).toContain('rollover-agent')
      expect(body.agents.map((a) => a.agent)).not.toContain('published-agent')
      expect(body.agents.find((a) => a.agent === 'rollover-agent')?.credentials?.suggested_fix).toMatch(/workload/)
    })

    it('warns ahead of max_credential_age, then refuses the old secret while a fresh one still works', async () => {
      const start = b.now()
      expect((await exchangeBasic('aging-agent', OLD_SECRET)).status).toBe(200)
      b.advance(20 * DAY)
      expect((await exchangeBasic('aging-agent', OLD_SECRET)).status).toBe(200)
      expect(b.logs().some((l) => l['msg'] === 'credential nears max_credential_age; rotate it' && l['agent'] === 'aging-agent')).toBe(true)
      const warned = await shown('aging-agent', (x) => x.state === 'rotate_soon')
      expect(warned).toMatchObject({ max_age_days: 30, oldest_age_days: 20 })
      b.advance(10 * DAY)
      const refused = await exchangeBasic('aging-agent', OLD_SECRET)
      expect(refused.status).toBe(401)
      expect(await refused.json()).toEqual({ error: 'invalid_client', error_description: CREDENTIAL_TOO_OLD })
      // The other secret of the list was never used: its age starts now.
      expect((await exchangeBasic('aging-agent', NEW_SECRET)).status).toBe(200)
      const after = await shown('aging-agent', (x) => x.credentials.length === 2)
      expect(after.state).toBe('too_old')
      expect(after.credentials.find((x) => x.id === hex(OLD_SECRET))).toMatchObject({ state: 'too_old', age_days: 30 })
      expect(after.credentials.find((x) => x.id === hex(NEW_SECRET))).toMatchObject({ state: 'fresh', age_days: 0 })
      expect(b.now() - start).toBe(30 * DAY)
    })

    it('verifies assertions with keys fetched from the agent’s jwks_uri, cached, and records the key’s thumbprint', async () => {
      const before = jwks.requests()
      expect((await exchangeJwt('published-agent', publishedKey.privateKey, { alg: 'ES256', kid: 'pub-1' })).status).toBe(200)
      expect((await exchangeJwt('published-agent', publishedKey.privateKey, { alg: 'ES256', kid: 'pub-1' })).status).toBe(200)
      expect(jwks.requests() - before).toBe(1)
      const c = await shown('published-agent', (x) => x.credentials.length === 1)
      expect(c).toMatchObject({ kind: 'key', suggested_fix: null })
      expect(c.credentials[0]).toMatchObject({ kind: 'key', in_policy: null })
      expect(c.credentials[0]!.id).toMatch(/^[A-Za-z0-9_-]{43}$/)
    })

    it('refuses a key the published set does not hold, and answers 503 when the set cannot be had', async () => {
      const other = await generateKeyPair('ES256')
      const unknown = await exchangeJwt('published-agent', other.privateKey, { alg: 'ES256', kid: 'pub-1' })
      expect(unknown.status).toBe(401)
      const alien = await exchangeJwt('published-agent', other.privateKey, { alg: 'ES256', kid: 'nope' })
      expect(alien.status).toBe(401)
      // Past the cache and stale ages (defaults: 10 min and 1 h), with the server down, nothing serves.
      jwks.down = true
      b.advance(2 * 3600)
      const res = await exchangeJwt('published-agent', publishedKey.privateKey, { alg: 'ES256', kid: 'pub-1' })
      expect(res.status).toBe(503)
      expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable' })
      jwks.down = false
      b.advance(60)
      expect((await exchangeJwt('published-agent', publishedKey.privateKey, { alg: 'ES256', kid: 'pub-1' })).status).toBe(200)
    })

    it('lets an EdDSA policy key verify an assertion whose header says Ed25519 (RFC 9864)', async () => {
      expect((await exchangeJwt('ed-agent', edKey, { alg: 'Ed25519', kid: 'ed-1' })).status).toBe(200)
      expect((await exchangeJwt('ed-agent', edKey, { alg: 'EdDSA', kid: 'ed-1' })).status).toBe(200)
      // Another Ed25519 key under the same kid: refused, so the header's name alone lets nothing in.
      const other = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
      expect((await exchangeJwt('ed-agent', other.privateKey, { alg: 'Ed25519', kid: 'ed-1' })).status).toBe(401)
    })
  })
}

/** The ledger's store and two ledgers (two instances) on one database. */
function describeLedger(name: string, open: () => Promise<{ database: Database; done: () => Promise<void> }>, d = describe) {
  d(`credential ledger: ${name}`, () => {
    let database: Database
    let done: () => Promise<void>
    beforeAll(async () => {
      ;({ database, done } = await open())
      await database.migrate()
    })
    afterAll(async () => done())

    it('merges batches with the earliest first use and the latest last use', async () => {
      const store = createSqlCredentialStore(database.db)
      await store.record([{ agent: 'a', kind: 'secret', id: 'x'.repeat(64), firstSeen: 200, lastSeen: 300 }])
      const back = await store.record([{ agent: 'a', kind: 'secret', id: 'x'.repeat(64), firstSeen: 100, lastSeen: 250 }])
      expect(back).toEqual([{ agent: 'a', kind: 'secret', id: 'x'.repeat(64), firstSeen: 100, lastSeen: 300 }])
      await store.record([{ agent: 'a', kind: 'key', id: 'thumb', firstSeen: 500, lastSeen: 900 }])
      expect(await store.read('a')).toEqual([
        { agent: 'a', kind: 'secret', id: 'x'.repeat(64), firstSeen: 100, lastSeen: 300 },
        { agent: 'a', kind: 'key', id: 'thumb', firstSeen: 500, lastSeen: 900 },
      ])
      expect(await store.read('b')).toEqual([])
    })

    it('ages a credential from the earliest instance’s sighting, and keeps its age across a restart', async () => {
      const store = createSqlCredentialStore(database.db)
      const cred = { kind: 'secret' as const, id: 'y'.repeat(64) }
      const first = createCredentialLedger({ store, flushIntervalMs: 60_000 })
      const second = createCredentialLedger({ store, flushIntervalMs: 60_000 })
      expect(second.use('agent-2', cred, 5_000, RULE).firstSeen).toBe(5_000)
      expect(first.use('agent-2', cred, 1_000, RULE).firstSeen).toBe(1_000)
      await second.flush()
      await first.flush()
      // The second instance learns the earlier sighting from its next flush.
      second.use('agent-2', cred, 6_000, RULE)
      await second.flush()
      expect(second.use('agent-2', cred, 6_001, RULE).firstSeen).toBe(1_000)
      await Promise.all([first.close(), second.close()])
      expect(await store.read('agent-2')).toEqual([{ agent: 'agent-2', kind: 'secret', id: cred.id, firstSeen: 1_000, lastSeen: 6_001 }])

      const restarted = createCredentialLedger({ store, flushIntervalMs: 60_000, initial: await store.read() })
      expect(restarted.use('agent-2', cred, 1_000 + 30 * DAY, RULE)).toEqual({ firstSeen: 1_000, state: 'too_old' })
      await restarted.close()
    })

    it('writes a batch of more rows than one statement holds', async () => {
      const store = createSqlCredentialStore(database.db)
      const ledger = createCredentialLedger({ store, flushIntervalMs: 60_000 })
      for (let i = 0; i < 1_200; i++) ledger.use(`bulk-${String(i).padStart(4, '0')}`, { kind: 'key', id: `k${i}` }, 10, RULE)
      await ledger.close()
      const all = await store.read()
      expect(all.filter((s) => s.agent.startsWith('bulk-'))).toHaveLength(1_200)
    })
  })
}

describeLedger('PGlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-ledger-'))
  const database = await openDatabase(undefined, { dataDir: dir })
  return {
    database,
    done: async () => {
      await database.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
})
describeLedger(
  'PostgreSQL',
  async () => {
    const t: TestDatabase = await createTestDatabase()
    const database = await openDatabase(t.url, { dataDir: '/nonexistent' })
    return {
      database,
      done: async () => {
        await database.close()
        await t.drop()
      },
    }
  },
  describePostgres,
)
describeCredentials('PGlite', async () => ({ options: { embedded: true }, done: async () => {} }))
describeCredentials(
  'PostgreSQL',
  async () => {
    const t = await createTestDatabase()
    return { options: { database: t.url }, done: () => t.drop() }
  },
  describePostgres,
)
