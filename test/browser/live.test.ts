/**
 * Live events in Chromium: a page left open is told of a kill made
 * elsewhere (here with the dev admin key, as a responder's CLI would) and of
 * its lift, without a reload, in its live region.
 */
import { describe, expect, it } from 'vitest'
import { expectAccessible, haveChromium } from '../support/browser.js'
import { consoleRig, signIn } from './support.js'

const ADMIN = { authorization: 'Bearer demo-admin-key', 'content-type': 'application/json' }

describe.runIf(haveChromium('test/browser/live.test.ts'))('console: live events in Chromium', () => {
  const rig = consoleRig('console-live')

  it('shows a kill made elsewhere, then its lift, on an open page without a reload', async () => {
    const page = await rig.page()
    await signIn(page, 'vera')
    const live = page.getByRole('status', { name: 'Live events' })
    // The stream is open once the broker said so (its `ready` event marks the region).
    await page.locator('#live[data-connected]').waitFor({ state: 'attached' })
    const loadedAt = await page.evaluate(() => performance.timeOrigin)

    const made = await fetch(`${rig.broker.base}/admin/revocations`, {
      method: 'POST',
      headers: ADMIN,
      body: JSON.stringify({ agent: 'demo-subagent', reason: 'live event probe' }),
    })
    expect(made.status).toBe(201)
    const kill = (await made.json()) as { id: string }
    const told = live.getByRole('link', { name: /Killed: agent demo-subagent: live event probe/ })
    await expect.poll(() => told.count()).toBe(1)
    expect(await told.getAttribute('href')).toBe(`/console/kills/${kill.id}`)

    expect((await fetch(`${rig.broker.base}/admin/revocations/${kill.id}`, { method: 'DELETE', headers: ADMIN })).status).toBe(200)
    await expect.poll(() => live.getByRole('link', { name: /Lifted: agent demo-subagent/ }).count()).toBe(1)
    // Still the page first loaded: nothing reloaded it.
    expect(await page.evaluate(() => performance.timeOrigin)).toBe(loadedAt)
    await expectAccessible(page)
  })
})
