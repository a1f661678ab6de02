/** The stream consumer of the Redis revocation feed (redis.ts "The loop", last case): XREAD, and every record to the mirror. */
import type { Redis } from 'ioredis'
import { decodeRevocation } from '@mandate/verifier/codec'
import type { SyncContext } from './redis-sync.js'

const XREAD_COUNT = 500

type XreadReply = [stream: string, entries: [id: string, fields: string[]][]][] | null

/**
 * Reads up to XREAD_COUNT entries after `lastId`, waiting at most `blockMs`
 * for one, and applies each record to the mirror (an unreadable one is
 * skipped with a warning). Resolves with the id to read on from.
 */
export async function readStream(ctx: SyncContext, reader: Redis, lastId: string, blockMs: number): Promise<string> {
  const reply: XreadReply = await ctx.lifetime.guard(reader.xread('COUNT', XREAD_COUNT, 'BLOCK', blockMs, 'STREAMS', ctx.keys.stream, lastId))
  let last = lastId
  for (const [, entries] of reply ?? []) {
    for (const [id, fields] of entries) {
      last = id
      const at = fields.indexOf('r')
      const record = at >= 0 && at % 2 === 0 ? decodeRevocation(fields[at + 1] ?? '') : undefined
      if (record === undefined) ctx.logger.warn({ entry: id }, 'unreadable revocation stream entry skipped')
      else ctx.mirror.apply(record)
    }
  }
  return last
}
