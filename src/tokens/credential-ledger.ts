/**
 * The credential ledger: when each agent credential (a client secret, named
 * by its SHA-256; a signing key, named by its RFC 7638 thumbprint) was first
 * and last seen in use. Kept in memory on the token endpoint's path (a map
 * lookup, no I/O) and written to the database in batches off it, every few
 * seconds; the first sighting the database holds wins over this instance's,
 * so every instance ages a credential from the same moment.
 */
import { createHash, type KeyObject } from 'node:crypto'
import { credentialAgeState, type CredentialAgeRule, type CredentialAgeState } from '../core/credential-age.js'
import type { Logger } from '../telemetry/log.js'

export const CREDENTIAL_KINDS = ['secret', 'key'] as const
export type CredentialKind = (typeof CREDENTIAL_KINDS)[number]

/** One credential of one agent. */
export interface CredentialRef {
  readonly kind: CredentialKind
  /** A secret's SHA-256, hex (as the policy stores it); a key's RFC 7638 thumbprint, base64url. */
  readonly id: string
}

/** What the ledger knows of one credential: epoch seconds. */
export interface CredentialSighting extends CredentialRef {
  readonly agent: string
  readonly firstSeen: number
  readonly lastSeen: number
}

/** Where sightings are kept (src/audit/credentials.ts on PostgreSQL or PGlite). */
export interface CredentialLedgerStore {
  /**
   * Merges the batch in (first seen: the earlier; last seen: the later) and
   * returns each written row as stored. Rejects when the database cannot
   * answer; the batch is then kept for the next flush.
   */
  record(batch: readonly CredentialSighting[]): Promise<readonly CredentialSighting[]>
  /** Every sighting, or one agent's. */
  read(agent?: string): Promise<readonly CredentialSighting[]>
}

export interface CredentialLedger {
  /**
   * Records a use of `credential` by `agent` at `now` (epoch seconds) and
   * says how old the credential is against `rule`. Synchronous, in memory.
   */
  use(agent: string, credential: CredentialRef, now: number, rule: CredentialAgeRule): { readonly firstSeen: number; readonly state: CredentialAgeState }
  /** Writes what was seen since the last flush; never rejects (a failure keeps the batch). */
  flush(): Promise<void>
  /** Stops the timer and flushes a last time. */
  close(): Promise<void>
}

export interface CredentialLedgerOptions {
  /** Absent: memory only (no database). */
  readonly store: CredentialLedgerStore | undefined
  readonly flushIntervalMs: number
  readonly logger?: Logger | undefined
  /** Sightings already stored, loaded before the first request so that ages survive a restart. */
  readonly initial?: readonly CredentialSighting[]
}

const keyOf = (agent: string, c: CredentialRef) => `${agent}\u0000${c.kind}\u0000${c.id}`
/** One warning per credential this often at most, while it is `rotate_soon`. */
const WARN_EVERY_SECONDS = 86_400

/** What the ledger holds of one credential, updated in place on each use. */
interface Entry {
  readonly agent: string
  readonly kind: CredentialKind
  readonly id: string
  firstSeen: number
  lastSeen: number
  /** Epoch seconds of the last `rotate_soon` warning logged. */
  warnedAt: number
}

const sightingOf = (e: Entry): CredentialSighting => ({ agent: e.agent, kind: e.kind, id: e.id, firstSeen: e.firstSeen, lastSeen: e.lastSeen })

/**
 * The in-memory ledger; flushes every `flushIntervalMs` (the timer does not
 * keep the process alive). A use costs a map lookup and two assignments: the
 * entries used since the last flush are kept in a set, not copied.
 */
export function createCredentialLedger(options: CredentialLedgerOptions): CredentialLedger {
  const entries = new Map<string, Entry>()
  for (const s of options.initial ?? []) {
    entries.set(keyOf(s.agent, s), { agent: s.agent, kind: s.kind, id: s.id, firstSeen: s.firstSeen, lastSeen: s.lastSeen, warnedAt: -Infinity })
  }
  let used = new Set<Entry>()
  let failing = false
  let flushing: Promise<void> | undefined

  async function write(): Promise<void> {
    const store = options.store
    if (store === undefined || used.size === 0) return
    const batch = used
    used = new Set()
    try {
      const stored = await store.record([...batch].map(sightingOf))
      // Another instance may have seen a credential earlier: its sighting is the one that ages it.
      for (const s of stored) {
        const e = entries.get(keyOf(s.agent, s))
        if (e !== undefined && s.firstSeen < e.firstSeen) e.firstSeen = s.firstSeen
      }
      if (failing) options.logger?.info('credential ledger written again')
      failing = false
    } catch (err) {
      for (const e of batch) used.add(e)
      if (!failing) options.logger?.warn({ cause: (err as Error).name }, 'credential ledger could not be written; kept for the next flush')
      failing = true
    }
  }

  const flush = () => {
    flushing ??= write().finally(() => {
      flushing = undefined
    })
    return flushing
  }
  const timer = setInterval(() => void flush(), options.flushIntervalMs)
  timer.unref()

  return {
    use(agent, credential, now, rule) {
      const k = keyOf(agent, credential)
      let e = entries.get(k)
      if (e === undefined) {
        e = { agent, kind: credential.kind, id: credential.id, firstSeen: now, lastSeen: now, warnedAt: -Infinity }
        entries.set(k, e)
      } else if (now > e.lastSeen) {
        e.lastSeen = now
      }
      used.add(e)
      const state = credentialAgeState(e.firstSeen, now, rule)
      if (state === 'rotate_soon' && now - e.warnedAt >= WARN_EVERY_SECONDS) {
        e.warnedAt = now
        const daysLeft = Math.max(0, Math.floor((e.firstSeen + rule.maxAge - now) / 86_400))
        options.logger?.warn(
          { agent, credential_kind: credential.kind, credential: credential.id.slice(0, 12), days_left: daysLeft },
          'credential nears max_credential_age; rotate it',
        )
      }
      return { firstSeen: e.firstSeen, state }
    },
    flush,
    async close() {
      clearInterval(timer)
      await flush()
      // A flush started before close may have left a failed batch: one more try.
      await flush()
    },
  }
}

const thumbprints = new WeakMap<KeyObject, string>()
/** RFC 7638 members of each key type, in lexicographic order. */
const THUMBPRINT_MEMBERS: Record<string, readonly string[]> = { RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'] }

/** The RFC 7638 JWK SHA-256 thumbprint of a public key, base64url; computed once per key object. */
export function keyThumbprint(key: KeyObject): string {
  const known = thumbprints.get(key)
  if (known !== undefined) return known
  const jwk = key.export({ format: 'jwk' }) as Record<string, unknown>
  const members = THUMBPRINT_MEMBERS[String(jwk['kty'])] ?? Object.keys(jwk).sort()
  // RFC 7638 §3.2: the required members only, sorted, no whitespace: JSON.stringify of an object built in that order.
  const canonical = JSON.stringify(Object.fromEntries(members.map((m) => [m, jwk[m]])))
  const thumbprint = createHash('sha256').update(canonical).digest('base64url')
  thumbprints.set(key, thumbprint)
  return thumbprint
}
