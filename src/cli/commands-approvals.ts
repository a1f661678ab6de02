/**
 * The `approvals` commands: people deciding agents' requests for tokens that
 * need human approval (OpenID CIBA, poll mode), through a running broker's
 * admin API. Definitions only; the actions' module loads when one runs.
 */
import { type Command, InvalidArgumentError, Option } from 'commander'
import { brokerOptions, lazy } from './command-kit.js'
import { BROKER_EXIT_CODES_HELP } from './exit-codes.js'

/** The statuses an approval moves through, as the admin API filters them. */
export const APPROVAL_STATUSES = ['pending', 'approved', 'denied', 'expired', 'cancelled', 'issued'] as const

function pageLimit(value: string): string {
  if (!/^[1-9][0-9]{0,2}$/.test(value) || Number(value) > 500) throw new InvalidArgumentError('must be 1-500')
  return value
}
function pageOffset(value: string): string {
  if (!/^(0|[1-9][0-9]{0,8})$/.test(value)) throw new InvalidArgumentError('must be a number of approvals to skip')
  return value
}

/** `approvals list|show|approve|deny`. */
export function addApprovalCommands(program: Command): void {
  const approvals = program
    .command('approvals')
    .description('human approval of agents’ token requests (OpenID CIBA): list and show them (auditor role), approve or deny (approver or admin role)')
    .addHelpText(
      'after',
      `
An agent whose grant says "approval: { required: true, ... }" asks for its
token at /oauth2/bc-authorize and waits; a person the grant's "approvers" name
decides here. Compare the binding
message with what the agent shows its user: approve only when they match.
approve and deny need an admin key whose "approver" names that person
(issuer and sub for approvers: user; email or name for owner; groups for
group:NAME) and the approver or admin role.
The broker and the admin key are found as for "mandate revoke" (see its --help).
${BROKER_EXIT_CODES_HELP}`,
    )
  const action = (name: string) => lazy(() => import('./approvals.js'), name as keyof typeof import('./approvals.js'))
  brokerOptions(
    approvals
      .command('list')
      .description('approvals, newest first: status, agent, user, audience and scopes, binding message, authorization details, expiry')
      .addOption(new Option('--status <status>', 'only approvals in this status').choices(APPROVAL_STATUSES))
      .option('--agent <agent>', 'only this agent’s')
      .option('--limit <n>', '1-500 (default: the broker’s)', pageLimit)
      .option('--offset <n>', 'the next page (printed on stderr as "more: --offset <n>")', pageOffset),
  ).action(action('approvalsList'))
  brokerOptions(
    approvals
      .command('show')
      .description('one approval: its binding message first, then who asks what for whom, its authorization details and its decision')
      .argument('<id>', 'the approval’s id (as approvals list prints it)'),
  ).action(action('approvalsShow'))
  const note = ['--note <text>', 'why, kept with the decision'] as const
  brokerOptions(
    approvals
      .command('approve')
      .description('approve a pending request: the agent gets its token at its next poll (409 when it is no longer pending)')
      .argument('<id>')
      .option(...note),
  ).action(action('approvalsApprove'))
  brokerOptions(
    approvals
      .command('deny')
      .description('deny a pending request: the agent’s next poll is refused with access_denied (409 when it is no longer pending)')
      .argument('<id>')
      .option(...note),
  ).action(action('approvalsDeny'))
}
