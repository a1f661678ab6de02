/**
 * Human approval in the console, in a real browser against `mandate serve
 * --dev`: a pending approval made by the README's CIBA walkthrough
 * (demo-payer) is approved by alice, the user it acts for, after which the
 * agent's poll gets its token.
 */
import { describe, expect, it } from 'vitest'
import { expectAccessible, fetchInPage, haveChromium, screenshot } from '../support/browser.js'
import { agentPost, CIBA, devUserToken } from '../support/dev-broker.js'
import { consoleRig, signIn } from './support.js'

const PAYMENTS = 'https://payments.example'
const BINDING = 'Pay 123.50 EUR to Merchant A, invoice 4711'
const DETAILS = [{ type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '123.50' }, creditorName: 'Merchant A' }]

describe.runIf(haveChromium('test/browser/approvals.test.ts'))('console: approving a request in Chromium', () => {
  const rig = consoleRig('approvals-browser')

  it('lists a pending approval for alice, who approves it; the agent’s next poll gets its token', async () => {
    const base = rig.broker.base
    const userToken = await devUserToken(base, 'alice', 'payments:initiate')
    const asked = await agentPost(
      base,
      'demo-payer',
      { login_hint_token: userToken, audience: PAYMENTS, authorization_details: JSON.stringify(DETAILS), binding_message: BINDING },
      '/oauth2/bc-authorize',
    )
    expect(asked.status, JSON.stringify(asked.body)).toBe(200)
    const authReqId = String(asked.body['auth_req_id'])
    const interval = Number(asked.body['interval'])
    const poll = () => agentPost(base, 'demo-payer', { grant_type: CIBA, auth_req_id: authReqId })
    expect((await poll()).body).toMatchObject({ error: 'authorization_pending' })
    const polledAt = Date.now()

    const page = await rig.page()
    await signIn(page, 'alice')
    await page.goto('/console/approvals')
    const main = page.getByRole('main')
    await expect.poll(async () => (await main.textContent()) ?? '').toContain(BINDING)
    expect(await main.textContent()).toContain('demo-payer')
    await expectAccessible(page)
    await screenshot(page, 'approvals')

    // The one pending approval's Approve button (each approval has its own form).
    const approve = main.getByRole('button', { name: /^Approve/ })
    // Its form posted without the csrf field, as another site would forge it: refused, the request still waits.
    const action = await main
      .locator('form')
      .filter({ has: page.getByRole('button', { name: /^Approve/ }) })
      .getAttribute('action')
    expect(action).toMatch(/^\/console\/approvals\/apr_/)
    const forged = await fetchInPage(page, action!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'decision=approve',
    })
    expect(forged.status).toBe(403)
    await page.reload()
    expect(await main.getByRole('heading', { name: 'Waiting (1)' }).count()).toBe(1)
    expect(await approve.count()).toBe(1)
    expect(await main.getByRole('button', { name: /^Deny/ }).count()).toBe(1)
    await approve.click()
    await page.waitForLoadState()
    await expect.poll(async () => (await page.getByRole('main').textContent()) ?? '').toMatch(/approved/i)
    await expectAccessible(page)

    // CIBA §7.3: no sooner than `interval` after the last poll, or the answer is slow_down.
    await new Promise((r) => setTimeout(r, Math.max(0, interval * 1000 + 500 - (Date.now() - polledAt))))
    const granted = await poll()
    expect(granted.status, JSON.stringify(granted.body)).toBe(200)
    expect(granted.body).toMatchObject({ scope: 'payments:initiate', authorization_details: DETAILS })
  })
})
