/**
 * The SET transmitter on PGlite (the embedded default), over its real
 * adapters: the revocation log and the outbox on one PGlite database, pushing
 * to a real receiver. The PostgreSQL suites (ssf.test.ts) cover the rest.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { createSqlRevocationLog } from '../../src/revocation/log-sql.js'
import type { Revocation, RevocationLog } from '../../src/revocation/port.js'
import { EVENT_TYPES, SET_TYP, setJti } from '../../src/ssf/events.js'
import { createSqlSsfStore } from '../../src/ssf/outbox.js'
import { createTransmitter, type Transmitter } from '../../src/ssf/transmitter.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { createLogger } from '../../src/telemetry/log.js'
import { captureLogs } from '../support/log-sink.js'
import { startSetReceiver, type SetReceiver } from '../support/set-receiver.js'

const ISSUER = 'https://mandate.test'
const AUDIENCE = 'https://siem.test'
const NOW = 1_800_000_000

let dir: string
let database: Database
let log: RevocationLog
let receiver: SetReceiver
let transmitter: Transmitter

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-ssf-pglite-'))
  database = await openDatabase(undefined, { dataDir: dir })
  await database.migrate()
  log = createSqlRevocationLog(database.db)
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }
  receiver = await startSetReceiver({ jwks: async () => ({ keys: [jwk] }), audience: AUDIENCE, issuer: ISSUER, currentDate: new Date(NOW * 1000) })
  transmitter = createTransmitter({
    issuer: ISSUER,
    receivers: [{ name: 'siem', audience: AUDIENCE, start: 'beginning', delivery: { method: 'push', endpointUrl: receiver.url, authorization: undefined } }],
    store: createSqlSsfStore(database.db),
    sign: (claims) => new SignJWT(claims as Record<string, unknown>).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: SET_TYP }).sign(privateKey),
    instance: 'test',
    now: () => NOW,
    // Never given up within a test: the backlog test needs its 503-refused SETs still pending when the tick measures them.
    retry: { maxAttempts: 1000, maxAgeMs: 60_000, initialDelayMs: 10, maxDelayMs: 50 },
    pushTimeoutMs: 2_000,
    leaseSeconds: 5,
    scanIntervalMs: 100,
    graceSeconds: 60,
    longPollMaxMs: 1_000,
    logger: createLogger('debug', captureLogs('ssf on pglite').stream),
  })
})

afterAll(async () => {
  await transmitter?.close()
  await receiver?.close()
  await database?.close()
  await rm(dir, { recursive: true, force: true })
})

const record = (id: string, createdAt: number): Revocation => ({
  id,
  target: { kind: 'sub', sub: 'alice' as never, iss: 'https://idp.test' },
  reason: 'test',
  createdBy: 'test',
  createdAt,
  expiresAt: undefined,
  liftedAt: undefined,
  liftedBy: undefined,
})

it('sends what the log held before it started (start: beginning), then what is written after, each SET once', async () => {
  const early = record('00000000-0000-4000-8000-000000000001', NOW - 7200)
  await log.insert(early)
  await transmitter.start()
  await receiver.waitFor((r) => r.claims.txn === early.id && EVENT_TYPES.sessionRevoked in r.claims.events, 2_000)
  const late = record('00000000-0000-4000-8000-000000000002', NOW)
  await log.insert(late)
  transmitter.wake()
  await receiver.waitFor((r) => r.claims.txn === late.id && EVENT_TYPES.sessionRevoked in r.claims.events, 2_000)
  expect(receiver.received.map((r) => r.claims.jti)).toEqual([
    setJti(early.id, 'siem', EVENT_TYPES.user),
    setJti(early.id, 'siem', EVENT_TYPES.sessionRevoked),
    setJti(late.id, 'siem', EVENT_TYPES.user),
    setJti(late.id, 'siem', EVENT_TYPES.sessionRevoked),
  ])
  expect(receiver.rejected).toEqual([])
})

it('reports the backlog of a receiver that refuses to answer 202: pending SETs and the age of the oldest', async () => {
  receiver.respond = () => ({ status: 503 })
  const stuck = record('00000000-0000-4000-8000-000000000003', NOW)
  await log.insert(stuck)
  transmitter.wake()
  await receiver.waitFor((r) => r.claims.txn === stuck.id, 2_000)
  const deadline = Date.now() + 2_000
  while ((transmitter.backlog().get('siem')?.pending ?? 0) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  const backlog = transmitter.backlog().get('siem')
  expect(backlog?.pending).toBe(2)
  expect(backlog?.lagSeconds).toBeGreaterThanOrEqual(0)
  expect(backlog?.lagSeconds).toBeLessThan(60)
})
