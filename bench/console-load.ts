/**
 * How fast the console's first page loads, in Chromium, against the built
 * `mandate serve --dev` (PGlite): each run a fresh browser context (no
 * cache) carrying a signed-in session, opening one page; Navigation Timing
 * says when the HTML arrived (responseEnd), when the DOM was ready with the
 * deferred script run (domContentLoadedEventEnd) and when the page with its
 * stylesheet and script had loaded (loadEventEnd), each from navigationStart.
 *
 *   npm run build && npx tsx bench/console-load.ts [--runs=20]
 */
import { launchChromium } from '../test/support/browser.js'
import { startDevBroker } from '../test/support/dev-broker.js'

const runs = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice(7) ?? 20)
// The sign-in page reads nothing: the floor of what a page costs in this browser on this machine.
const PAGES = ['/console/sign-in', '/console/agents', '/console/agents/demo-agent', '/console/kills', '/console/audit', '/console/approvals']

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.95) - 1)]!

const broker = await startDevBroker('console-load')
const browser = await launchChromium()
try {
  // One sign-in; each run's context gets the session cookie and nothing else.
  const signIn = await fetch(`${broker.base}/console/dev/sign-in`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'person=rita',
  })
  const [name, value] = signIn.headers.getSetCookie()[0]!.split(';')[0]!.split('=') as [string, string]
  console.log(`chromium ${browser.version()}, ${runs} runs per page, a fresh context (no cache) each\n`)
  console.log('| page | HTML (responseEnd) | DOM ready | loaded | bytes |')
  console.log('| --- | --- | --- | --- | --- |')
  for (const path of PAGES) {
    const html: number[] = []
    const ready: number[] = []
    const loaded: number[] = []
    let bytes = 0
    for (let i = 0; i < runs + 2; i++) {
      const context = await browser.newContext({ baseURL: broker.base })
      await context.addCookies([{ name, value, url: broker.base }])
      const page = await context.newPage()
      await page.goto(path, { waitUntil: 'load' })
      const t = await page.evaluate(() => {
        // In the page (DOM types are not in this project's lib): the navigation entry and every resource's transfer size.
        const timing = performance as unknown as { getEntriesByType(type: string): Record<string, number>[] }
        const n = timing.getEntriesByType('navigation')[0]!
        const transfer = timing.getEntriesByType('resource').reduce((sum, r) => sum + (r['transferSize'] ?? 0), n['transferSize'] ?? 0)
        return { html: n['responseEnd']!, ready: n['domContentLoadedEventEnd']!, loaded: n['loadEventEnd']!, transfer }
      })
      await context.close()
      if (i < 2) continue // warm-up: the broker's first reads
      html.push(t.html)
      ready.push(t.ready)
      loaded.push(t.loaded)
      bytes = t.transfer
    }
    const ms = (xs: number[]) => `${median(xs).toFixed(0)} ms (p95 ${p95(xs).toFixed(0)})`
    console.log(`| ${path} | ${ms(html)} | ${ms(ready)} | ${ms(loaded)} | ${bytes} |`)
  }
} finally {
  await browser.close()
  await broker.stop()
}
