/**
 * The approver's sign-in pages, as `approvals.sign_in` configures them: the
 * signed links and the OpenID Provider client. Absent without `sign_in` (or
 * without the database the requests live in).
 */
import { readFile } from 'node:fs/promises'
import { createApprovalLinks, type ApprovalLinks } from '../approvals/link.js'
import { createApprovalSignIn, type ApprovalSignIn } from '../approvals/sign-in.js'
import type { Config } from '../config/schema.js'
import type { SigningKeys } from '../tokens/keys.js'

export interface ApprovalPages {
  readonly links: ApprovalLinks
  readonly signIn: ApprovalSignIn
}

/** Throws `TypeError` when the client secret file cannot be read or is empty. */
export async function approvalPagesOf(config: Config, keys: SigningKeys, now: () => number): Promise<ApprovalPages | undefined> {
  const signIn = config.approvals.sign_in
  if (signIn === undefined) return undefined
  let secret: string
  try {
    secret = (await readFile(signIn.client_secret_file, 'utf8')).trim()
  } catch (err) {
    throw new TypeError(`approvals.sign_in.client_secret_file ${signIn.client_secret_file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  if (secret === '') throw new TypeError(`approvals.sign_in.client_secret_file ${signIn.client_secret_file}: is empty`)
  return {
    links: createApprovalLinks({ issuer: config.issuer, keys, now }),
    signIn: createApprovalSignIn({
      issuer: signIn.issuer,
      clientId: signIn.client_id,
      clientSecret: secret,
      redirectUri: `${config.issuer}/approvals/callback`,
      groupsClaim: signIn.groups_claim,
      groupsScope: signIn.groups_scope,
      emailClaim: signIn.email_claim,
    }),
  }
}
