/**
 * The JSON Schemas a grant declares for its RFC 9396 `authorization_details`
 * types, compiled once when the policy loads (ajv, JSON Schema 2020-12), so a
 * request's details are checked without compiling anything.
 */
import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js'
import type { DetailTypes, DetailValidator } from '../core/approval.js'

// strict: a schema with an unknown keyword or a typo is refused at load, not silently ignored.
// No `$data`, no remote `$ref`s (loadSchema unset): a schema is its own file's text, nothing else.
const ajv = new Ajv2020({ strict: true, allErrors: false, validateFormats: false })

/** Compiled validators by type, or the first schema that does not compile and why. */
export function compileDetailTypes(schemas: Readonly<Record<string, Record<string, unknown>>>): { types: DetailTypes } | { type: string; reason: string } {
  const types = new Map<string, DetailValidator>()
  for (const [type, schema] of Object.entries(schemas)) {
    let validate
    // Without its `$id`, a schema is registered under no name: two files' `$id`s cannot collide.
    const { $id: _, ...own } = schema
    try {
      validate = ajv.compile(own)
      // Compiled functions live on in the validator; the registry's copy would only grow with every reload.
      ajv.removeSchema(own)
    } catch (err) {
      return { type, reason: (err as Error).message }
    }
    types.set(type, (value) => (validate(value) ? undefined : describe(validate.errors)))
  }
  return { types }
}

/** ajv's first error, as `/path: message` (the path is the client's own member names: it is logged, never sent). */
function describe(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0]
  return e === undefined ? 'does not fit the schema' : `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`
}
