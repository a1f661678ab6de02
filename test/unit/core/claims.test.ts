import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { actClaim, actorsOf, instancesOf, parseScope, type ActClaim, type AgentId } from '../../../src/core/claims.js'

const agentId = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,15}$/).map((s) => s as AgentId)
/** RFC 6749 §3.3 scope-token characters: %x21 / %x23-5B / %x5D-7E. */
const scopeToken = fc.stringMatching(/^[\x21\x23-\x5b\x5d-\x7e]{1,12}$/)

describe('actClaim / actorsOf', () => {
  it('round-trips any non-empty actor list, newest first', () => {
    fc.assert(
      fc.property(fc.array(agentId, { minLength: 1, maxLength: 10 }), (actors) => {
        expect(actorsOf(actClaim(actors))).toEqual(actors)
      }),
    )
  })

  it('nests one level per actor with the newest outermost (RFC 8693 §4.1)', () => {
    const [a, b, c] = ['agent-c', 'agent-b', 'agent-a'] as AgentId[] as [AgentId, AgentId, AgentId]
    expect(actClaim([a, b, c])).toEqual({ sub: a, act: { sub: b, act: { sub: c } } })
  })

  it('builds a single actor without a nested act', () => {
    const claim = actClaim(['solo' as AgentId])
    expect(claim).toEqual({ sub: 'solo' })
    expect('act' in claim).toBe(false)
  })

  it('depth of the nesting equals the number of actors', () => {
    fc.assert(
      fc.property(fc.array(agentId, { minLength: 1, maxLength: 10 }), (actors) => {
        let depth = 0
        for (let a: ActClaim | undefined = actClaim(actors); a !== undefined; a = a.act) depth++
        expect(depth).toBe(actors.length)
      }),
    )
  })

  it('puts the instance on the newest hop only, and keeps the older hops of the parent’s act as they were', () => {
    const [c, b, a] = ['agent-c', 'agent-b', 'agent-a'] as AgentId[] as [AgentId, AgentId, AgentId]
    expect(actClaim([a], { instance: 'spiffe://td/pod-1' })).toEqual({ sub: a, instance: 'spiffe://td/pod-1' })
    expect(actClaim([a], { instance: undefined })).toEqual({ sub: a })
    const parent: ActClaim = { sub: b, instance: 'pod-b', act: { sub: a, instance: 'pod-a' } }
    const built = actClaim([c, b, a], { instance: 'pod-c' }, parent)
    expect(built).toEqual({ sub: c, instance: 'pod-c', act: { sub: b, instance: 'pod-b', act: { sub: a, instance: 'pod-a' } } })
    expect(instancesOf(built)).toEqual([
      { agent: c, instance: 'pod-c' },
      { agent: b, instance: 'pod-b' },
      { agent: a, instance: 'pod-a' },
    ])
    // The parent's act must name exactly the older actors.
    expect(() => actClaim([c, a], {}, parent)).toThrow(TypeError)
  })

  it('refuses an empty actor list', () => {
    expect(() => actClaim([])).toThrow(TypeError)
  })
})

describe('parseScope', () => {
  it('accepts any space-joined list of RFC 6749 scope tokens, deduplicated in first-seen order', () => {
    fc.assert(
      fc.property(fc.array(scopeToken, { minLength: 1, maxLength: 8 }), (tokens) => {
        expect(parseScope(tokens.join(' '))).toEqual([...new Set(tokens)])
      }),
    )
  })

  it.each([
    ['read', ['read']],
    ['read write', ['read', 'write']],
    ['calendar:events.write https://api.test/x', ['calendar:events.write', 'https://api.test/x']],
    ['!#[]~', ['!#[]~']],
    ['read read write read', ['read', 'write']],
  ])('parses %j', (input, expected) => {
    expect(parseScope(input)).toEqual(expected)
  })

  it.each([
    ['empty string', ''],
    ['double space', 'read  write'],
    ['leading space', ' read'],
    ['trailing space', 'read '],
    ['double quote', 'read "write"'],
    ['backslash', 'read wr\\ite'],
    ['tab separator', 'read\twrite'],
    ['newline', 'read\nwrite'],
    ['non-ASCII letter', 'lesen schreibe\u00df'],
    ['non-breaking space', 'read\u00a0write'],
    ['DEL', 'read\x7f'],
    ['NUL', 'read\x00'],
  ])('rejects %s', (_name, input) => {
    expect(parseScope(input)).toBeUndefined()
  })

  it('rejects any list holding one character outside the scope-token set', () => {
    const bad = fc.oneof(
      fc.constantFrom('"', '\\', ' ', '\t', '\x7f', '\u00e9', '\u2028'),
      fc.integer({ min: 0, max: 0x20 }).map((c) => String.fromCharCode(c)),
    )
    fc.assert(
      fc.property(fc.array(scopeToken, { minLength: 1, maxLength: 4 }), fc.nat(), bad, (tokens, at, ch) => {
        const i = at % tokens.length
        const poisoned = tokens.map((t, j) => (j === i ? `${t}${ch}` : t))
        expect(parseScope(poisoned.join(' '))).toBeUndefined()
      }),
    )
  })
})
