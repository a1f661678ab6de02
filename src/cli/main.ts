#!/usr/bin/env node
/**
 * The `mandate` command tree. Only commander and this file load before a
 * command runs: each action imports its module when it is chosen, so that
 * `--help`, a usage error or `completion` never load Hono, jose, the
 * database drivers, pino or OpenTelemetry.
 */
import { availableParallelism } from 'node:os'
import { Argument, Command, InvalidArgumentError, Option } from 'commander'
import { addApprovalCommands } from './commands-approvals.js'
import { brokerOptions, lazy } from './command-kit.js'
import { addAgentCommands, addPolicyAnalysisCommands } from './commands-governance.js'
import { BROKER_EXIT_CODES_HELP, EXIT, EXIT_CODES_HELP } from './exit-codes.js'

const program = new Command()
  .name('mandate')
  .description('Mandate: a credential broker for AI agents (OAuth 2.0 Token Exchange, RFC 8693).')
  // Before any subcommand exists: subcommands copy it. Usage errors exit 2, help 0.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? EXIT.OK : EXIT.USAGE))
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
The commands that call a running broker (revoke) find it at --url, else
$MANDATE_URL, else "url" in the profile file $XDG_CONFIG_HOME/mandate/config.yaml
(default ~/.config/mandate/config.yaml), else http://localhost:8080; the admin
key in $MANDATE_ADMIN_KEY, else the file the profile's "admin_key_file" names.
With listen.admin_port (MANDATE_ADMIN_PORT) the admin API answers only on that
port: point MANDATE_URL at it. See docs/cli.md.
${EXIT_CODES_HELP}

Shell completion: mandate completion bash|zsh --help.`,
  )

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
  .option(
    '-w, --workers <n>',
    'worker processes sharing the port (node cluster), or auto for one per core; more than 1 needs DATABASE_URL and REDIS_URL',
    workers,
  )
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
OTLP/HTTP; nothing is exported when the endpoint is unset),
MANDATE_PROMETHEUS_PORT and MANDATE_PROMETHEUS_HOST (GET /metrics for
Prometheus on a port of its own; off when unset). Every setting:
docs/configuration.md.
Exits 1 with one line on stderr when the config or the policies are invalid.
SIGTERM or SIGINT: stops accepting, finishes the requests in flight, writes
the queued audit records and a last checkpoint, closes PostgreSQL and Redis,
exits 0 (1 if that took over 10 s). With --workers, the primary passes the
signal on to every worker and exits 0 once they all did.`,
  )
  .action(lazy(() => import('./serve.js'), 'serve'))

program
  .command('config')
  .description('work with the config')
  .command('check')
  .description(
    'validate the config, the policies it points at and the signing keys, as serve would at start, and what readiness would refuse; exit 0 valid, 1 not',
  )
  .option('-c, --config <file>', 'YAML config file (default: $MANDATE_CONFIG)')
  .option('--dev', 'with the embedded --dev defaults')
  .option('--online', 'also fetch every trusted issuer’s JWKS and connect to PostgreSQL and Redis (writes nothing)')
  .addHelpText(
    'after',
    `
Prints every error in one run: config errors with their path and, when the
config file sets them, file:line:column; policy errors as
file:line:column: field: reason. Besides what serve refuses, it fails on a
policy whose users' issuer is in neither trust.subjects nor trust.id_jag (or, for a workload
agent, not in trust.workloads), an expired policy, and, without --dev, no
admin key. A policy expiring within 14 days is a warning. Without --online
it connects to nothing.`,
  )
  .action(lazy(() => import('./config.js'), 'configCheck'))

const policy = program.command('policy').description('work with agent policy files')
policy
  .command('check')
  .description('validate every policy file in a directory; exits 1 on any error, printing file:line:column: field: reason')
  .argument('[dir]', 'policy directory', './policies')
  .action(lazy(() => import('./policy.js'), 'policyCheck'))
