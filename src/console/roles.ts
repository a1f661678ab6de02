/**
 * Who may use the console, and as what: roles are given by the config
 * (`console.roles`) to people's emails and groups as their provider's ID
 * token states them. What each role may do through the admin API is
 * http/admin-auth.ts's.
 */
import type { Approver } from '../core/approval.js'
import { DEV_USER_ISSUER } from '../tokens/dev-issuer.js'

export const CONSOLE_ROLES = ['viewer', 'responder', 'owner', 'admin'] as const
export type ConsoleRole = (typeof CONSOLE_ROLES)[number]

/** A signed-in person: an approver (the same identity decides approval requests) with the console roles they hold. */
export interface ConsolePerson extends Approver {
  readonly iss: string
  readonly sub: string
  readonly roles: readonly ConsoleRole[]
}

/** Role → its members, each an email or `group:NAME` (config/schema.ts). */
export type ConsoleRoleMembers = Readonly<Record<ConsoleRole, readonly string[]>>

/** The roles a person holds: those naming one of their (verified) emails or groups. None: they may not sign in. */
/** Whether a person answers for an agent: its policy's `owner` is one of their emails or groups (compared as `approvers: owner` compares). */
export function ownsAgent(person: Pick<Approver, 'names' | 'groups'>, owner: string): boolean {
  const o = owner.trim().toLowerCase()
  return o !== '' && [...person.names, ...person.groups].some((n) => n.trim().toLowerCase() === o)
}

export function rolesOf(members: ConsoleRoleMembers, person: Pick<Approver, 'names' | 'groups'>): ConsoleRole[] {
  const held = new Set([...person.names, ...person.groups.map((g) => `group:${g}`)])
  return CONSOLE_ROLES.filter((role) => members[role].some((m) => held.has(m)))
}

/**
 * The people of `mandate serve --dev`, one per role, signed in with one
 * click as users of the dev issuer (whose tokens the dev broker trusts): so
 * alice, the user of the README's walkthrough, is also the one who approves
 * her own approval requests (`approvers: user`). oscar owns the dev agents
 * (their policies' owner is platform-team@example.com).
 */
export const DEV_CONSOLE_PEOPLE: readonly ConsolePerson[] = [
  devPerson('alice', 'admin'),
  devPerson('rita', 'responder'),
  devPerson('oscar', 'owner', ['platform-team@example.com']),
  devPerson('vera', 'viewer'),
]

function devPerson(sub: string, role: ConsoleRole, groups: readonly string[] = []): ConsolePerson {
  const email = `${sub}@example.com`
  return { iss: DEV_USER_ISSUER, sub, names: [email], groups: [...groups], label: `${email} (dev user ${sub})`, roles: [role] }
}
