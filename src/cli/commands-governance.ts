/**
 * The governance commands: the agent inventory and attestation, webhook
 * delivery state, and the questions asked of a running broker about
 * policies (explain, unused, shrink). Definitions only; each action's module
 * loads when it runs.
 */
import type { Command } from 'commander'
import { brokerOptions, lazy } from './command-kit.js'
import { BROKER_EXIT_CODES_HELP } from './exit-codes.js'

/** `policy explain|unused|shrink`, under the `policy` command. */
export function addPolicyAnalysisCommands(policy: Command): void {
  brokerOptions(
    policy
      .command('explain')
      .description(
        'ask a running broker what its token endpoint would answer AGENT for USER, and why: every check in the exchange’s order ' +
          '(auditor role; mints nothing, spends no rate limit); exits 0 when granted, 1 when denied',
      )
      .requiredOption('--agent <agent>', 'the agent asking')
      .requiredOption('--user <iss:sub>', 'the user: issuer and sub, split at the last colon (e.g. https://idp.example.com:alice)')
      .requiredOption('--audience <uri>', 'the audience (or resource) asked for')
      .option('--scope <scopes>', 'the scopes asked for, space-separated (default: the grant’s default scopes)')
      .option('--claims <file.json>', 'other claims of the user’s token (scope, groups, may_act, iat, exp), as a JSON object')
      .option('--ttl <seconds>', 'the lifetime asked for')
      .option('--chain <agents>', 'for a re-delegation: the agents already in the chain, newest first, comma-separated (depth = their number + 1)'),
  ).action(lazy(() => import('./policy-explain.js'), 'policyExplain'))
  brokerOptions(
    policy
      .command('unused')
      .description(
        'what agents are granted but did not use in the window (audiences, scopes, delegation depth), and what they asked for and were only ever denied, ' +
          'from a running broker’s usage summaries (auditor role); nothing is suggested for an agent younger than the window or with fewer than ' +
          'governance.shrink_min_tokens tokens in it',
      )
      .argument('[agent]', 'one agent (default: every agent a policy names)')
      .option('--since <days>', 'the window, in days ending now', '30d'),
  ).action(lazy(() => import('./policy-unused.js'), 'policyUnused'))
  brokerOptions(
    policy
      .command('shrink')
      .description(
        'print a unified diff of AGENT’s policy file without what it did not use in the window (as `policy unused` reports it), keeping comments ' +
          'and layout; --write applies it. The file is read from --dir, the usage from a running broker (auditor role)',
      )
      .argument('<agent>')
      .option('--since <days>', 'the window, in days ending now', '30d')
      .option('--dir <dir>', 'the policy directory holding the agent’s file', './policies')
      .option('--write', 'write the shrunk policy to the file'),
  ).action(lazy(() => import('./policy-shrink.js'), 'policyShrink'))
}

/** `webhooks list` and `agents list|show|attest`. */
export function addAgentCommands(program: Command): void {
  brokerOptions(
    program
      .command('webhooks')
      .description('webhook notifications (notifications.webhooks): their delivery state, through a running broker’s admin API')
      .command('list')
      .description('each webhook: last success, last failure and why, events pending, next attempt (auditor role)'),
  ).action(lazy(() => import('./webhooks.js'), 'webhooksList'))
  const agents = program
    .command('agents')
    .description('the agent inventory: every agent, its owner, state and usage (auditor role); owners’ attestations (admin role)')
    .addHelpText('after', `\nThe broker and the admin key are found as for "mandate revoke" (see its --help).\n${BROKER_EXIT_CODES_HELP}`)
  const agentsAction = (name: string) => lazy(() => import('./agents.js'), name as keyof typeof import('./agents.js'))
  brokerOptions(
    agents
      .command('list')
      .description('every agent of the policies and of the log (no policy: state unknown)')
      .option('--owner <owner>', 'only this owner')
      .option(
        '--state <state>',
        'active, expiring, expired, killed, quarantined, attestation_overdue, orphaned, dormant or unknown; or shared-secret: agents still on client_secret_basic, with the suggested fix',
      )
      .option('--expiring <duration>', 'expiring within this long, e.g. 14d (expired ones included)')
      .option('--sort <key>', 'agent, owner, expires, last_token, tokens_24h or tokens_30d')
      .option('--limit <n>', '1-500 (default 100)')
      .option('--offset <n>', 'the next page (printed on stderr as "more: --offset <n>")'),
  ).action(agentsAction('agentsList'))
  brokerOptions(
    agents
      .command('show')
      .description('one agent: usage per grant, kills, live instances (last hour), recent denials and anomalies, delegation chains')
      .argument('<agent>'),
  ).action(agentsAction('agentsShow'))
  brokerOptions(
    agents
      .command('attest')
      .description('record that the agent’s owner vouches for it (admin role): lifts an overdue attestation or a dormancy suspension')
      .argument('<agent>')
      .option('--note <text>', 'what the owner said, kept in the agent.attested record')
      .addHelpText(
        'after',
        '\nThe record names the admin key. The next attestation is due attest_every from now (the policy\u2019s; without it, when the agent\nwould turn dormant unused). Other instances see it within governance.lifecycle_sweep_seconds.',
      ),
  ).action(agentsAction('agentsAttest'))
}
