/**
 * The kill switch from the console in a real browser against `mandate serve
 * --dev`: a responder finds an agent, opens it, kills it with a reason
 * (form, then a confirmation), sees the kill and its propagation, and the
 * agent's next token request is refused; lifting it (again confirmed) lets
 * the agent get tokens again. A viewer and an owner see no Kill control.
 */
import { describe, expect, it } from 'vitest'
import { expectAccessible, haveChromium, screenshot } from '../support/browser.js'
import { devUserToken, exchange } from '../support/dev-broker.js'
import { consoleRig, signIn } from './support.js'

const AGENT = 'demo-agent'
const AUDIENCE = 'https://demo.example'
const REASON = 'prompt injection seen in ticket 4711'

describe.runIf(haveChromium('test/browser/kill.test.ts'))('console: kill and lift an agent in Chromium', () => {
  const rig = consoleRig('kill-browser')

  /** demo-agent's token request for alice, as the README walkthrough makes it. */
  const tokenRequest = async () => exchange(rig.broker.base, AGENT, await devUserToken(rig.broker.base, 'alice', 'demo:read demo:write'), AUDIENCE, 'demo:read')

  it('shows a viewer and an owner the agent without a Kill control', async () => {
    for (const person of ['vera', 'oscar'] as const) {
      const page = await rig.page()
      await signIn(page, person)
      await page.goto(`/console/agents/${AGENT}`)
      await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe(AGENT)
      expect(await page.getByRole('link', { name: 'Kill', exact: true }).count(), person).toBe(0)
      expect(await page.getByRole('button', { name: 'Kill', exact: true }).count(), person).toBe(0)
      await expectAccessible(page)
    }
  })

  it('kills the agent from its page with a reason: the kill shows who and why, the agent is refused tokens; lifting it lets it have tokens again', async () => {
    const before = await tokenRequest()
    expect(before.status, JSON.stringify(before.body)).toBe(200)

    const page = await rig.page()
    await signIn(page, 'rita')
    await page.getByLabel('Search').fill(AGENT)
    await page.getByRole('button', { name: 'Find' }).click()
    await page.waitForURL('**/console/agents?*')
    await page.getByRole('table').getByRole('link', { name: AGENT, exact: true }).click()
    await page.waitForURL(`**/console/agents/${AGENT}`)
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe(AGENT)
    await expectAccessible(page)
    await screenshot(page, 'agent')

    // The Kill control (a link or a form's button) leads to the kill form.
    const main = page.getByRole('main')
    await main
      .getByRole('link', { name: 'Kill', exact: true })
      .or(main.getByRole('button', { name: 'Kill', exact: true }))
      .click()
    await page.waitForURL(`**/console/kill?agent=${AGENT}`)
    expect(await main.getByRole('radio').count()).toBeGreaterThan(0)
    expect(await main.getByRole('radio', { checked: true }).count()).toBe(1)
    const reason = main.getByRole('textbox', { name: /Reason/ })
    expect(await reason.getAttribute('required')).not.toBeNull()
    await reason.fill(REASON)
    await expectAccessible(page)
    await screenshot(page, 'kill-form')
    await main.getByRole('button', { name: 'Kill', exact: true }).click()

    const confirm = main.getByRole('button', { name: 'Confirm kill' })
    await confirm.waitFor()
    expect(await page.getByRole('main').textContent()).toContain(REASON)
    await expectAccessible(page)
    await screenshot(page, 'kill-confirm')
    await confirm.click()

    await page.waitForURL('**/console/kills/*')
    const killPath = new URL(page.url()).pathname
    expect(await main.textContent()).toContain(REASON)
    expect(await main.textContent()).toContain('rita')
    expect(await main.textContent()).toMatch(/propagat/i)
    await expectAccessible(page)
    await screenshot(page, 'kill-status')

    // The agent's token request is refused while the kill stands (RFC 6749 §5.2).
    const refused = await tokenRequest()
    expect(refused.status).toBe(400)
    expect(refused.body).toMatchObject({ error: 'unauthorized_client' })

    await page.goto('/console/kills')
    expect(
      await page
        .getByRole('main')
        .getByRole('link', { name: new RegExp(AGENT) })
        .count(),
    ).toBeGreaterThan(0)
    await expectAccessible(page)
    await screenshot(page, 'kills')

    await page.goto(killPath)
    await page.getByRole('button', { name: 'Lift', exact: true }).click()
    const confirmLift = page.getByRole('button', { name: 'Confirm lift' })
    await confirmLift.waitFor()
    await expectAccessible(page)
    await confirmLift.click()
    await expect.poll(async () => (await page.getByRole('main').textContent()) ?? '').toMatch(/lifted/i)
    await expectAccessible(page)

    const after = await tokenRequest()
    expect(after.status, JSON.stringify(after.body)).toBe(200)
  })
})
