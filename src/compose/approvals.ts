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
  const secret = await readClientSecret('approvals.sign_in', signIn.client_secret_file)
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

/** A sign-in client's secret from its file (`<setting>.client_secret_file`). Throws `TypeError` when it cannot be read or is empty. */
export async function readClientSecret(setting: string, file: string): Promise<string> {
  let secret: string
  try {
    secret = (await readFile(file, 'utf8')).trim()
  } catch (err) {
    throw new TypeError(`${setting}.client_secret_file ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  if (secret === '') throw new TypeError(`${setting}.client_secret_file ${file}: is empty`)
  return secret
}
