import type { Hono } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import { formatIssue } from '../../policy/port.js'
import type { PolicyReloadStatus } from '../../policy/watch.js'
import type { KeysFileStatus, SigningKeys } from '../../tokens/keys.js'
import type { KeySetStatus } from '../../tokens/upstream.js'
import type { AppEnv } from '../env.js'
import { jsonContent } from '../openapi.js'

/** One trusted issuer's key set, or a SPIFFE trust domain's bundle (`issuer` then `spiffe://<trust domain>`), for readiness. */
export interface UpstreamKeysStatus extends KeySetStatus {
  readonly issuer: string
  readonly role: 'subjects' | 'workloads' | 'id_jag' | 'spiffe'
}

/**
 * Where readiness reads its state from. Every source answers from what its
 * component already knows, never calling an IdP; only the delegation log,
 * after a failed write, waits for a database ping (bounded by its write
 * timeout) so that an idle instance out of rotation can come back.
 */
export interface HealthDeps {
  readonly revocations: { fresh(): boolean; lag(): number }
  /** Whether the delegation log can write; absent: an in-memory log (tests). */
  readonly auditHealthy?: (() => Promise<boolean>) | undefined
  readonly keys: SigningKeys
  readonly policies: { readonly size: number }
  readonly keysFile?: () => KeysFileStatus
  readonly policyReload?: () => PolicyReloadStatus
  readonly upstream?: () => readonly UpstreamKeysStatus[]
  /** Whether the replay cache's Redis connection is up; absent: the cache is in process. */
  readonly replayConnected?: (() => boolean) | undefined
}

/** Why the broker is not ready: a stable check name and a short, safe detail. */
export interface NotReadyReason {
  readonly check: ReadinessCheck
  readonly detail: string
}

/** The names of the checks, stable: each is also a key of the /readyz body. */
export type ReadinessCheck = 'revocation_mirror' | 'replay_cache' | 'audit_log' | 'signing_keys' | 'policies' | 'upstream_jwks'

const READINESS_CHECKS = [
  'revocation_mirror',
  'replay_cache',
  'audit_log',
  'signing_keys',
  'policies',
  'upstream_jwks',
] as const satisfies readonly ReadinessCheck[]

/** The /readyz body, for the OpenAPI document. */
export const Readiness = z
  .strictObject({
    status: z.enum(['ready', 'not_ready']),
    reasons: z.array(z.strictObject({ check: z.enum(READINESS_CHECKS), detail: z.string() })),
    revocation_mirror: z.strictObject({ ready: z.boolean(), fresh: z.boolean(), lag_ms: z.number() }),
    replay_cache: z.strictObject({ ready: z.boolean(), store: z.enum(['memory', 'redis']) }),
    audit_log: z.strictObject({ ready: z.boolean(), writing: z.boolean() }),
    signing_keys: z.strictObject({ ready: z.boolean(), signing: z.string(), published: z.int(), keys_file: z.enum(['ok', 'unusable']) }),
    policies: z.strictObject({ ready: z.boolean(), agents: z.int(), issue_count: z.int(), issues: z.array(z.string()) }),
    upstream_jwks: z.strictObject({
      ready: z.boolean(),
      issuers: z.array(
        z.strictObject({
          issuer: z.string(),
          role: z.enum(['subjects', 'workloads', 'id_jag', 'spiffe']),
          state: z.string(),
          fetched_at: z.iso.datetime().optional(),
          last_failure: z.string().optional(),
        }),
      ),
    }),
  })
  .meta({ id: 'Readiness' })

const healthzDoc = describeRoute({
  tags: ['Health'],
  operationId: 'healthz',
  summary: 'Liveness',
  description: 'The process answers; depends on nothing else. Answered on the admin port too.',
  security: [],
  responses: { 200: { description: 'Alive.', content: jsonContent(z.strictObject({ status: z.literal('ok') })) } },
})

