/**
 * The run-wide log sink: every broker a test runs (in process or as a child
 * process) copies its log output here, and test/global-setup.ts scans all of
 * it at the end of the run for tokens and secrets. Outside `vitest run` (no file set) it does
 * nothing.
 */
import { appendFileSync } from 'node:fs'
import { Writable } from 'node:stream'

export const LOG_SINK_ENV = 'MANDATE_TEST_LOG_FILE'

function append(source: string, lines: string): void {
  const file = process.env[LOG_SINK_ENV]
  if (file === undefined || file === '' || lines === '') return
  appendFileSync(file, `#source ${source}\n${lines}\n`)
}

/**
 * A writer for one stream (a child's stdout, a logger's destination): it
 * passes on whole lines only, so that output from several sources never
 * interleaves mid-line. Call the returned function with each chunk.
 */
export function logSink(source: string): (chunk: Buffer | string) => void {
  let partial = ''
  return (chunk) => {
    const parts = (partial + String(chunk)).split('\n')
    partial = parts.pop()!
    append(source, parts.filter((l) => l !== '').join('\n'))
  }
}

/**
 * A logger destination for a broker composed in the test process: keeps its
 * lines (in `lines`, when given) for the test's own checks and copies them
 * to the run-wide sink.
 */
export function captureLogs(source: string, lines: string[] = []): { readonly lines: string[]; readonly stream: Writable } {
  const runWide = logSink(source)
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      runWide(chunk)
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l !== ''),
      )
      cb()
    },
  })
  return { lines, stream }
}
