#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander'
import { keysGenerate } from './keys.js'
import { policyCheck, policySecret } from './policy.js'
import { serve } from './serve.js'

const program = new Command()
  .name('mandate')
  .description('Mandate: a credential broker for AI agents (OAuth 2.0 Token Exchange, RFC 8693).')
  .showHelpAfterError()

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
  .addHelpText(
    'after',
    `
Environment: MANDATE_CONFIG, MANDATE_ISSUER, HOST, PORT, MANDATE_POLICIES_DIR,
MANDATE_DATA_DIR, MANDATE_SIGNING_KEYS_FILE, LOG_LEVEL (see README "Configuration").
Exits 1 with one line on stderr when the config or the policies are invalid.`,
  )
  .action(serve)

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

await program.parseAsync()
