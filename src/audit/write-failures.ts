/**
 * Which failures of an audit write are whose: a refusal of the whole
 * statement, of one record's values, or no answer at all (sql.ts).
 */
import { codeOf, serverError } from '../storage/database.js'
import { AuditUnavailable } from './port.js'

/**
 * The server refused the statement: nothing of it committed. A unique
 * violation is not counted as one: a late commit of an unconfirmed group can
 * hold those seqs, so whether it committed is unknown.
 */
export function serverRefused(err: unknown): boolean {
  return serverError(err) !== undefined && codeOf(err) !== '23505'
}

/**
 * Refused for a value the statement carried (SQLSTATE class 22, data
 * exception, such as 22021 for a NUL in text; or class 23, integrity
 * constraint), rather than because the server takes no write at all (disk
 * full, read-only, no privilege, a statement timeout).
 */
export function refusedForItsData(err: unknown): boolean {
  if (err instanceof UnencodableRecord) return true
  const code = codeOf(err)
  return serverRefused(err) && (code.startsWith('22') || code.startsWith('23'))
}

/**
 * A record the writer cannot encode (a value no record holds, such as a
 * time that is not whole seconds): refused before anything is sent, and
 * its caller's failure alone, as a value the server refuses is.
 */
export class UnencodableRecord extends AuditUnavailable {}
