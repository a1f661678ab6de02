import { z } from 'zod'
import { Config } from '../src/config/schema.js'
import { Policy } from '../src/policy/schema.js'

/** A JSON Schema node as zod emits it; only the parts the reference reads. */
interface Node {
  type?: string | string[]
  description?: string
  default?: unknown
  enum?: unknown[]
  const?: unknown
  format?: string
  pattern?: string
  minimum?: number
  maximum?: number
  properties?: Record<string, Node>
  required?: string[]
  items?: Node
  anyOf?: Node[]
  oneOf?: Node[]
  additionalProperties?: Node | boolean
}

function typeOf(n: Node): string {
  if (n.const !== undefined) return `\`${JSON.stringify(n.const)}\``
  if (n.enum !== undefined) return n.enum.map((e) => `\`${String(e)}\``).join(' \\| ')
  const alts = n.anyOf ?? n.oneOf
  if (alts !== undefined) return [...new Set(alts.map(typeOf))].join(' \\| ')
  if (n.type === 'array') return `list of ${n.items === undefined ? 'any' : typeOf(n.items)}`
  if (n.type === 'object' && n.properties === undefined && typeof n.additionalProperties === 'object') {
    return `map of ${typeOf(n.additionalProperties)}`
  }
  const t = Array.isArray(n.type) ? n.type.join(' \\| ') : (n.type ?? 'any')
  const range = n.minimum !== undefined || n.maximum !== undefined ? ` (${n.minimum ?? ''}..${n.maximum ?? ''})` : ''
  return `${t}${n.format === 'uri' ? ' (URL)' : ''}${range}`
}

function rows(n: Node, path: string, required: boolean, out: string[]): void {
  const alts = n.oneOf ?? n.anyOf
  const objectAlts = alts?.filter((a) => a.properties !== undefined) ?? []
  if (objectAlts.length > 1) {
    if (n.description !== undefined || path !== '')
      out.push(`| \`${path}\` | one of the forms below | ${required ? 'required' : ''} | ${n.description ?? ''} |`)
    for (const alt of objectAlts) {
      const tag = Object.entries(alt.properties ?? {}).find(([, p]) => p.const !== undefined)
      const label = tag === undefined ? path : `${path} (${tag[0]}: ${String(tag[1].const)})`
      for (const [key, child] of Object.entries(alt.properties ?? {})) {
        rows(child, `${label}.${key}`, alt.required?.includes(key) ?? false, out)
      }
    }
    return
  }
  if (n.properties !== undefined) {
    for (const [key, child] of Object.entries(n.properties)) {
      rows(child, path === '' ? key : `${path}.${key}`, n.required?.includes(key) ?? false, out)
    }
    return
  }
  if (n.type === 'array' && n.items?.properties !== undefined) {
    out.push(`| \`${path}\` | list | ${required ? 'required' : fmtDefault(n.default)} | ${n.description ?? ''} |`)
    rows(n.items, `${path}[]`, false, out)
    return
  }
  const req = n.default !== undefined ? fmtDefault(n.default) : required ? 'required' : 'optional'
  out.push(`| \`${path}\` | ${typeOf(n)} | ${req} | ${(n.description ?? '').replace(/\|/g, '\\|')} |`)
}

function fmtDefault(v: unknown): string {
  if (v === undefined) return 'optional'
  return `default \`${JSON.stringify(v)}\``
}

function table(schema: z.ZodType): string {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Node
  const out = ['| key | type | required / default | meaning |', '| --- | --- | --- | --- |']
  rows(json, '', true, out)
  return out.join('\n')
}

/** Markdown reference of the config file, generated from the zod schema's descriptions. */
export const configReference = (): string => table(Config)
/** Markdown reference of a policy file, generated from the zod schema's descriptions. */
export const policyReference = (): string => table(Policy)

/** Each generated reference, the document it lives in, and its markers' name. */
export const REFERENCES = [
  { name: 'config', file: 'docs/configuration.md', make: configReference },
  { name: 'policy', file: 'docs/policies.md', make: policyReference },
] as const

export type ReferenceName = (typeof REFERENCES)[number]['name']

/**
 * Replaces the `<!-- NAME-reference:start -->…<!-- NAME-reference:end -->`
 * block in `markdown` with the reference `name`. Throws `TypeError` when the
 * markers are missing.
 */
export function renderReference(markdown: string, name: ReferenceName): string {
  const make = REFERENCES.find((r) => r.name === name)!.make
  const start = `<!-- ${name}-reference:start -->`
  const end = `<!-- ${name}-reference:end -->`
  const i = markdown.indexOf(start)
  const j = markdown.indexOf(end)
  if (i < 0 || j < i) throw new TypeError(`the document lacks the ${start} … ${end} markers`)
  return `${markdown.slice(0, i + start.length)}\n${make()}\n${markdown.slice(j)}`
}
