/**
 * The audit record's canonical form and the hash chain over it.
 *
 * A record is a JSON object serialized per RFC 8785 (JSON Canonicalization
 * Scheme: sorted keys, no whitespace, one spelling per value), with snake_case
 * fields, no token and no secret. Each carries its chain, its position and the
 * instance that wrote it, so that it cannot be moved without changing it:
 *
 *   hash(record n) = SHA-256( prev_hash || "\n" || record )   (UTF-8, lowercase hex)
 *   prev_hash(record 1) = 64 zeros;  prev_hash(record n) = hash(record n-1)
 *
 * Anyone can recompute a chain with `sha256sum`; `mandate audit verify` does.
 */
import { createHash } from 'node:crypto'
import canonicalize from 'canonicalize'
import { MAX_RECORDED_AUDIENCES, MAX_RECORDED_SCOPES, type AuditEvent } from './port.js'

export const RECORD_VERSION = 1
export const GENESIS_HASH = '0'.repeat(64)

/** The columns stored next to a record, derived from it (and checked against it by `verify`). */
export interface RecordColumns {
  readonly chainId: string
  readonly seq: number
  readonly at: number
  readonly event: AuditEvent['type']
  readonly instance: string
  readonly agent: string | null
  readonly actors: string[]
  readonly sub: string | null
  /** Issuer of `sub`: a user is the pair. */
  readonly subIss: string | null
  readonly jti: string | null
  readonly parentJti: string | null
  readonly rootJti: string | null
}

export interface EncodedRecord extends RecordColumns {
  /** Canonical JSON. */
  readonly record: string
  readonly prevHash: string
  readonly hash: string
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json }

/** The event's own fields, snake_case, written into `doc`; undefined ones are left out when serialized. */
function body(event: AuditEvent, doc: Record<string, Json | undefined>): Record<string, Json | undefined> {
  // Request context, for the events that carry it (undefined members are left out).
  const ctx = event as { readonly clientAddress?: string; readonly traceId?: string; readonly requestId?: string }
  doc['client_address'] = ctx.clientAddress
  doc['trace_id'] = ctx.traceId
  doc['request_id'] = ctx.requestId
  const assign = (fields: Record<string, Json | undefined>) => Object.assign(doc, fields)
  switch (event.type) {
    case 'token.issued':
      return assign({
        agent: event.agent,
        sub: event.sub,
        sub_iss: event.subIssuer,
        actors: event.actors as unknown as string[],
        jti: event.jti,
        parent_jti: event.parentJti,
        root_jti: event.rootJti,
        aud: event.audience,
        scopes: event.scopes as unknown as string[],
        exp: event.expiresAt,
        lifetime: event.expiresAt - event.at,
        policy_hash: event.policyHash,
        approval: event.approval,
        // `instance` is the writing broker's; this is the agent's running copy. Left out when undefined,
        // so records without one encode (and hash) as they always did.
        agent_instance: event.instance,
        jkt: event.jkt,
      })
    case 'token.denied':
      return assign({
        agent: event.agent,
        sub: event.sub,
        sub_iss: event.subIssuer,
        agent_instance: event.instance,
        error: event.error,
        reason: event.reason,
        requested_aud: event.audiences?.slice(0, MAX_RECORDED_AUDIENCES),
        requested_scopes: event.scopes?.slice(0, MAX_RECORDED_SCOPES),
      })
    case 'token.withheld':
      return assign({ agent: event.agent, sub: event.sub, sub_iss: event.subIssuer, jti: event.jti, reason: event.reason })
    case 'revocation.created':
    case 'revocation.lifted': {
      const r = event.revocation
      const t = r.target
      return assign({
        by: event.by,
        revocation: {
          id: r.id,
          kind: t.kind,
          ...('agent' in t ? { agent: t.agent } : {}),
          // eslint-disable-next-line @typescript-eslint/no-deprecated -- a `sub` key where a string may also stand is taken for String.prototype.sub
          ...('sub' in t ? { sub: t.sub } : {}),
          // A user kill without an issuer (any issuer) leaves it out.
          ...('iss' in t && t.iss !== null ? { iss: t.iss } : {}),
          ...('jti' in t ? { jti: t.jti } : {}),
          ...('instance' in t ? { instance: t.instance } : {}),
          reason: r.reason,
          created_by: r.createdBy,
          created_at: r.createdAt,
          ...(r.expiresAt === undefined ? {} : { expires_at: r.expiresAt }),
          ...(r.liftedAt === undefined ? {} : { lifted_at: r.liftedAt }),
          ...(r.liftedBy === undefined ? {} : { lifted_by: r.liftedBy }),
        },
      })
    }
    case 'policy.loaded':
    case 'policy.unloaded':
      return assign({ agent: event.agent, source: event.source, sha256: event.sha256 })
    case 'key.rotated':
      return assign({ kid: event.kid, previous_kid: event.previousKid ?? null })
    case 'admin.revocations.read':
    case 'admin.audit.read':
    case 'admin.feed.opened':
    case 'admin.policy.explained':
      return assign({ by: event.by, request: event.request })
    case 'agent.attested':
      return assign({ agent: event.agent, by: event.by, next_due: event.nextDue, note: event.note })
    case 'agent.lifecycle':
      return assign({ agent: event.agent, transition: event.transition, suspended: event.suspended, detail: event.detail })
    case 'agent.anomaly':
      return assign({ agent: event.agent, rule: event.rule, action: event.action, detail: event.detail, revocation_id: event.revocationId })
    case 'approval.requested':
      return assign({
        ...approvalRef(event),
        aud: event.audience,
        scopes: event.scopes as unknown as string[],
        authorization_details: event.details,
        binding_message: event.bindingMessage,
        approvers: event.approvers,
        purpose: event.purpose,
        expires_at: event.expiresAt,
        reuses: event.reuses,
      })
    case 'approval.decided':
      return assign({ ...approvalRef(event), decision: event.decision, by: event.by, via: event.via, note: event.note })
    case 'approval.cancelled':
      return assign({ ...approvalRef(event), reason: event.reason })
  }
}

