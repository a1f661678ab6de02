import { join } from 'node:path'
import { loadConfig, processEnv } from '../config/load.js'
import { formatIssue, loadPolicies } from '../policy/load.js'
import { loadSigningKeys } from '../tokens/keys.js'

export interface ConfigCheckOptions {
  config?: string
  dev?: boolean
}

/**
 * `mandate config check`: everything `serve` would refuse at start, without
 * starting: the config (every issue with its path), the policies directory,
 * and the signing keys file. Connects to nothing and writes nothing (a keys
 * file that `serve` would generate is reported, not created). Exit 0 when
 * `serve` would start, 1 otherwise.
 */
export async function configCheck(options: ConfigCheckOptions): Promise<void> {
  const loaded = await loadConfig(options.config, processEnv(), { dev: options.dev === true })
  if (!loaded.ok) {
    for (const issue of loaded.issues) process.stderr.write(`${issue}\n`)
    process.stderr.write(`${loaded.issues.length} error(s) in the config\n`)
    process.exitCode = 1
    return
  }
  const { config } = loaded
  let errors = 0
  const policies = await loadPolicies(config.policies_dir)
  if (policies.ok) {
    process.stdout.write(`ok  policies: ${policies.policies.length} in ${config.policies_dir}\n`)
  } else {
    for (const issue of policies.issues) process.stderr.write(`policies_dir: ${formatIssue(issue)}\n`)
    errors += policies.issues.length
  }
  const keysFile = config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json')
  try {
    const keys = await loadSigningKeys(keysFile, false)
    process.stdout.write(`ok  signing keys: ${keys.all.length} in ${keysFile}, signing with ${keys.current.kid}\n`)
  } catch (err) {
    if (config.signing.generate_if_missing && (err as Error).message.includes('ENOENT')) {
      process.stdout.write(`ok  signing keys: ${keysFile} does not exist; serve will generate it (one instance only)\n`)
    } else {
      process.stderr.write(`signing.keys_file: ${(err as Error).message}\n`)
      errors++
    }
  }
  // Where state lives, without the URLs (they may hold passwords).
  const database = config.storage.database_url === undefined ? `PGlite under ${join(config.data_dir, 'pglite')}` : 'PostgreSQL (DATABASE_URL)'
  const redis = config.storage.redis_url === undefined ? 'none: revocations in this process only; run one instance' : `Redis (REDIS_URL), key prefix ${config.storage.key_prefix}`
  process.stdout.write(
    `ok  issuer ${config.issuer}, listening on ${config.listen.host}:${config.listen.port}\n` +
      `    database: ${database}\n    revocation list: ${redis}\n    admin keys: ${config.admin.keys.length}\n`,
  )
  if (errors > 0) {
    process.stderr.write(`${errors} error(s): serve would refuse to start\n`)
    process.exitCode = 1
    return
  }
  process.stdout.write('config valid: serve would start\n')
}