const readyzDoc = describeRoute({
  tags: ['Health'],
  operationId: 'readyz',
  summary: 'Readiness',
  description: 'Whether the broker would serve, with every reason it would not. No URL, key or secret in the body. Answered on the admin port too.',
  security: [],
  responses: {
    200: { description: 'Ready.', content: jsonContent(Readiness) },
    503: { description: 'Not ready: `reasons` says why.', content: jsonContent(Readiness) },
  },
})

/** Most policy issues listed in the body (the log has them all). */
const MAX_ISSUES_SHOWN = 20

/**
 * `/healthz`: liveness, the process answers; it depends on nothing else, so
 * an outage of PostgreSQL, Redis or an IdP never gets the fleet restarted.
 *
 * `/readyz`: 200 `ready`, or 503 `not_ready` with every reason, while the
 * broker would refuse (503) or could not stand behind what it serves:
 * the revocation mirror is stale (Redis), the replay cache's Redis
 * connection is down, the delegation log cannot write (PostgreSQL), the
 * signing keys file is gone or unusable, the last policy reload was
 * rejected or the directory is gone (the last good set still serves), or a
 * trusted issuer has no usable key set. `Cache-Control: no-store`; no URL,
 * key or secret in the body.
 */
export function mountHealth(app: Hono<AppEnv>, deps: HealthDeps): void {
  app.get('/healthz', healthzDoc, (c) => c.json({ status: 'ok' }))
  app.get('/readyz', readyzDoc, async (c) => {
    const reasons: NotReadyReason[] = []
    const not = (check: ReadinessCheck, detail: string) => {
      reasons.push({ check, detail })
      return false
    }

    const fresh = deps.revocations.fresh()
    const lag = deps.revocations.lag()
    const mirrorReady = fresh || not('revocation_mirror', `revocation list not heard from Redis for ${lag} ms`)

    const connected = deps.replayConnected?.()
    const replayReady = connected !== false || not('replay_cache', 'Redis connection of the client-assertion replay cache is down')

    const writing = (await deps.auditHealthy?.()) ?? true
    const auditReady = writing || not('audit_log', 'delegation log cannot write to its database')

    const keysFile = deps.keysFile?.() ?? { ok: true }
    const current = deps.keys.current.kid
    const keysReady = keysFile.ok || not('signing_keys', `keys file unusable since its last change (${keysFile.reason}); still signing with ${current}`)

    const reload = deps.policyReload?.() ?? { ok: true, issues: [] }
    const first = reload.issues[0]
    const policiesReady =
      reload.ok ||
      not(
        'policies',
        `last reload rejected (${reload.issues.length} issue(s)), the last good set serves` + (first === undefined ? '' : `: ${formatIssue(first)}`),
      )

    const issuers = deps.upstream?.() ?? []
    let upstreamReady = true
    for (const i of issuers) {
      if (i.usable) continue
      upstreamReady = not('upstream_jwks', `${i.issuer} (${i.role}): no usable key set (${i.state})${i.lastFailure === undefined ? '' : `: ${i.lastFailure}`}`)
    }

    const body = {
      status: reasons.length === 0 ? 'ready' : 'not_ready',
      reasons,
      revocation_mirror: { ready: mirrorReady, fresh, lag_ms: lag },
      replay_cache: { ready: replayReady, store: connected === undefined ? 'memory' : 'redis' },
      audit_log: { ready: auditReady, writing },
      signing_keys: { ready: keysReady, signing: current, published: deps.keys.all.length, keys_file: keysFile.ok ? 'ok' : 'unusable' },
      policies: {
        ready: policiesReady,
        agents: deps.policies.size,
        issue_count: reload.issues.length,
        issues: reload.issues.slice(0, MAX_ISSUES_SHOWN).map(formatIssue),
      },
      upstream_jwks: {
        ready: upstreamReady,
        issuers: issuers.map((i) => ({
          issuer: i.issuer,
          role: i.role,
          state: i.state,
          ...(i.fetchedAt === undefined ? {} : { fetched_at: new Date(i.fetchedAt).toISOString() }),
          ...(i.lastFailure === undefined ? {} : { last_failure: i.lastFailure }),
        })),
      },
    }
    return c.json(body, reasons.length === 0 ? 200 : 503, { 'Cache-Control': 'no-store' })
  })
}