brokerOptions(
  policy
    .command('secret')
    .description(
      'generate a client secret (256 random bits) and the secret_sha256 a policy stores for it; ' +
        'with --rotate AGENT, add a new one to the agent’s policy file (printed once; old and new both work), ' +
        'with --retire AGENT, remove all but the newest once the broker saw the newest in use',
    )
    .option('--rotate <agent>', 'add a new secret to this agent’s policy file, keeping its comments and layout')
    .option('--retire <agent>', 'remove every secret of this agent but the newest, once the broker’s credential ledger says the newest was used (auditor role)')
    .option('--force', 'with --retire: do not ask the broker whether the newest secret was used')
    .option('--dir <dir>', 'policy directory', './policies')
    .addHelpText(
      'after',
      `
A rollover: "--rotate AGENT" prints the new secret once and adds its sha256
to the agent's file (a list: up to 5 secrets are accepted at once); give the
agent the new secret; once it has used it, "--retire AGENT" removes the old
ones. The broker reloads the file by itself. --retire reads the credential
ledger through the admin API (found as for "mandate revoke"); --json prints
what was done as JSON.`,
    ),
).action(lazy(() => import('./policy-secret.js'), 'policySecretCommand'))
policy
  .command('diff')
  .description(
    'what every agent gains and loses between two policy directories (or a directory and itself at a git ref); ' +
      'exits 6 when anything widens (a new agent, audience or scope, a longer lifetime, deeper delegation, more users or credentials, a later expiry, a looser rate limit), 0 otherwise',
  )
  .argument('[old_dir]', 'the policies before (with --git: the working policy directory, default ./policies)')
  .argument('[new_dir]', 'the policies after')
  .option('--git <ref>', 'compare the policy directory with itself at this git ref (git archive)')
  .option('--json', 'print the differences as JSON')
  .action(lazy(() => import('./policy.js'), 'policyDiff'))
addPolicyAnalysisCommands(policy)

const keys = program.command('keys').description('manage the broker’s signing keys')
keys
  .command('generate')
  .description('write a new private ES256 JWK set for signing.keys_file (mode 0600; never overwrites)')
  .argument('<file>', 'where to write it')
  .action(lazy(() => import('./keys.js'), 'keysGenerate'))
keys
  .command('rotate')
  .description('add a new signing key that signs after a delay, and retire keys whose tokens have all expired')
  .argument('<file>', 'the private JWK set (signing.keys_file); rewritten in place, mode 0600')
  .option(
    '--activate-after <seconds>',
    'delay before the new key signs: longer than it takes every instance to re-read the file and every verifier to refresh the JWKS',
    seconds,
    900,
  )
  .option(
    '--retire-after <seconds>',
    'how long a superseded key stays published: at least the longest token lifetime (default: the longest a policy may give, plus 5 min)',
    seconds,
  )
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
  .action(async (file: string, o: { activateAfter: number; retireAfter?: number }) => {
    const [{ keysRotate }, { MAX_TOKEN_TTL }] = await Promise.all([import('./keys.js'), import('../policy/schema.js')])
    await keysRotate(file, { activateAfter: o.activateAfter, retireAfter: o.retireAfter ?? MAX_TOKEN_TTL + 300 })
  })

const revoke = program
  .command('revoke')
  .description('kill switch: revoke through a running broker’s admin API')
  .addHelpText(
    'after',
    `
The broker: --url, else $MANDATE_URL, else "url" in the profile file
($XDG_CONFIG_HOME/mandate/config.yaml, default ~/.config/mandate/config.yaml),
else http://localhost:8080. When the broker serves its admin API on a port of
its own (listen.admin_port, MANDATE_ADMIN_PORT), that is the port to name: the
main port answers admin paths with 404.
The admin key: $MANDATE_ADMIN_KEY, else the file named by "admin_key_file" in
the profile (mode 0600; the key alone). Never on the command line.
Prints a table; --json prints the broker's JSON answer instead.
${BROKER_EXIT_CODES_HELP}`,
  )

function nonBlank(value: string): string {
  if (value.trim() === '') throw new InvalidArgumentError('must say why (it is recorded with the revocation)')
  return value
}
function listLimit(value: string): string {
  if (!/^[1-9][0-9]{0,3}$/.test(value) || Number(value) > 1000) throw new InvalidArgumentError('must be 1-1000')
  return value
}

