/**
 * A delegation tree drawn as an SVG graph, laid out on the server
 * (console/tree-layout.ts): the user, then each token as its agent's node
 * (agent, audience, scopes, lifetime, the agent's running copy), an edge from
 * each token to the tokens delegated from it. Killed and revoked tokens say
 * so in words as well as in colour. Each node links to the token's entry in
 * the list the page gives below the graph, which says the same in text.
 */
import type { FC } from 'hono/jsx'
import type { z } from 'zod'
import type { TokenState } from '../../../console/chain-state.js'
import { layoutTree, type LayoutTree } from '../../../console/tree-layout.js'
import type { DelegationTree } from '../../openapi.js'

export type TreeBody = z.infer<typeof DelegationTree>
export type TreeNodeBody = TreeBody['root']

const SIZE = { nodeWidth: 250, nodeHeight: 96, gapX: 56, gapY: 14, margin: 12 }
const USER_ID = '\u0000user'

/** A lifetime in words: `45 s`, `5 min`, `2 h 30 min`. */
export function duration(seconds: number): string {
  if (seconds < 120) return `${seconds} s`
  const minutes = Math.round(seconds / 60)
  if (minutes < 120) return `${minutes} min`
  const h = Math.floor(minutes / 60)
  return minutes % 60 === 0 ? `${h} h` : `${h} h ${minutes % 60} min`
}

/** The token's lifetime as issued (expires_at - issued_at). */
export const ttlOf = (n: TreeNodeBody) => Math.round((Date.parse(n.expires_at) - Date.parse(n.issued_at)) / 1000)

/** At most `max` characters, the cut one an ellipsis: SVG text does not wrap. */
const clip = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, max - 1)}…`)

/** The anchor of a token's entry in the page's list. */
export const tokenAnchor = (jti: string) => `token-${jti}`

export const STATE_WORDS: Record<TokenState['state'], string> = {
  active: 'active',
  expired: 'expired',
  withheld: 'never sent',
  killed: 'KILLED',
  revoked: 'REVOKED',
}

function describeNode(n: TreeNodeBody, state: TokenState | undefined): string {
  return (
    `Token ${n.jti} of agent ${n.agent} for ${n.aud}, scopes ${n.scopes.join(' ') || 'none'}, lifetime ${duration(ttlOf(n))}` +
    `${n.agent_instance === null ? '' : `, instance ${n.agent_instance}`}: ${STATE_WORDS[state?.state ?? 'active']}${state?.detail === undefined ? '' : ` (${state.detail})`}`
  )
}

export const ChainGraph: FC<{ tree: TreeBody; states: ReadonlyMap<string, TokenState> }> = ({ tree, states }) => {
  const byId = new Map<string, TreeNodeBody>()
  const shape = (n: TreeNodeBody): LayoutTree => {
    byId.set(n.jti, n)
    return { id: n.jti, children: n.children.map(shape) }
  }
  const layout = layoutTree({ id: USER_ID, children: [shape(tree.root)] }, SIZE)
  const at = new Map(layout.nodes.map((p) => [p.id, p]))
  const { nodeWidth: w, nodeHeight: h } = SIZE
  const user = tree.root.sub
  const killed = [...states.values()].filter((s) => s.state === 'killed' || s.state === 'revoked').length
  const label =
    `Delegation tree of user ${user}: ${tree.tokens} token${tree.tokens === 1 ? '' : 's'} from agent ${tree.root.agent}` +
    `${killed === 0 ? '' : `, ${killed} killed or revoked`}. The list below gives the same tree in text.`
  return (
    <svg
      class="graph"
      role="group"
      aria-label={label}
      width={layout.width}
      height={layout.height}
      viewBox={`0 0 ${layout.width} ${layout.height}`}
      xmlns="http://www.w3.org/2000/svg"
    >
      <title>{label}</title>
      {layout.edges.map((e) => {
        const a = at.get(e.from)!
        const b = at.get(e.to)!
        const [x1, y1, x2, y2] = [a.x + w, a.y + h / 2, b.x, b.y + h / 2]
        const mid = (x1 + x2) / 2
        return <path class="edge" d={`M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`} />
      })}
      {layout.nodes.map((p) => {
        if (p.id === USER_ID) {
          return (
            <g class="node user">
              <title>{`User ${user}${tree.root.sub_iss === null ? '' : ` of ${tree.root.sub_iss}`}`}</title>
              <rect x={p.x} y={p.y} width={w} height={h} rx="6" />
              <text x={p.x + 10} y={p.y + 22} class="title">
                {`user ${clip(user, 26)}`}
              </text>
              {tree.root.sub_iss === null ? null : (
                <text x={p.x + 10} y={p.y + 42} class="sub">
                  {clip(tree.root.sub_iss, 38)}
                </text>
              )}
            </g>
          )
        }
        const n = byId.get(p.id)!
        const state = states.get(n.jti)
        const word = STATE_WORDS[state?.state ?? 'active']
        const lines = [
          `aud ${clip(n.aud, 32)}`,
          `scopes ${clip(n.scopes.join(' ') || '(none)', 29)}`,
          `TTL ${duration(ttlOf(n))}${n.agent_instance === null ? '' : ` · inst ${clip(n.agent_instance, 16)}`}`,
        ]
        return (
          // Named by its visible text (WCAG 2.5.3); the title says the rest on hover.
          <a href={`#${tokenAnchor(n.jti)}`}>
            <g class={`node agent ${state?.state ?? 'active'}${n.jti === tree.jti ? ' asked' : ''}`}>
              <title>{describeNode(n, state)}</title>
              <rect x={p.x} y={p.y} width={w} height={h} rx="6" />
              <text x={p.x + 10} y={p.y + 20} class="title">
                {clip(n.agent, 24)}
              </text>
              <text x={p.x + w - 10} y={p.y + 20} class="state" text-anchor="end">
                {word}
              </text>
              {lines.map((line, i) => (
                <text x={p.x + 10} y={p.y + 42 + i * 18} class="sub">
                  {line}
                </text>
              ))}
            </g>
          </a>
        )
      })}
    </svg>
  )
}
