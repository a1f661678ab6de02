import { createHash } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml'
import type { AgentId } from '../core/claims.js'
import { parseAgeDuration } from '../core/credential-age.js'
import { parseSpiffeId, spiffeIdPrefixes } from '../core/spiffe-id.js'
import type { AgentAuthentication, AgentPolicy, AgentPublicKey, AudienceGrant, PolicyIssue, PolicyStore, RateLimit } from './port.js'
import { importPublicJwk, KeyRefused } from '../tokens/jwk.js'
import { keyFitsAlgorithm } from '../tokens/jws.js'
import { parseRate, Policy, type PolicyAuthentication, parseDuration, parseShortDuration } from './schema.js'
import { resolveAnomalyRules, type AnomalyRulesInput } from '../core/anomaly.js'
import { declareHours } from '../core/hours.js'
import { parseApprovers } from '../core/approval.js'
import { compileDetailTypes } from './detail-schemas.js'

/** `warnings`: what is valid but likely not meant (one per policy at most; logged at each load, printed by the checks). */
export type LoadResult =
  | { readonly ok: true; readonly policies: readonly AgentPolicy[]; readonly warnings: readonly PolicyIssue[] }
  | { readonly ok: false; readonly issues: readonly PolicyIssue[] }

const POLICY_FILE = /\.ya?ml$/

/**
 * Locates `path` in the document: a scalar value itself, a block value at
 * the key that names it, a list item, else the nearest ancestor that exists
 * (a missing key is reported at its parent).
 */
export function locate(doc: Document, lines: LineCounter, path: readonly PropertyKey[]): { line: number; column: number } {
  const at = (offset: number) => {
    const { line, col } = lines.linePos(offset)
    return { line, column: col }
  }
  for (let n = path.length; n > 0; n--) {
    const parent = n === 1 ? doc.contents : doc.getIn(path.slice(0, n - 1) as unknown[], true)
    const last = path[n - 1]
    if (isMap(parent)) {
      const pair = parent.items.find((item) => isScalar(item.key) && item.key.value === last)
      // A scalar value is pointed at itself; a block value at the key that names it.
      const node = isScalar(pair?.value) ? pair.value : pair?.key
      const range = (node as { range?: [number, number, number] } | undefined)?.range
      if (range !== undefined) return at(range[0])
    } else if (isSeq(parent) && typeof last === 'number') {
      const range = (parent.items[last] as { range?: [number, number, number] } | undefined)?.range
      if (range !== undefined) return at(range[0])
    }
  }
  const range = (doc.contents as { range?: [number, number, number] } | null)?.range
  return range === undefined ? { line: 1, column: 1 } : at(range[0])
}

export const UNUSABLE_JWK = 'is not a usable public JWK'

/**
 * Compiles an authentication as a policy (or a resource server in the config)
 * declares it: public keys are imported here, once, never per request.
 * `unusableKeys`: entries of `jwks.keys` that are refused (left out), with
 * why. The key rules are an issuer's JWKS rules, but the operator writes
 * this file: a bad key is an error to fix, not an entry to skip with a warning.
 */
export function compileAuthentication<A extends PolicyAuthentication>(
  declared: A,
): { authentication: Extract<AgentAuthentication, { method: A['method'] }>; unusableKeys: { index: number; reason: string }[] } {
  const unusableKeys: { index: number; reason: string }[] = []
  let authentication: AgentAuthentication
  switch (declared.method) {
    case 'client_secret_basic':
      authentication = {
        method: 'client_secret_basic',
        secretHashes: (typeof declared.secret_sha256 === 'string' ? [declared.secret_sha256] : declared.secret_sha256).map((h) => Buffer.from(h, 'hex')),
      }
      break
    case 'workload_identity':
      authentication = { method: 'workload_identity', issuer: declared.issuer, subject: declared.subject }
      break
    case 'spiffe':
      authentication =
        declared.spiffe_id === undefined
          ? { method: 'spiffe', spiffeId: declared.spiffe_id_prefix!, prefix: true }
          : { method: 'spiffe', spiffeId: declared.spiffe_id, prefix: false }
      break
    case 'private_key_jwt': {
      const keys: AgentPublicKey[] = []
      ;(declared.jwks?.keys ?? []).forEach((jwk, i) => {
        try {
          const key = importPublicJwk(jwk)
          if (!keyFitsAlgorithm(jwk.alg, key)) throw new KeyRefused(`alg ${jwk.alg} does not fit the key`)
          keys.push({ kid: jwk.kid, alg: jwk.alg, key })
        } catch (err) {
          if (!(err instanceof KeyRefused)) throw err
          unusableKeys.push({ index: i, reason: err.message })
        }
      })
      authentication = { method: 'private_key_jwt', keys, ...(declared.jwks_uri === undefined ? {} : { jwksUri: declared.jwks_uri }) }
      break
    }
  }
  return { authentication: authentication as Extract<AgentAuthentication, { method: A['method'] }>, unusableKeys }
}

