/**
 * The verifier's `text/event-stream` parser: every line ending, chunks split
 * anywhere (a CRLF across two chunks included), comments, fields without a
 * value, multi-line data, and the line bound.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SseParser, type SseEvent } from '../src/sse.js'

function parse(chunks: readonly string[], maxLineBytes?: number): SseEvent[] {
  const out: SseEvent[] = []
  const parser = new SseParser((e) => out.push(e), maxLineBytes)
  for (const c of chunks) parser.push(c)
  return out
}

const STREAM =
  ': hello\n\nevent: snapshot\ndata: {"a":1}\nid: x.0\n\ndata: one\ndata:two\n\nevent: heartbeat\ndata\n\nevent: empty\n\nretry: 500\nid: x.1\nevent: revocation\ndata: r\n\n'
const EXPECTED: SseEvent[] = [
  { event: 'snapshot', data: '{"a":1}', id: 'x.0' },
  { event: 'message', data: 'one\ntwo', id: undefined },
  { event: 'heartbeat', data: '', id: undefined },
  { event: 'revocation', data: 'r', id: 'x.1' },
]

describe('SseParser', () => {
  it.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ])('parses a stream with %s line ends', (_, eol) => {
    expect(parse([STREAM.replaceAll('\n', eol)])).toEqual(EXPECTED)
  })

  it('gives the same events however the stream is split into chunks', () => {
    fc.assert(
      fc.property(fc.constantFrom('\n', '\r\n', '\r'), fc.array(fc.nat(), { maxLength: 20 }), (eol, cuts) => {
        const text = STREAM.replaceAll('\n', eol)
        const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b)
        const bounds = [0, ...points, text.length]
        const chunks = bounds.slice(1).map((end, i) => text.slice(bounds[i], end))
        expect(parse(chunks)).toEqual(EXPECTED)
        expect(parse(text.split(''))).toEqual(EXPECTED)
      }),
    )
  })

  it('keeps a CR at the end of a chunk from splitting a CRLF into two line ends', () => {
    expect(parse(['data: a\r', '\n\r', '\n'])).toEqual([{ event: 'message', data: 'a', id: undefined }])
  })

  it('refuses a line that outgrows the bound', () => {
    expect(() => parse(['data: ', 'x'.repeat(100)], 64)).toThrow(RangeError)
  })
})