function approvalRef(e: { agent: string; sub: string; subIssuer: string; approval: string }): Record<string, Json> {
  return { agent: e.agent, sub: e.sub, sub_iss: e.subIssuer, approval: e.approval }
}

/** The query columns of an event: who acted, for whom, on which token. */
function columnsOf(event: AuditEvent): Pick<RecordColumns, 'agent' | 'actors' | 'sub' | 'subIss' | 'jti' | 'parentJti' | 'rootJti'> {
  const none = { agent: null, actors: [], sub: null, subIss: null, jti: null, parentJti: null, rootJti: null }
  switch (event.type) {
    case 'token.issued':
      return {
        agent: event.agent,
        actors: [...event.actors],
        sub: event.sub,
        subIss: event.subIssuer,
        jti: event.jti,
        parentJti: event.parentJti ?? null,
        rootJti: event.rootJti,
      }
    case 'token.denied':
      return { ...none, agent: event.agent, actors: [event.agent], sub: event.sub ?? null, subIss: event.subIssuer ?? null }
    case 'token.withheld':
      return { ...none, agent: event.agent, actors: [event.agent], sub: event.sub, subIss: event.subIssuer ?? null, jti: event.jti }
    case 'revocation.created':
    case 'revocation.lifted': {
      const t = event.revocation.target
      const agent = 'agent' in t ? t.agent : null
      return {
        ...none,
        agent,
        actors: agent === null ? [] : [agent],
        sub: 'sub' in t ? t.sub : null,
        subIss: 'iss' in t ? (t.iss ?? null) : null,
        jti: 'jti' in t ? t.jti : null,
      }
    }
    case 'policy.loaded':
    case 'policy.unloaded':
    case 'agent.attested':
    case 'agent.lifecycle':
    case 'agent.anomaly':
      return { ...none, agent: event.agent, actors: [event.agent] }
    case 'approval.requested':
    case 'approval.decided':
    case 'approval.cancelled':
      return { ...none, agent: event.agent, actors: [event.agent], sub: event.sub, subIss: event.subIssuer }
    default:
      return none
  }
}

/**
 * RFC 8785 serialization of the values a record holds (strings, safe
 * integers, booleans, null, arrays, plain objects; undefined members left
 * out). The verifier checks every stored record against the `canonicalize`
 * package, the RFC's reference implementation; this one is the writer's,
 * 3x faster on the token endpoint's hot path (bench/audit.ts). A string that
 * is not well-formed UTF-16 is stored with U+FFFD in place of a lone
 * surrogate, as PostgreSQL would store it anyway.
 */
export function canonicalJson(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value.isWellFormed() ? value : value.toWellFormed())
    case 'number':
      if (!Number.isSafeInteger(value)) throw new TypeError('audit records hold integers only')
      return String(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'object': {
      if (value === null) return 'null'
      if (Array.isArray(value)) {
        let out = '['
        for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + canonicalJson(value[i])
        return `${out}]`
      }
      const o = value as Record<string, unknown>
      // Default sort order is by UTF-16 code units, as RFC 8785 §3.2.3 wants.
      const keys = Object.keys(o).sort()
      let out = '{'
      let first = true
      for (const k of keys) {
        const v = o[k]
        if (v === undefined) continue
        out += `${first ? '' : ','}${JSON.stringify(k)}:${canonicalJson(v)}`
        first = false
      }
      return `${out}}`
    }
    default:
      throw new TypeError(`audit records cannot hold ${typeof value}`)
  }
}

