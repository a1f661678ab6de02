#!/usr/bin/env node
import { availableParallelism } from 'node:os'
import { Command, InvalidArgumentError } from 'commander'
import { keysGenerate, keysRotate } from './keys.js'
import { MAX_TOKEN_TTL } from '../policy/schema.js'
import { adminKey } from './admin.js'
import { revokeAgent, revokeChain, revokeJti, revokeLift, revokeList, revokeSub } from './revoke.js'
import { policyCheck, policySecret } from './policy.js'
import { serve } from './serve.js'
import { auditQuery, auditVerify, migrate } from './audit.js'
import { configCheck } from './config.js'

const program = new Command()
  .name('mandate')
  .description('Mandate: a credential broker for AI agents (OAuth 2.0 Token Exchange, RFC 8693).')
  .showHelpAfterError()

function seconds(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > 365 * 86_400) throw new InvalidArgumentError('must be a number of seconds')
  return n
}

function workers(value: string): number {
  if (value === 'auto') return availableParallelism()
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError('must be a number of processes (1-256) or auto')
  return n
}

function port(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number')
  return n
}

program
  .command('serve')
  .description('run the broker')
  .option('--dev', 'embedded defaults for a laptop: dev user issuer, demo policies from policies/dev, generated keys; never in production')
  .option('-c, --config <file>', 'YAML config file (default: $MANDATE_CONFIG)')
  .option('-p, --port <port>', 'listen port (overrides config and $PORT)', port)
  .option('-w, --workers <n>', 'worker processes sharing the port (node cluster), or auto for one per core; more than 1 needs DATABASE_URL and REDIS_URL', workers)
  .addHelpText(
    'after',
    `
Environment: MANDATE_CONFIG, MANDATE_ISSUER, HOST, PORT, MANDATE_ADMIN_PORT
(the admin API on a port of its own: a thread of its own with PostgreSQL and
Redis), MANDATE_POLICIES_DIR, MANDATE_DATA_DIR, MANDATE_SIGNING_KEYS_FILE, MANDATE_ADMIN_KEYS_FILE (further
admin key entries, read at start), DATABASE_URL (PostgreSQL; PGlite
under the data dir when unset), REDIS_URL (revocation list shared by every
instance; in-process when unset), MANDATE_REDIS_PREFIX (prefix of its keys),
MANDATE_CHECKPOINT_DIR (signed audit checkpoints), MANDATE_INSTANCE_ID (names
this instance in audit records), LOG_LEVEL, OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_HEADERS and OTEL_SERVICE_NAME (OpenTelemetry export over
OTLP/HTTP; nothing is exported when the endpoint is unset). Every setting:
docs/configuration.md.
Exits 1 with one line on stderr when the config or the policies are invalid.
SIGTERM or SIGINT: stops accepting, finishes the requests in flight, writes
the queued audit records and a last checkpoint, closes PostgreSQL and Redis,
exits 0 (1 if that took over 10 s). With --workers, the primary passes the
signal on to every worker and exits 0 once they all did.`,
  )
  .action(serve)

program
  .command('config')
  .description('work with the config')
  .command('check')
  .description('validate the config, the policies it points at and the signing keys, as serve would at start, and what readiness would refuse; exit 0 valid, 1 not')
  .option('-c, --config <file>', 'YAML config file (default: $MANDATE_CONFIG)')
  .option('--dev', 'with the embedded --dev defaults')
  .option('--online', 'also fetch every trusted issuer’s JWKS and connect to PostgreSQL and Redis (writes nothing)')
  .addHelpText(
    'after',
    `
Prints every error in one run: config errors with their path and, when the
config file sets them, file:line:column; policy errors as
file:line:column: field: reason. Besides what serve refuses, it fails on a
policy whose users' issuer is not in trust.subjects (or, for a workload
agent, not in trust.workloads), an expired policy, and, without --dev, no
admin key. A policy expiring within 14 days is a warning. Without --online
it connects to nothing.`,
  )
  .action(configCheck)

const policy = program.command('policy').description('work with agent policy files')
policy
  .command('check')
  .description('validate every policy file in a directory; exits 1 on any error, printing file:line:column: field: reason')
  .argument('[dir]', 'policy directory', './policies')
  .action(policyCheck)
policy
  .command('secret')
  .description('generate a client secret (256 random bits) and the secret_sha256 a policy stores for it')
  .action(policySecret)

const keys = program.command('keys').description('manage the broker’s signing keys')
keys
  .command('generate')
  .description('write a new private ES256 JWK set for signing.keys_file (mode 0600; never overwrites)')
  .argument('<file>', 'where to write it')
  .action(keysGenerate)
