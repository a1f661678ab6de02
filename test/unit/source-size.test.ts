/**
 * No source file over 400 lines and no function over 100 without a comment
 * saying why (CONTRIBUTING "Conventions"), read with the TypeScript compiler
 * by scripts/long-functions.ts over src/ and packages/*\/src/.
 */
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { MAX_FILE_LINES, MAX_FUNCTION_LINES, measureRepository, measureSource, report } from '../../scripts/long-functions.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** A function whose span is `lines` lines, with `first` as its body's first line. */
function fn(name: string, lines: number, first: string): string {
  return [`export function ${name}(): number {`, first, ...Array.from({ length: lines - 3 }, (_, i) => `  const v${i} = ${i}`), '}', ''].join('\n')
}

describe('source size check', () => {
  it('every long function and file in the repository says why', () => {
    const sizes = measureRepository(ROOT)
    expect(sizes.length).toBeGreaterThan(100) // it read the sources
    const unexplained = report(sizes).filter((l) => l.endsWith('(no why)'))
    expect(unexplained, 'add `// Long, not split: <why>` as the first line of the function, or `Over 400 lines because` at the top of the file').toEqual([])
  })

  it('flags a function one line over the bound with no why, and only that one', () => {
    const text = [fn('fits', MAX_FUNCTION_LINES, '  // a plain comment'), fn('over', MAX_FUNCTION_LINES + 1, '  // a plain comment')].join('\n')
    const size = measureSource('x.ts', text)
    expect(size.longFunctions).toEqual([{ name: 'over', line: MAX_FUNCTION_LINES + 2, lines: MAX_FUNCTION_LINES + 1, explained: false }])
    expect(report([size])).toEqual([`x.ts:${MAX_FUNCTION_LINES + 2} over ${MAX_FUNCTION_LINES + 1} lines (no why)`])
  })

  it('takes `Long, not split:` on the body’s first line as the why, wherever the function is', () => {
    const why = '  // Long, not split: one state shared by every step.'
    const nested = `export const outer = {\n  method: ${fn('inner', 120, why).replace('export function inner', 'function')}}\n`
    const arrow = `const arrow = (): number => {\n${why}\n${Array.from({ length: 110 }, () => '  void 0').join('\n')}\n  return 1\n}\n`
    const size = measureSource('y.ts', nested + arrow)
    expect(size.longFunctions.map((f) => [f.name, f.explained])).toEqual([
      ['method', true],
      ['arrow', true],
    ])
    // The same words on the second line of the body, or before the function, do not count.
    const late = measureSource('z.ts', fn('late', 120, '  const a = 1').replace('  const a = 1', `  const a = 1\n${why}`))
    expect(late.longFunctions[0]!.explained).toBe(false)
  })

  it('flags a file over 400 lines unless the comment at its top says why', () => {
    const body = Array.from({ length: MAX_FILE_LINES }, (_, i) => `export const c${i} = ${i}`).join('\n') + '\n'
    expect(measureSource('a.ts', `// short\n${body}`)).toMatchObject({ lines: MAX_FILE_LINES + 1, explained: false })
    expect(measureSource('b.ts', `/**\n * One table.\n * Over 400\n * lines because it is data.\n */\n${body}`)).toMatchObject({ explained: true })
    expect(measureSource('c.ts', body)).toMatchObject({ lines: MAX_FILE_LINES, explained: true })
    // Said below the first statement, it is not at the top.
    expect(measureSource('d.ts', `${body}// Over 400 lines because\n`)).toMatchObject({ explained: false })
  })
})
