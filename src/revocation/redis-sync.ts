/**
 * The full resync of a mirror from Redis (redis.ts "The loop", second case):
 * one atomic snapshot of the whole list, merged with what the mirror and the
 * durable log hold, so that a resync never drops a revocation this instance
 * knew.
 */
import type { Redis } from 'ioredis'
import { decodeRevocation } from '@mandate/verifier/codec'
import type { Revocation, RevocationMirror } from './port.js'
import { runScript, SNAPSHOT } from './redis-scripts.js'
import { expired, nowSeconds, type WriteContext } from './redis-writer.js'

export interface SyncContext extends WriteContext {
  readonly mirror: RevocationMirror
}

export interface Synced {
  readonly epoch: string
  /** The stream id to read on from: the last entry at the snapshot. */
  readonly lastId: string
  /** Records the mirror or the durable log held that Redis lacked (or held unlifted): to write back. */
  readonly missing: readonly Revocation[]
}

/**
 * Replaces the mirror with Redis's list ∪ the mirror's ∪ `durable` (a lifted
 * version wins over an unlifted one; expired ones are left out). Undefined
 * when Redis holds no epoch (flushed or restarted empty): nothing changed.
 */
export async function fullSync(ctx: SyncContext, reader: Redis, durable: readonly Revocation[]): Promise<Synced | undefined> {
  const [epoch, tail, flat] = await ctx.lifetime.guard(runScript(reader, SNAPSHOT, ctx.keys, {}))
  if (epoch === null) return undefined
  // From here to replaceAll nothing awaits: no record applied to the mirror meanwhile can be lost.
  const nowSec = nowSeconds(ctx)
  const merged = new Map<string, Revocation>()
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const record = decodeRevocation(flat[i + 1]!)
    if (record === undefined) ctx.logger.warn({ id: flat[i] }, 'unreadable revocation in redis skipped')
    else if (!expired(record, nowSec)) merged.set(record.id, record)
  }
  const missing: Revocation[] = []
  for (const record of [...ctx.mirror.records(), ...durable]) if (mergeInto(merged, record, nowSec)) missing.push(record)
  ctx.mirror.replaceAll([...merged.values()].sort(oldestFirst))
  return { epoch, lastId: tail ?? '0-0', missing }
}

/** Adds `record` unless a version at least as new is there (a lifted version wins). True when it was added. */
function mergeInto(merged: Map<string, Revocation>, record: Revocation, nowSec: number): boolean {
  if (expired(record, nowSec)) return false
  const current = merged.get(record.id)
  if (current !== undefined && !(current.liftedAt === undefined && record.liftedAt !== undefined)) return false
  merged.set(record.id, record)
  return true
}

function oldestFirst(a: Revocation, b: Revocation): number {
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}
