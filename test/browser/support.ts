/**
 * What the console's browser tests share: one dev broker and one Chromium per
 * file, a fresh browser context per test, and signing in as a dev person the
 * way a person does (the sign-in page's button).
 */
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, expect } from 'vitest'
import { freshPage, launchChromium } from '../support/browser.js'
import { startDevBroker, type DevBroker } from '../support/dev-broker.js'

/** The people of `serve --dev` and their console roles (src/console/roles.ts). */
export const PEOPLE = { alice: 'admin', rita: 'responder', oscar: 'owner', vera: 'viewer' } as const
export type Person = keyof typeof PEOPLE

export interface ConsoleRig {
  readonly broker: DevBroker
  /** A page in a new context of its own (closed after the test). */
  page(): Promise<Page>
}

/** Starts the broker and Chromium for this file (beforeAll) and closes everything after it. */
export function consoleRig(name: string): ConsoleRig {
  let broker: DevBroker | undefined
  let browser: Browser | undefined
  const contexts: BrowserContext[] = []
  beforeAll(async () => {
    ;[broker, browser] = await Promise.all([startDevBroker(name), launchChromium()])
  })
  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((c) => c.close()))
  })
  afterAll(async () => {
    await browser?.close()
    await broker?.stop()
  })
  return {
    get broker() {
      if (broker === undefined) throw new Error('the broker has not started')
      return broker
    },
    async page() {
      if (browser === undefined || broker === undefined) throw new Error('the browser has not started')
      const { context, page } = await freshPage(browser, broker.base)
      contexts.push(context)
      return page
    },
  }
}

/** Signs `person` in from the sign-in page that /console sends a signed-out person to; ends on the Agents page. */
export async function signIn(page: Page, person: Person): Promise<void> {
  await page.goto('/console')
  await expect.poll(() => new URL(page.url()).pathname).toBe('/console/sign-in')
  await page.getByRole('button', { name: `Sign in as ${person} (${PEOPLE[person]})` }).click()
  await page.waitForURL('**/console/agents')
}