const reason = ['--reason <text>', 'why (recorded with the revocation; required)', nonBlank] as const
const iss = ['--iss <issuer>', 'the user’s issuer (a sub is unique only within it); default: the only issuer trusted for users'] as const
const revokeAction = (name: string) => lazy(() => import('./revoke.js'), name as keyof typeof import('./revoke.js'))
brokerOptions(
  revoke
    .command('agent')
    .description('kill an agent: its live tokens die, and it gets nothing until lifted')
    .argument('<agent>')
    .requiredOption(...reason)
    .option('--sub <sub>', 'only for this user')
    .option(...iss)
    .option('--force', 'kill it even though no policy defines it (pre-emptively)'),
).action(revokeAction('revokeAgent'))
brokerOptions(
  revoke
    .command('instance')
    .description('kill one running copy of an agent (its act.instance: SPIFFE ID or workload instance); its other copies keep working')
    .argument('<agent>')
    .argument('<instance>')
    .requiredOption(...reason)
    .option('--force', 'kill it even though no policy defines the agent (pre-emptively)'),
).action(revokeAction('revokeInstance'))
brokerOptions(
  revoke
    .command('sub')
    .description('kill a user (issuer and sub): every delegation made for them, until lifted')
    .argument('<sub>')
    .requiredOption(...reason)
    .option(...iss)
    .option('--force', 'kill at an issuer the broker does not trust (pre-emptively)'),
).action(revokeAction('revokeSub'))
brokerOptions(
  revoke
    .command('jti')
    .description('revoke one token')
    .argument('<jti>')
    .requiredOption(...reason),
).action(revokeAction('revokeJti'))
brokerOptions(
  revoke
    .command('chain')
    .description('revoke a token and every token delegated from it')
    .argument('<jti>')
    .requiredOption(...reason),
).action(revokeAction('revokeChain'))
brokerOptions(
  revoke.command('lift').description('lift an agent, user or instance kill (tokens issued before it stay dead); 409 if already lifted').argument('<id>'),
).action(revokeAction('revokeLift'))
brokerOptions(
  revoke
    .command('list')
    .description('list revocations, newest first (auditor role)')
    .option('--limit <n>', '1-1000', listLimit, '100')
    .option('--before <id>', 'the next page: the id the previous page ended with (printed on stderr as "more: --before <id>")'),
).action(revokeAction('revokeList'))
brokerOptions(
  revoke.command('status').description('where a revocation has reached: broker instances, feed subscribers, SSF receivers (auditor role)').argument('<id>'),
).action(revokeAction('revokeStatus'))

addAgentCommands(program)
addApprovalCommands(program)

const configOption = ['-c, --config <file>', 'YAML config file (default: $MANDATE_CONFIG); else the environment'] as const
const dbHelp = `
The database is PostgreSQL when DATABASE_URL is set, else PGlite under
$MANDATE_DATA_DIR (default ./data), which a running broker holds: stop it first.`

program
  .command('migrate')
  .description('apply pending database migrations (serve also does at start), then exit')
  .option(...configOption)
  .addHelpText('after', dbHelp)
  .action(lazy(() => import('./audit.js'), 'migrate'))

const audit = program.command('audit').description('the delegation log: verify its hash chains, query it')
audit
  .command('verify')
  .description(
    'recompute every hash chain and name the first record changed, removed or inserted; exit 0 ok, 1 findings, 2 error, 3 records no checkpoint covers for too long',
  )
  .option('--checkpoints <dir>', 'also hold the log against the signed checkpoints in this directory (catches truncation and rewrites)')
  .option('--jwks <file|url>', 'public keys the checkpoints are signed with (default: the signing keys file)')
  .option('--json', 'one JSON report on stdout')
  .option(...configOption)
  .addHelpText('after', dbHelp)
  .action(lazy(() => import('./audit.js'), 'auditVerify'))
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
  .action(lazy(() => import('./audit.js'), 'auditQuery'))
brokerOptions(
  audit
    .command('show')
    .description(
      'the full audit record(s) of one token request, from a running broker (auditor role): the reason of a denial, the agent, the user, ' +
        'the audiences and scopes asked for, the time. The id is the answer’s X-Request-Id, or a denial’s error_uri (urn:mandate:request:ID)',
    )
    .argument('<request_id>'),
).action(lazy(() => import('./audit-show.js'), 'auditShow'))

program
  .command('admin-key')
  .description('generate an admin API key (256 random bits) and the config entry that holds its SHA-256')
  .argument('<name>', 'who will hold it (recorded with every action)')
  .addOption(
    new Option('--role <role...>', 'responder, auditor, approver and/or admin').choices(['responder', 'auditor', 'approver', 'admin']).default(['responder']),
  )
  .option('--approver <issuer:sub>', 'the person the key belongs to, who may approve agents’ requests: their IdP issuer and sub, split at the last colon')
  .action(lazy(() => import('./admin.js'), 'adminKey'))

program
  .command('completion')
  .description('print a shell completion script for bash or zsh')
  .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
  .addHelpText(
    'after',
    `
bash: add to ~/.bashrc        source <(mandate completion bash)
      or, with bash-completion: mandate completion bash > ~/.local/share/bash-completion/completions/mandate
zsh:  add to ~/.zshrc, after compinit:   source <(mandate completion zsh)
      or write it as _mandate in a directory of $fpath (before compinit runs)
Completes commands, options, their values (files, directories, choices) and
arguments; it needs mandate on the PATH (npm link, or a global install).`,
  )
  .action(async (shell: 'bash' | 'zsh') => {
    const { bashScript, zshScript } = await import('./completion.js')
    process.stdout.write(shell === 'bash' ? bashScript('mandate', program) : zshScript('mandate', program))
  })

await program.parseAsync()
