import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { decodeUtf8, isStorableText } from '../../../src/core/text.js'

describe('isStorableText', () => {
  it.each([
    ['', true],
    ['plain ascii', true],
    ['\u00e9t\u00e9 \ud834\udd1e \ufffd', true],
    ['a\u0000b', false],
    ['\ud800', false],
    ['x\udc00', false],
    ['\ude00\ud83d', false],
  ])('%j → %s', (s, expected) => {
    expect(isStorableText(s)).toBe(expected)
  })
})

describe('decodeUtf8', () => {
  it('round-trips the UTF-8 of any well-formed string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        expect(decodeUtf8(Buffer.from(s, 'utf8'))).toBe(s)
      }),
    )
  })

  it.each([
    ['a byte that never starts UTF-8', [0x61, 0xff]],
    ['a truncated sequence', [0xc3]],
    ['an overlong NUL', [0xc0, 0x80]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ])('refuses %s', (_name, bytes) => {
    expect(decodeUtf8(Uint8Array.from(bytes))).toBeUndefined()
  })

  it('keeps a byte order mark, as sent', () => {
    expect(decodeUtf8(Uint8Array.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]))).toBe('\ufeff{}')
  })
})