keys
  .command('rotate')
  .description('add a new signing key that signs after a delay, and retire keys whose tokens have all expired')
  .argument('<file>', 'the private JWK set (signing.keys_file); rewritten in place, mode 0600')
  .option('--activate-after <seconds>', 'delay before the new key signs: longer than it takes every instance to re-read the file and every verifier to refresh the JWKS', seconds, 900)
  .option('--retire-after <seconds>', 'how long a superseded key stays published: at least the longest token lifetime', seconds, MAX_TOKEN_TTL + 300)
  .addHelpText(
    'after',
    `
Every instance re-reads the keys file within 5 s of a change and publishes
every key in it at /.well-known/jwks.json at once; each key signs only from
its mandate_activates_at. So: rotate, distribute the file (e.g. update the
Kubernetes Secret; the kubelet takes up to a minute or two), and the new key
signs once the delay is over, on every instance at the same second. Run it
again after the next rotation is due; one rotation may be pending at a time.
Retired keys leave the JWKS; their public halves stay in the file under
"retired" so that \`mandate audit verify --checkpoints\` still checks the
checkpoints they signed.`,
  )
  .action((file: string, o: { activateAfter: number; retireAfter: number }) => keysRotate(file, o))

const revoke = program
  .command('revoke')
  .description('kill switch: revoke through a running broker’s admin API (key in $MANDATE_ADMIN_KEY)')
  .addHelpText('after', '\nThe broker is $MANDATE_URL (default http://localhost:8080) unless --url says otherwise.')
const url = ['--url <url>', 'broker base URL (default: $MANDATE_URL or http://localhost:8080)'] as const
const reason = ['--reason <text>', 'why (recorded with the revocation; required)'] as const
const iss = ['--iss <issuer>', 'the user’s issuer (a sub is unique only within it); default: the only issuer trusted for users'] as const
revoke.command('agent').description('kill an agent: its live tokens die, and it gets nothing until lifted').argument('<agent>')
  .requiredOption(...reason).option('--sub <sub>', 'only for this user').option(...iss)
  .option('--force', 'kill it even though no policy defines it (pre-emptively)').option(...url).action(revokeAgent)
revoke.command('sub').description('kill a user (issuer and sub): every delegation made for them, until lifted').argument('<sub>')
  .requiredOption(...reason).option(...iss).option('--force', 'kill at an issuer the broker does not trust (pre-emptively)')
  .option(...url).action(revokeSub)
revoke.command('jti').description('revoke one token').argument('<jti>').requiredOption(...reason).option(...url).action(revokeJti)
revoke.command('chain').description('revoke a token and every token delegated from it').argument('<jti>')
  .requiredOption(...reason).option(...url).action(revokeChain)
revoke.command('lift').description('lift an agent or user kill (tokens issued before it stay dead); 409 if already lifted').argument('<id>')
  .option(...url).action(revokeLift)
revoke.command('list').description('list revocations, newest first (auditor role)').option('--limit <n>', '1-1000', '100')
  .option(...url).action(revokeList)

const configOption = ['-c, --config <file>', 'YAML config file (default: $MANDATE_CONFIG); else the environment'] as const
const dbHelp = `
The database is PostgreSQL when DATABASE_URL is set, else PGlite under
$MANDATE_DATA_DIR (default ./data), which a running broker holds: stop it first.`

program
  .command('migrate')
  .description('apply pending database migrations (serve also does at start), then exit')
  .option(...configOption)
  .addHelpText('after', dbHelp)
  .action(migrate)

const audit = program.command('audit').description('the delegation log: verify its hash chains, query it')
audit
  .command('verify')
  .description('recompute every hash chain and name the first record changed, removed or inserted; exit 0 ok, 1 findings, 2 error, 3 records no checkpoint covers for too long')
  .option('--checkpoints <dir>', 'also hold the log against the signed checkpoints in this directory (catches truncation and rewrites)')
  .option('--jwks <file|url>', 'public keys the checkpoints are signed with (default: the signing keys file)')
  .option('--json', 'one JSON report on stdout')
  .option(...configOption)
  .addHelpText('after', dbHelp)
  .action(auditVerify)
audit
  .command('query')
  .description('records newest first, filtered; or with --chain the delegation tree around a token')
  .option('--agent <agent>', 'the agent acted or is in the actor chain')
  .option('--sub <sub>', 'for this user')
  .option('--iss <issuer>', 'with --sub: the user’s issuer (records naming no issuer for that sub match too)')
  .option('--jti <jti>', 'about this token')
  .option('--event <type>', 'an event type or a family such as token.* or admin.*')
  .option('--from <time>', 'at or after (epoch seconds or RFC 3339)')
  .option('--to <time>', 'at or before (epoch seconds or RFC 3339)')
  .option('--limit <n>', '1-500', '50')
  .option('--before <cursor>', 'the next page: the cursor the previous page printed')
  .option('--chain <jti>', 'the delegation tree containing this token, with its revocations')
  .option('--json', 'JSON, one record per line')
  .option(...configOption)
  .addHelpText('after', dbHelp)
  .action(auditQuery)

program
  .command('admin-key')
  .description('generate an admin API key (256 random bits) and the config entry that holds its SHA-256')
  .argument('<name>', 'who will hold it (recorded with every action)')
  .option('--role <role...>', 'responder, auditor and/or admin', ['responder'])
  .action(adminKey)

await program.parseAsync()