/** Places an issue about `path` of one file at the line the YAML gives it. */
export type Locator = (path: readonly PropertyKey[], message: string) => PolicyIssue

/** Parses and validates one policy file's text. Never throws on bad input. */
export function parsePolicy(file: string, text: string): { policy: AgentPolicy; locate: Locator } | { issues: PolicyIssue[] } {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false, version: '1.2' })
  if (doc.errors.length > 0) {
    return {
      issues: doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0])
        return { file, line, column: col, field: '', message: `YAML: ${e.message.split('\n')[0] ?? ''}` }
      }),
    }
  }
  if (!isMap(doc.contents)) return { issues: [{ file, line: 1, column: 1, field: '', message: 'must be a YAML mapping' }] }
  let raw: unknown
  try {
    raw = doc.toJS({ maxAliasCount: 50 })
  } catch (err) {
    return { issues: [{ file, line: 1, column: 1, field: '', message: `YAML: ${(err as Error).message}` }] }
  }
  const parsed = Policy.safeParse(raw)
  const issue = (path: readonly PropertyKey[], message: string): PolicyIssue => ({
    file,
    ...locate(doc, lines, path),
    field: path.map(String).join('.'),
    message,
  })
  if (!parsed.success) {
    return {
      issues: parsed.error.issues.flatMap((i) =>
        // zod reports unknown keys on their parent; point at each key instead.
        i.code === 'unrecognized_keys' ? i.keys.map((k) => issue([...i.path, k], 'unknown field')) : [issue(i.path, i.message)],
      ),
    }
  }

  const p = parsed.data
  const issues: PolicyIssue[] = []
  const stem = basename(file).replace(POLICY_FILE, '')
  if (stem !== p.agent) issues.push(issue(['agent'], `must match the file name (${stem})`))

  const { authentication, unusableKeys } = compileAuthentication(p.authentication)
  for (const k of unusableKeys) issues.push(issue(['authentication', 'jwks', 'keys', k.index], `${UNUSABLE_JWK}: ${k.reason}`))
  if (issues.length > 0) return { issues }

  const expires = Date.parse(p.expires.length === 10 ? `${p.expires}T00:00:00Z` : p.expires) / 1000
  const grants = new Map<string, AudienceGrant>()
  p.grants.forEach((g, i) => {
    const compiled = g.authorization_details === undefined ? undefined : compileDetailTypes(g.authorization_details)
    if (compiled !== undefined && 'reason' in compiled) {
      issues.push(issue(['grants', i, 'authorization_details', compiled.type], `not a usable JSON Schema: ${compiled.reason}`))
      return
    }
    const a = g.approval
    grants.set(g.audience, {
      audience: g.audience,
      scopes: new Set(g.scopes),
      defaultScopes: g.default_scopes,
      ...(g.hours === undefined ? {} : { hours: declareHours(g.hours, g.timezone ?? p.timezone) }),
      approval:
        a === undefined || !a.required
          ? undefined
          : { approvers: parseApprovers(a.approvers), timeout: parseShortDuration(a.timeout)!, reuse: a.reuse === 'none' ? 0 : parseShortDuration(a.reuse)! },
      detailTypes: compiled?.types,
    })
  })
  if (issues.length > 0) return { issues }
  const hours = p.hours === undefined ? undefined : declareHours(p.hours, p.timezone)
  const rule = p.anomalies?.outside_hours
  const expected = rule?.hours === undefined ? hours : declareHours(rule.hours, rule.timezone ?? p.timezone)
  return {
    locate: issue,
    policy: {
      agent: p.agent as AgentId,
      owner: p.owner,
      purpose: p.purpose,
      expires,
      authentication,
      delegators: p.users.map((u) => ({ issuer: u.issuer, claims: u.claims })),
      grants,
      ttl: { default: p.token_ttl.default, max: p.token_ttl.max },
      delegation: { maxDepth: p.delegation.max_depth, subAgents: new Set(p.delegation.sub_agents as AgentId[]) },
      rateLimit: { agent: rateLimit(p.rate_limit.agent), user: rateLimit(p.rate_limit.user) },
      requireDpop: p.require_dpop,
      ...(p.attest_every === undefined ? {} : { attestEvery: parseDuration(p.attest_every) }),
      ...(p.max_credential_age === undefined ? {} : { maxCredentialAge: parseAgeDuration(p.max_credential_age) }),
      ...(hours === undefined ? {} : { hours }),
      ...(p.anomalies === undefined && expected === undefined ? {} : { anomalies: { rules: p.anomalies, hours: expected } }),
      sourceHash: createHash('sha256').update(text).digest('hex'),
      source: file,
    },
  }
}

