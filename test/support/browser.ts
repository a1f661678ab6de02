/**
 * A real browser for the console's tests: Debian's Chromium (CHROMIUM_BIN,
 * default /usr/bin/chromium) driven by playwright-core, which brings no
 * browser of its own. One browser per test file, a fresh context (cookies,
 * storage) per test; axe checks each page visited, and the pages' screenshots
 * for docs/console/ are taken only when asked for (MANDATE_SCREENSHOTS=1,
 * `npm run screenshots`), so a test run never rewrites tracked files.
 */
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import AxeBuilder from '@axe-core/playwright'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { expect } from 'vitest'

const root = new URL('../../', import.meta.url).pathname
export const CHROMIUM = process.env['CHROMIUM_BIN'] || '/usr/bin/chromium'
/** The viewport of every page, so the screenshots in docs/ keep one size. */
export const VIEWPORT = { width: 1280, height: 800 } as const
const SCREENSHOTS = process.env['MANDATE_SCREENSHOTS'] === '1'
const SCREENSHOT_DIR = join(root, 'docs/console')

/**
 * Whether Chromium is here. Without it a test file that needs it is skipped
 * with a warning naming `file`, except under CI=true, where a missing
 * Chromium fails the run (.ci/run installs it).
 */
export function haveChromium(file: string): boolean {
  if (existsSync(CHROMIUM)) return true
  if (process.env['CI'] === 'true') throw new Error(`Chromium not found at ${CHROMIUM}: CI must run ${file} (.ci/run installs chromium)`)
  console.warn(`Chromium not found at ${CHROMIUM}: ${file} skipped (set CHROMIUM_BIN, or install chromium)`)
  return false
}

/**
 * Headless Chromium. Playwright gives each launch a fresh temporary profile
 * (user-data dir) and removes it on close. `--no-sandbox`: the tests run as
 * root, where Chromium's sandbox refuses to start; the pages are our own.
 * The rest keeps it from reaching out (updates, sync, QUIC probes) and from
 * wanting a GPU the machine lacks.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

/** A new context (no cookies) and its page, at the fixed viewport, resolving relative URLs against `baseURL`. */
export async function freshPage(browser: Browser, baseURL: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ baseURL, viewport: VIEWPORT, reducedMotion: 'reduce' })
  // Playwright's 30 s default is tight on two cores shared with the other test projects; the test's own timeout is 90 s.
  context.setDefaultTimeout(60_000)
  return { context, page: await context.newPage() }
}

/** Runs axe on the page as it is; fails on any `serious` or `critical` violation, listing each with the elements it found. */
export async function expectAccessible(page: Page): Promise<void> {
  const results = await new AxeBuilder({ page }).analyze()
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
  const list = bad.map((v) => `${v.impact ?? ''} ${v.id}: ${v.help}\n${v.nodes.map((n) => `    ${n.target.join(' ')}: ${n.failureSummary ?? ''}`).join('\n')}`)
  expect(list, `axe on ${page.url()}:\n${list.join('\n')}`).toEqual([])
}

/** Saves the viewport as docs/console/NAME.png, only under MANDATE_SCREENSHOTS=1. */
export async function screenshot(page: Page, name: string): Promise<void> {
  if (!SCREENSHOTS) return
  await mkdir(SCREENSHOT_DIR, { recursive: true })
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: false, animations: 'disabled', caret: 'hide' })
}

/** The session's CSRF token, from the page's `<meta name="csrf-token">`. */
export async function csrfToken(page: Page): Promise<string> {
  const token = await page.locator('meta[name="csrf-token"]').getAttribute('content')
  if (token === null || token === '') throw new Error(`no csrf-token meta on ${page.url()}`)
  return token
}

/** `fetch` from the page (its origin, its cookies): the status and the body's text. */
export function fetchInPage(
  page: Page,
  path: string,
  init: { method: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; text: string }> {
  return page.evaluate(
    async ([p, i]) => {
      const res = await fetch(p, { ...i, credentials: 'same-origin' })
      return { status: res.status, text: await res.text() }
    },
    [path, init] as const,
  )
}
