import type { Closers } from '../core/async.js'
import type { Config } from '../config/schema.js'
import { parseAgeDuration, type CredentialAgeRule, type CredentialReads } from '../core/credential-age.js'
import { createCredentialReads, createSqlCredentialStore } from '../audit/credentials.js'
import type { Logger } from '../telemetry/log.js'
import { createCredentialLedger, type CredentialLedger } from '../tokens/credential-ledger.js'
import type { DurableStores } from './storage.js'

/**
 * The credential ledger, loaded from the database before the first request
 * (so that a restart does not make old credentials young), flushed on its
 * timer and once more at close, before the database closes.
 */
export async function openCredentialLedger(
  config: Config,
  database: DurableStores['database'],
  log: Logger,
  closers: Closers,
): Promise<{ ledger: CredentialLedger; rule: CredentialAgeRule; reads: CredentialReads | undefined }> {
  const store = database === undefined ? undefined : createSqlCredentialStore(database.db)
  const c = config.governance.credentials
  const ledger = createCredentialLedger({
    store,
    flushIntervalMs: c.flush_interval_ms,
    logger: log.child({ module: 'credentials' }),
    ...(store === undefined ? {} : { initial: await store.read() }),
  })
  closers.add(() => ledger.close())
  const rule = { maxAge: parseAgeDuration(c.max_age)!, warnBefore: parseAgeDuration(c.warn_before)! }
  return { ledger, rule, reads: database === undefined ? undefined : createCredentialReads(database.db, rule) }
}