/** A validated `rate_limit` bucket, compiled; the burst defaults to the rate's count. */
function rateLimit(bucket: { rate: string; burst?: number | undefined } | undefined): RateLimit | undefined {
  if (bucket === undefined) return undefined
  const rate = parseRate(bucket.rate)!
  return { perSecond: rate.perSecond, burst: bucket.burst ?? rate.count }
}

export interface LoadOptions {
  /**
   * Further checks on each file that parsed, even when another file did not
   * (so that one run reports everything); what it returns fails the set
   * like any other issue.
   */
  readonly check?: (policy: AgentPolicy, locate: Locator) => readonly PolicyIssue[]
  /** The config's anomaly rules (`governance.anomalies.rules`), to tell which policies the `outside_hours` rule applies to. */
  readonly anomalyRules?: AnomalyRulesInput | undefined
}

/** The warning for a policy whose `hours` both restrict issuance and serve as the `outside_hours` rule's expected hours. */
export const HOURS_NOW_RESTRICT =
  'now restricts issuance (outside these hours the agent gets no token), and the outside_hours rule still expects them; to alert outside hours wider than the agent may work in, give the rule its own (anomalies.outside_hours.hours)'

/**
 * Policy-level `hours` once only fed the `outside_hours` rule; they now refuse tokens outside them. A policy
 * that sets them while the rule applies to it without hours of its own was most likely written for the alert:
 * say so, once per load, at its `hours`.
 */
function hoursWarning(policy: AgentPolicy, locate: Locator, global: AnomalyRulesInput): PolicyIssue | undefined {
  // The rule borrows the policy's hours exactly when it declares none (load.ts compiles them so).
  if (policy.hours === undefined || policy.anomalies?.hours !== policy.hours) return undefined
  if (!resolveAnomalyRules(global, policy.anomalies.rules, true).has('outside_hours')) return undefined
  return locate(['hours'], HOURS_NOW_RESTRICT)
}

/**
 * Loads every `*.yaml`/`*.yml` file directly in `dir`, all or nothing: any
 * issue in any file, a duplicate agent, or a sub-agent that does not exist
 * fails the whole set, so the broker never runs on a half-loaded one.
 */
