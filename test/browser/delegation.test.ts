/**
 * Delegation and approval in the console, in a real browser against
 * `mandate serve --dev`: a chain made as the README walkthrough makes it
 * (alice → demo-agent → demo-subagent) drawn as a graph; a pending approval
 * made by the README's CIBA walkthrough (demo-payer) approved by alice, the
 * user it acts for, after which the agent's poll gets its token; and the
 * delegation log's page.
 */
import { decodeJwt } from 'jose'
import { describe, expect, it } from 'vitest'
import { expectAccessible, haveChromium, screenshot } from '../support/browser.js'
import { agentPost, CIBA, devUserToken, exchange } from '../support/dev-broker.js'
import { consoleRig, signIn } from './support.js'

const DEMO = 'https://demo.example'
const PAYMENTS = 'https://payments.example'
const BINDING = 'Pay 123.50 EUR to Merchant A, invoice 4711'
const DETAILS = [{ type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '123.50' }, creditorName: 'Merchant A' }]

describe.runIf(haveChromium('test/browser/delegation.test.ts'))('console: chains, approvals and the audit log in Chromium', () => {
  const rig = consoleRig('delegation-browser')

  it('draws a delegation chain as a graph: the user, the agent, the sub-agent', async () => {
    const base = rig.broker.base
    const parent = await exchange(base, 'demo-agent', await devUserToken(base, 'alice', 'demo:read demo:write'), DEMO, 'demo:read')
    expect(parent.status, JSON.stringify(parent.body)).toBe(200)
    const parentToken = String(parent.body['access_token'])
    const child = await exchange(base, 'demo-subagent', parentToken, DEMO, 'demo:read')
    expect(child.status, JSON.stringify(child.body)).toBe(200)
    const jti = String(decodeJwt(parentToken).jti)

    const page = await rig.page()
    await signIn(page, 'alice')
    await page.goto(`/console/chains/${encodeURIComponent(jti)}`)
    const graph = page.getByRole('main').locator('svg').first()
    await graph.waitFor()
    const drawn = (await graph.textContent()) ?? ''
    for (const node of ['alice', 'demo-agent', 'demo-subagent']) expect(drawn).toContain(node)
    // Drawn in this order: the user delegates to the agent, which delegates to the sub-agent.
    expect(drawn.indexOf('alice')).toBeLessThan(drawn.indexOf('demo-agent'))
    expect(drawn.indexOf('demo-agent')).toBeLessThan(drawn.indexOf('demo-subagent'))
    await expectAccessible(page)
    await screenshot(page, 'chain')
  })

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

  it('shows the delegation log with a token just issued', async () => {
    const base = rig.broker.base
    const issued = await exchange(base, 'demo-agent', await devUserToken(base, 'alice', 'demo:read'), DEMO, 'demo:read')
    expect(issued.status, JSON.stringify(issued.body)).toBe(200)
    const page = await rig.page()
    await signIn(page, 'alice')
    await page.goto('/console/audit')
    expect(new URL(page.url()).pathname).toBe('/console/audit')
    const main = page.getByRole('main')
    await expect.poll(async () => (await main.textContent()) ?? '').toContain('demo-agent')
    await expectAccessible(page)
    await screenshot(page, 'audit')
  })
})
