import { describe, expect, it } from 'vitest'
import { revocationOf, tokenStates, type ChainNode } from '../../../src/console/chain-state.js'

const T = 1_800_000_000
const iso = (t: number) => new Date(t * 1000).toISOString()
const ISS = 'https://idp.test'

function node(jti: string, agent: string, actors: string[], issued: number, children: ChainNode[] = [], extra: Partial<ChainNode> = {}): ChainNode {
  return {
    jti,
    agent,
    actors,
    sub: 'alice',
    sub_iss: ISS,
    issued_at: iso(issued),
    expires_at: iso(issued + 300),
    agent_instance: null,
    withheld: false,
    children,
    ...extra,
  }
}

/** user alice → agent-a (root) → agent-b (child) → agent-c (grandchild) */
const tree = (extra: Partial<ChainNode> = {}) =>
  node('root', 'agent-a', ['agent-a'], T, [
    node('child', 'agent-b', ['agent-b', 'agent-a'], T + 10, [node('grand', 'agent-c', ['agent-c', 'agent-b', 'agent-a'], T + 20)], extra),
  ])

let seq = 0
function kill(target: Record<string, unknown>, at: number, more: Record<string, unknown> = {}) {
  const id = `00000000-0000-4000-8000-${String(++seq).padStart(12, '0')}`
  return { id, entry: { record: { event: 'revocation.created', revocation: { id, ...target, reason: 'test', created_by: 'k', created_at: at, ...more } } } }
}
const lifted = (k: ReturnType<typeof kill>, at: number) => ({
  record: { event: 'revocation.lifted', revocation: { ...(k.entry.record.revocation as object), lifted_at: at, lifted_by: 'k' } },
})
const states = (root: ChainNode, entries: { record: Record<string, unknown> }[], now = T + 30) =>
  Object.fromEntries([...tokenStates(root, entries, now)].map(([jti, s]) => [jti, s.state]))

describe('tokenStates', () => {
  it('no revocation: every token active until it expires', () => {
    expect(states(tree(), [])).toEqual({ root: 'active', child: 'active', grand: 'active' })
    expect(states(tree(), [], T + 305)).toEqual({ root: 'expired', child: 'active', grand: 'active' })
  })

  it('a kill of the middle agent kills its token and every token below it, not the one above', () => {
    expect(states(tree(), [kill({ kind: 'agent', agent: 'agent-b' }, T + 25).entry])).toEqual({ root: 'active', child: 'killed', grand: 'killed' })
  })

  it('a lifted kill leaves tokens issued before it dead', () => {
    const k = kill({ kind: 'agent', agent: 'agent-c' }, T + 25)
    expect(states(tree(), [k.entry, lifted(k, T + 26)])).toEqual({ root: 'active', child: 'active', grand: 'killed' })
    // Killed and lifted before the token was issued: it is live.
    const early = kill({ kind: 'agent', agent: 'agent-c' }, T + 5)
    expect(states(tree(), [early.entry, lifted(early, T + 6)])).toEqual({ root: 'active', child: 'active', grand: 'active' })
  })

  it('a jti revocation is that token alone; a chain revocation takes its descendants too', () => {
    expect(states(tree(), [kill({ kind: 'jti', jti: 'child' }, T + 25, { expires_at: T + 400 }).entry])).toEqual({
      root: 'active',
      child: 'revoked',
      grand: 'active',
    })
    expect(states(tree(), [kill({ kind: 'chain', jti: 'child' }, T + 25, { expires_at: T + 400 }).entry])).toEqual({
      root: 'active',
      child: 'revoked',
      grand: 'revoked',
    })
  })

  it('a user kill at the user’s issuer, or at any issuer, takes the whole tree; at another issuer, nothing', () => {
    const all = { root: 'killed', child: 'killed', grand: 'killed' }
    expect(states(tree(), [kill({ kind: 'sub', sub: 'alice', iss: ISS }, T + 25).entry])).toEqual(all)
    expect(states(tree(), [kill({ kind: 'sub', sub: 'alice' }, T + 25).entry])).toEqual(all)
    expect(states(tree(), [kill({ kind: 'sub', sub: 'alice', iss: 'https://other.test' }, T + 25).entry])).toEqual({
      root: 'active',
      child: 'active',
      grand: 'active',
    })
  })

  it('an instance kill takes the tokens a hop of which that copy asked for', () => {
    const root = tree({ agent_instance: 'pod-1' })
    expect(states(root, [kill({ kind: 'instance', agent: 'agent-b', instance: 'pod-1' }, T + 25).entry])).toEqual({
      root: 'active',
      child: 'killed',
      grand: 'killed',
    })
    expect(states(root, [kill({ kind: 'instance', agent: 'agent-b', instance: 'pod-2' }, T + 25).entry])).toEqual({
      root: 'active',
      child: 'active',
      grand: 'active',
    })
  })

  it('a withheld token says so; a kill says what it was', () => {
    const withheld = node('w', 'agent-a', ['agent-a'], T, [], { withheld: true })
    expect(states(withheld, [])).toEqual({ w: 'withheld' })
    const detail = tokenStates(tree(), [kill({ kind: 'agent', agent: 'agent-b' }, T + 25).entry], T + 30).get('grand')
    expect(detail).toEqual({ state: 'killed', detail: 'chain agent agent-b killed' })
  })

  it('a record that states no revocation is left aside', () => {
    expect(revocationOf({ revocation: { id: 'x', kind: 'agent', created_at: T } })).toBeUndefined()
    expect(revocationOf({ revocation: { id: 'x', kind: 'nope', agent: 'a', created_at: T } })).toBeUndefined()
    expect(revocationOf({})).toBeUndefined()
    expect(states(tree(), [{ record: { revocation: 'junk' } }])).toEqual({ root: 'active', child: 'active', grand: 'active' })
  })
})