export async function loadPolicies(dir: string, options: LoadOptions = {}): Promise<LoadResult> {
  const whole = (file: string, message: string): PolicyIssue => ({ file, line: 0, column: 0, field: '', message })
  let names: string[]
  try {
    names = (await readdir(dir)).filter((n) => POLICY_FILE.test(n) && !n.startsWith('.')).sort()
  } catch (err) {
    return { ok: false, issues: [whole(dir, `cannot read directory (${(err as NodeJS.ErrnoException).code ?? 'error'})`)] }
  }
  const loaded: { policy: AgentPolicy; locate: Locator }[] = []
  const issues: PolicyIssue[] = []
  const warnings: PolicyIssue[] = []
  for (const name of names) {
    const file = join(dir, name)
    let text: string
    try {
      // stat follows symlinks: Kubernetes mounts ConfigMap files as links into ..data/.
      if (!(await stat(file)).isFile()) continue
      text = await readFile(file, 'utf8')
    } catch (err) {
      issues.push(whole(file, `cannot read file (${(err as NodeJS.ErrnoException).code ?? 'error'})`))
      continue
    }
    const result = parsePolicy(file, text)
    if ('issues' in result) {
      issues.push(...result.issues)
      continue
    }
    loaded.push(result)
    if (options.check !== undefined) issues.push(...options.check(result.policy, result.locate))
    const warning = hoursWarning(result.policy, result.locate, options.anomalyRules ?? {})
    if (warning !== undefined) warnings.push(warning)
  }

  const byAgent = new Map<string, AgentPolicy>()
  const workloads = new Map<string, AgentPolicy>()
  const spiffeIds = new Map<string, AgentPolicy>()
  for (const { policy: p, locate } of loaded) {
    const other = byAgent.get(p.agent)
    if (other !== undefined) issues.push(locate(['agent'], `duplicate of ${other.source}`))
    byAgent.set(p.agent, p)
    if (p.authentication.method === 'workload_identity') {
      const key = `${p.authentication.issuer} ${p.authentication.subject}`
      const same = workloads.get(key)
      if (same !== undefined) issues.push(locate(['authentication'], `same workload as ${same.source}`))
      workloads.set(key, p)
    }
    if (p.authentication.method === 'spiffe') {
      // Two policies with the same ID (or the same prefix) would leave the agent to chance; nested prefixes are fine: the longer wins.
      const key = spiffeKey(p.authentication)
      const same = spiffeIds.get(key)
      if (same !== undefined) issues.push(locate(['authentication'], `same SPIFFE ID as ${same.source}`))
      spiffeIds.set(key, p)
    }
  }
  for (const { policy: p, locate } of loaded) {
    for (const sub of p.delegation.subAgents) {
      if (!byAgent.has(sub)) issues.push(locate(['delegation', 'sub_agents'], `unknown agent ${sub}`))
    }
  }
  return issues.length > 0 ? { ok: false, issues } : { ok: true, policies: loaded.map((l) => l.policy), warnings }
}

/** A SPIFFE authentication's index key: exact IDs and prefixes apart, so `spiffe://td/` the prefix is not `spiffe://td/` the ID. */
const spiffeKey = (a: Extract<AgentAuthentication, { method: 'spiffe' }>) => `${a.prefix ? '/' : '='} ${a.spiffeId}`

/** An immutable, indexed policy set. */
export function createPolicyStore(policies: readonly AgentPolicy[]): PolicyStore {
  const byAgent = new Map(policies.map((p) => [p.agent as string, p]))
  const all = [...byAgent.values()]
  const byWorkload = new Map<string, AgentPolicy>()
  const bySpiffe = new Map<string, AgentPolicy>()
  for (const p of policies) {
    if (p.authentication.method === 'workload_identity') {
      byWorkload.set(`${p.authentication.issuer} ${p.authentication.subject}`, p)
    }
    if (p.authentication.method === 'spiffe') bySpiffe.set(spiffeKey(p.authentication), p)
  }
  const store: PolicyStore = {
    snapshot: () => store,
    get: (agent) => byAgent.get(agent),
    byWorkload: (issuer, subject) => byWorkload.get(`${issuer} ${subject}`),
    bySpiffeId(id) {
      const parsed = parseSpiffeId(id)
      if (parsed === undefined) return undefined
      const exact = bySpiffe.get(`= ${parsed.id}`)
      if (exact !== undefined) return exact
      for (const prefix of spiffeIdPrefixes(parsed)) {
        const under = bySpiffe.get(`/ ${prefix}`)
        if (under !== undefined) return under
      }
      return undefined
    },
    agents: () => all,
    size: byAgent.size,
  }
  return store
}
