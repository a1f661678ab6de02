/**
 * Where each node of a tree goes in a drawing, left to right: a node's depth
 * is its column, its leaves take one row each in the order given, and a
 * parent sits level with the middle of its children. Each subtree so keeps
 * rows of its own, so no two boxes overlap, every parent is left of its
 * children, and the same tree always gives the same drawing. Pure: the
 * console's chain graph draws what this returns.
 */

export interface LayoutTree {
  readonly id: string
  readonly children: readonly LayoutTree[]
}

export interface LayoutSize {
  readonly nodeWidth: number
  readonly nodeHeight: number
  /** Between columns (where the edges run). */
  readonly gapX: number
  /** Between rows. */
  readonly gapY: number
  /** Around the whole drawing. */
  readonly margin: number
}

export interface Placed {
  readonly id: string
  /** Top-left corner. */
  readonly x: number
  readonly y: number
  readonly depth: number
  readonly parent: string | undefined
}

export interface Layout {
  /** Depth first, each parent before its children, children in the order given. */
  readonly nodes: readonly Placed[]
  readonly edges: readonly { readonly from: string; readonly to: string }[]
  readonly width: number
  readonly height: number
}

export function layoutTree(root: LayoutTree, size: LayoutSize): Layout {
  const nodes: Placed[] = []
  const edges: { from: string; to: string }[] = []
  const seen = new Set<string>()
  let rows = 0
  let depthMax = 0
  const rowY = (row: number) => size.margin + row * (size.nodeHeight + size.gapY)

  /** Places `node` and its subtree; returns its row (fractional: the middle of its children's). */
  const place = (node: LayoutTree, depth: number, parent: string | undefined): number => {
    const at = nodes.length
    // A node met twice (a malformed tree) is drawn once.
    const children = node.children.filter((c) => !seen.has(c.id))
    for (const c of children) seen.add(c.id)
    nodes.push({ id: node.id, x: 0, y: 0, depth, parent })
    if (parent !== undefined) edges.push({ from: parent, to: node.id })
    depthMax = Math.max(depthMax, depth)
    let row: number
    if (children.length === 0) row = rows++
    else {
      const childRows = children.map((c) => place(c, depth + 1, node.id))
      row = (childRows[0]! + childRows.at(-1)!) / 2
    }
    nodes[at] = { id: node.id, x: size.margin + depth * (size.nodeWidth + size.gapX), y: rowY(row), depth, parent }
    return row
  }
  seen.add(root.id)
  place(root, 0, undefined)
  return {
    nodes,
    edges,
    width: 2 * size.margin + (depthMax + 1) * size.nodeWidth + depthMax * size.gapX,
    height: 2 * size.margin + rows * size.nodeHeight + Math.max(0, rows - 1) * size.gapY,
  }
}
