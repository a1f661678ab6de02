/**
 * `mandate revoke …`: the kill switch through a running broker's admin API
 * (/admin/revocations). A table for people, `--json` for scripts; failures
 * as one line and an exit code (client.ts).
 */
import { adminRequest, CliError, resolveBroker, run, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import type { RevocationJson } from './output.js'
import { printable } from './printable.js'

/** Options every `mandate revoke` subcommand takes. */
export interface AdminCallOptions extends BrokerOptions {
  reason?: string
  sub?: string
  /** The user's issuer; the broker's only trusted user issuer when left out. */
  iss?: string
  /** Kill an agent no policy defines, or a user at an issuer not trusted. */
  force?: boolean
  limit?: string
  /** `revoke list`: the page after the one that ended with this revocation id. */
  before?: string
}

const reasonOf = (options: AdminCallOptions): string => {
  if (options.reason === undefined || options.reason.trim() === '') throw new CliError('--reason must say why (it is recorded with the revocation)', EXIT.USAGE)
  return options.reason
}

/** The user part of a kill: `iss` only with a `sub` (the broker answers 400 otherwise), and `force` when asked. */
const userAndForce = (sub: string | undefined, o: AdminCallOptions) => ({
  ...(sub === undefined ? {} : { sub }),
  ...(o.iss === undefined ? {} : { iss: o.iss }),
  ...(o.force === true ? { force: true } : {}),
})

const write = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)

/** Prints one revocation record the broker answered with, after a line saying what happened. */
async function show(o: AdminCallOptions, verb: string, answer: unknown): Promise<void> {
  const r = answer as RevocationJson
  if (o.json === true) return void write(JSON.stringify(r))
  const { revocationTable, targetText } = await import('./output.js')
  write(printable(`${verb} ${r.kind} ${targetText(r)}`))
  write(revocationTable(r))
}

const create = (o: AdminCallOptions, body: Record<string, unknown>) =>
  run(async () => {
    const reason = reasonOf(o) // before anything is read or sent
    const b = await resolveBroker(o)
    await show(o, 'revoked', await adminRequest(b, 'POST', '/admin/revocations', { ...body, reason }))
  })

export const revokeAgent = (agent: string, o: AdminCallOptions) => create(o, { agent, ...userAndForce(o.sub, o) })
export const revokeInstance = (agent: string, instance: string, o: AdminCallOptions) =>
  create(o, { agent, instance, ...(o.force === true ? { force: true } : {}) })
export const revokeSub = (sub: string, o: AdminCallOptions) => create(o, userAndForce(sub, o))
export const revokeJti = (jti: string, o: AdminCallOptions) => create(o, { jti })
export const revokeChain = (jti: string, o: AdminCallOptions) => create(o, { chain: jti })
export const revokeLift = (id: string, o: AdminCallOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    await show(o, 'lifted (tokens issued before it stay dead):', await adminRequest(b, 'DELETE', `/admin/revocations/${encodeURIComponent(id)}`))
  })

/** `mandate revoke list`: newest first; the next page's `--before` on stderr, so that stdout stays the table or the JSON. */
export const revokeList = (o: AdminCallOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const query = new URLSearchParams({ limit: o.limit ?? '100', ...(o.before === undefined ? {} : { before: o.before }) })
    const page = (await adminRequest(b, 'GET', `/admin/revocations?${query.toString()}`)) as { revocations: RevocationJson[]; next: string | null }
    if (o.json === true) write(JSON.stringify(page))
    else if (page.revocations.length === 0) write('no revocations')
    else write((await import('./output.js')).revocationsTable(page.revocations))
    if (page.next !== null && o.json !== true) process.stderr.write(`more: --before ${page.next}\n`)
  })

/** `mandate revoke status <id>`: where the revocation has reached (instances, feed subscribers, SSF receivers). */
export const revokeStatus = (id: string, o: AdminCallOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const answer = await adminRequest(b, 'GET', `/admin/revocations/${encodeURIComponent(id)}/propagation`)
    if (o.json === true) return void write(JSON.stringify(answer))
    const { propagationTable } = await import('./propagation-output.js')
    write(propagationTable(answer as Parameters<typeof propagationTable>[0]))
  })
