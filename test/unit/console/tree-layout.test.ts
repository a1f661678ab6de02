import { describe, expect, it } from 'vitest'
import { layoutTree, type Layout, type LayoutTree } from '../../../src/console/tree-layout.js'

const SIZE = { nodeWidth: 200, nodeHeight: 60, gapX: 40, gapY: 10, margin: 8 }
const leaf = (id: string): LayoutTree => ({ id, children: [] })
const node = (id: string, ...children: LayoutTree[]): LayoutTree => ({ id, children })

const at = (l: Layout, id: string) => l.nodes.find((n) => n.id === id)!

function overlaps(l: Layout): string[] {
  const out: string[] = []
  for (const [i, a] of l.nodes.entries()) {
    for (const b of l.nodes.slice(i + 1)) {
      const apart = a.x + SIZE.nodeWidth <= b.x || b.x + SIZE.nodeWidth <= a.x || a.y + SIZE.nodeHeight <= b.y || b.y + SIZE.nodeHeight <= a.y
      if (!apart) out.push(`${a.id}/${b.id}`)
    }
  }
  return out
}

/** A tree of `n` nodes, each child of a pseudo-randomly chosen earlier node. */
function randomTree(n: number, seed: number): LayoutTree {
  let s = seed
  const next = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  const kids: LayoutTree[][] = [[]]
  const all: LayoutTree[] = [{ id: 'n0', children: kids[0]! }]
  for (let i = 1; i < n; i++) {
    kids.push([])
    const t = { id: `n${i}`, children: kids[i]! }
    kids[Math.floor(next() * i)]!.push(t)
    all.push(t)
  }
  return all[0]!
}

describe('layoutTree', () => {
  it('user → agent → two sub-agents: parent left of its children, level with their middle', () => {
    const l = layoutTree(node('user', node('agent', leaf('sub-1'), leaf('sub-2'))), SIZE)
    expect(l.nodes.map((n) => n.id)).toEqual(['user', 'agent', 'sub-1', 'sub-2'])
    expect(at(l, 'user').x).toBe(8)
    expect(at(l, 'agent').x).toBe(8 + 240)
    expect(at(l, 'sub-1').x).toBe(8 + 480)
    expect(at(l, 'sub-1').y).toBe(8)
    expect(at(l, 'sub-2').y).toBe(8 + 70)
    expect(at(l, 'agent').y).toBe(8 + 35)
    expect(at(l, 'user').y).toBe(at(l, 'agent').y)
    expect(l.edges).toEqual([
      { from: 'user', to: 'agent' },
      { from: 'agent', to: 'sub-1' },
      { from: 'agent', to: 'sub-2' },
    ])
    expect({ width: l.width, height: l.height }).toEqual({ width: 16 + 3 * 200 + 2 * 40, height: 16 + 2 * 60 + 10 })
  })

  it('a single node', () => {
    const l = layoutTree(leaf('only'), SIZE)
    expect(l.nodes).toEqual([{ id: 'only', x: 8, y: 8, depth: 0, parent: undefined }])
    expect({ width: l.width, height: l.height }).toEqual({ width: 216, height: 76 })
  })

  it.each([1, 2, 3, 4, 5])('random trees (seed %i): no overlap, parents left of children, inside the drawing, deterministic', (seed) => {
    const tree = randomTree(60, seed)
    const l = layoutTree(tree, SIZE)
    expect(l.nodes).toHaveLength(60)
    expect(overlaps(l)).toEqual([])
    for (const n of l.nodes) {
      expect(n.x + SIZE.nodeWidth).toBeLessThanOrEqual(l.width - SIZE.margin)
      expect(n.y + SIZE.nodeHeight).toBeLessThanOrEqual(l.height - SIZE.margin)
      if (n.parent !== undefined) {
        const p = at(l, n.parent)
        expect(p.x + SIZE.nodeWidth).toBeLessThan(n.x)
        expect(p.depth).toBe(n.depth - 1)
      }
    }
    expect(l.edges).toHaveLength(59)
    expect(layoutTree(randomTree(60, seed), SIZE)).toEqual(l)
  })

  it('a node met twice is drawn once', () => {
    const shared = leaf('shared')
    const l = layoutTree(node('root', node('a', shared), node('b', shared)), SIZE)
    expect(l.nodes.map((n) => n.id)).toEqual(['root', 'a', 'shared', 'b'])
    expect(overlaps(l)).toEqual([])
  })
})