/** SHA-256 of `prevHash`, a newline and `record`, lowercase hex. */
export function chainHash(prevHash: string, record: string): string {
  return createHash('sha256').update(prevHash).update('\n').update(record, 'utf8').digest('hex')
}

/** The record for `event` at position `seq` of `chainId`, chained to `prevHash`. */
export function encodeRecord(event: AuditEvent, position: { chainId: string; seq: number; instance: string; prevHash: string }): EncodedRecord {
  const { chainId, seq, instance, prevHash } = position
  const doc = body(event, { v: RECORD_VERSION, chain: chainId, seq, instance, event: event.type, at: event.at })
  const record = canonicalJson(doc)
  return {
    chainId,
    seq,
    at: event.at,
    event: event.type,
    instance,
    ...columnsOf(event),
    record,
    prevHash,
    hash: chainHash(prevHash, record),
  }
}

/**
 * The columns a stored record implies, or a reason it is not a record this
 * version wrote (not canonical JSON, wrong version, missing fields).
 */
export function columnsFromRecord(record: string): { ok: true; columns: RecordColumns; doc: Record<string, unknown> } | { ok: false; reason: string } {
  let doc: unknown
  try {
    doc = JSON.parse(record)
  } catch {
    return { ok: false, reason: 'record is not JSON' }
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { ok: false, reason: 'record is not a JSON object' }
  if (canonicalize(doc) !== record) return { ok: false, reason: 'record is not in canonical form (RFC 8785)' }
  const d = doc as Record<string, unknown>
  if (d['v'] !== RECORD_VERSION) return { ok: false, reason: `unknown record version ${JSON.stringify(d['v'])}` }
  const str = (k: string) => (typeof d[k] === 'string' ? d[k] : undefined)
  const chain = str('chain')
  const instance = str('instance')
  const event = str('event')
  if (chain === undefined || instance === undefined || event === undefined || !Number.isSafeInteger(d['seq']) || typeof d['at'] !== 'number') {
    return { ok: false, reason: 'record lacks chain, seq, instance, event or at' }
  }
  let implied: ReturnType<typeof columnsOf>
  try {
    implied = columnsOf(eventFromDoc(d))
  } catch (err) {
    return { ok: false, reason: (err as Error).message }
  }
  return {
    ok: true,
    doc: d,
    columns: { chainId: chain, seq: d['seq'] as number, at: d['at'], event: event as AuditEvent['type'], instance, ...implied },
  }
}

/** Enough of an event, rebuilt from a stored record, to derive its columns. */
function eventFromDoc(d: Record<string, unknown>): AuditEvent {
  const s = (k: string, o: Record<string, unknown> = d): string | undefined => (typeof o[k] === 'string' ? o[k] : undefined)
  const at = d['at'] as number
  const type = d['event']
  switch (type) {
    case 'token.issued':
      return {
        type,
        at,
        agent: s('agent'),
        sub: s('sub'),
        subIssuer: s('sub_iss'),
        actors: Array.isArray(d['actors']) ? d['actors'] : [],
        jti: s('jti'),
        parentJti: s('parent_jti'),
        rootJti: s('root_jti'),
      } as unknown as AuditEvent
    case 'token.denied':
    case 'token.withheld':
      return { type, at, agent: s('agent'), sub: s('sub'), subIssuer: s('sub_iss'), jti: s('jti') } as unknown as AuditEvent
    case 'approval.requested':
    case 'approval.decided':
    case 'approval.cancelled':
      return { type, at, agent: s('agent'), sub: s('sub'), subIssuer: s('sub_iss') } as unknown as AuditEvent
    case 'revocation.created':
    case 'revocation.lifted': {
      const r = (typeof d['revocation'] === 'object' && d['revocation'] !== null ? d['revocation'] : {}) as Record<string, unknown>
      const field = (k: string) => (s(k, r) === undefined ? {} : { [k]: s(k, r) })
      const target = { kind: s('kind', r), ...field('agent'), ...field('sub'), ...field('iss'), ...field('jti'), ...field('instance') }
      return { type, at, revocation: { target } } as unknown as AuditEvent
    }
    case 'policy.loaded':
    case 'policy.unloaded':
    case 'agent.attested':
    case 'agent.lifecycle':
    case 'agent.anomaly':
      return { type, at, agent: s('agent') } as unknown as AuditEvent
    case 'key.rotated':
    case 'admin.revocations.read':
    case 'admin.audit.read':
    case 'admin.feed.opened':
    case 'admin.policy.explained':
      return { type, at } as unknown as AuditEvent
    default:
      throw new Error(`unknown event type ${JSON.stringify(type)}`)
  }
}
