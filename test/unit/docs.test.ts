import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { REFERENCES, renderReference } from '../../scripts/reference.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const read = (file: string) => readFile(join(root, file), 'utf8')

/** The Markdown documents whose links must hold. */
async function documents(): Promise<string[]> {
  const docs = (await readdir(join(root, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)
  return ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', 'deploy/README.md', ...docs]
}

/** Markdown without its fenced code blocks (a `#` line in a shell block is no heading). */
const prose = (markdown: string) => markdown.replace(/^```[\s\S]*?^```/gm, '')

/** GitHub's anchor for each heading: lowercased, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>()
  const out = new Set<string>()
  for (const m of prose(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = m[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-')
    const n = seen.get(slug) ?? 0
    seen.set(slug, n + 1)
    out.add(n === 0 ? slug : `${slug}-${n}`)
  }
  return out
}

describe('generated references', () => {
  for (const { name, file } of REFERENCES) {
    it(`${file} holds the ${name} reference as the schema describes it (run \`npm run docs\` when this fails)`, async () => {
      const doc = await read(file)
      expect(renderReference(doc, name)).toBe(doc)
    })
  }

  it('live in docs/, not in the README', async () => {
    const readme = await read('README.md')
    for (const { name } of REFERENCES) expect(readme).not.toContain(`<!-- ${name}-reference:start -->`)
  })

  it('every env variable the config reads is documented in docs/configuration.md and in serve --help', async () => {
    const { CONFIG_ENV } = await import('../../src/config/load.js')
    const configuration = await read('docs/configuration.md')
    const main = await read('src/cli/main.ts')
    for (const name of Object.keys(CONFIG_ENV)) {
      expect(configuration, name).toContain(name)
      expect(main, name).toContain(name)
    }
  })
})

describe('documentation links', () => {
  it('every relative link points to a file that exists, and every #anchor to a heading there', async () => {
    const broken: string[] = []
    for (const doc of await documents()) {
      const text = prose(await read(doc))
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue
        const [path = '', anchor] = target.split('#', 2)
        const file = path === '' ? join(root, doc) : resolve(dirname(join(root, doc)), path)
        if (!existsSync(file)) {
          broken.push(`${doc}: ${target}: no such file`)
          continue
        }
        if (anchor === undefined || !file.endsWith('.md')) continue
        if (!anchors(await readFile(file, 'utf8')).has(anchor)) broken.push(`${doc}: ${target}: no heading #${anchor} in ${relative(root, file)}`)
      }
    }
    expect(broken).toEqual([])
  })

  it('the anchor rule matches GitHub’s on the headings these documents use', () => {
    const doc = [
      '# The `mandate` command',
      '## GET or POST /revocations/feed',
      "## The responders' path: the admin port",
      '## Dev routes (`--dev` only)',
      '## Rate limits',
      '## Rate limits',
    ]
    expect([...anchors(doc.join('\n'))]).toEqual([
      'the-mandate-command',
      'get-or-post-revocationsfeed',
      'the-responders-path-the-admin-port',
      'dev-routes---dev-only',
      'rate-limits',
      'rate-limits-1',
    ])
  })
})
