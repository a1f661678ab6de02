/**
 * What the command tree's files share: lazy actions (a command's module is
 * imported only when it runs, so `--help` and usage errors load nothing) and
 * the options of every command that calls a running broker.
 */
import type { Command } from 'commander'

/** An action that imports `name` from its module only when the command runs. */
export function lazy<M>(load: () => Promise<M>, name: keyof M): (...args: unknown[]) => Promise<void> {
  return async (...args) => {
    const fn = (await load())[name] as (...a: unknown[]) => unknown
    await fn(...args)
  }
}

/** Options every command that calls a broker takes, added last so that --help lists them after its own. */
export function brokerOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'broker admin API base URL (default: $MANDATE_URL, the profile’s url, or http://localhost:8080)')
    .option('--json', 'print the broker’s JSON answer instead of a table')
}
