/**
 * GET /console/events: the live events (console/live.ts) as server-sent
 * events (HTML Living Standard §9.2), for the signed-in person's open page.
 * Bounded: a process holds at most MAX_STREAMS open, and each stream ends
 * when its session would have (the page reconnects, and a session that
 * ended gets no more).
 */
import { streamSSE } from 'hono/streaming'
import type { LiveEvent } from '../../../console/live.js'
import { message } from './layout.js'
import type { ConsolePages } from './pages.js'

const MAX_STREAMS = 200
/** A comment line this often keeps proxies from closing an idle stream. */
const HEARTBEAT_MS = 15_000

export function mountConsoleEvents({ app, deps }: ConsolePages): void {
  const live = deps.live
  if (live === undefined) return
  app.get('/console/events', function consoleEvents(c) {
    if (live.size() >= MAX_STREAMS) return message(c, 503, 'Busy', 'Too many live pages are open; reload later.')
    const session = c.get('consoleSession')!
    c.header('Cache-Control', 'no-store')
    return streamSSE(c, async (stream) => {
      const queue: LiveEvent[] = []
      let wake: (() => void) | undefined
      const unsubscribe = live.subscribe((e) => {
        if (queue.length < 100) queue.push(e)
        wake?.()
      })
      stream.onAbort(() => {
        unsubscribe()
        wake?.()
      })
      const endsAt = Date.now() + Math.max(0, session.sealedAt + deps.sessions.idleSeconds - deps.now()) * 1000
      try {
        await stream.writeSSE({ event: 'ready', data: '{}', retry: 5000 })
        // A function, not the property: it changes while the loop awaits.
        const open = () => !stream.aborted
        while (open() && Date.now() < endsAt) {
          const e = queue.shift()
          if (e !== undefined) {
            await stream.writeSSE({ event: e.kind, data: JSON.stringify({ text: e.text, href: e.href }) })
            continue
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, HEARTBEAT_MS)
            wake = () => {
              clearTimeout(timer)
              resolve()
            }
          })
          wake = undefined
          if (queue.length === 0 && open()) await stream.write(': heartbeat\n\n')
        }
      } finally {
        unsubscribe()
      }
    })
  })
}
