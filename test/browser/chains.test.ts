/**
 * Delegation in the console, in a real browser against `mandate serve --dev`:
 * a chain made as the README walkthrough makes it (alice → demo-agent →
 * demo-subagent) drawn as a graph, and the delegation log's page.
 */
import { decodeJwt } from 'jose'
import { describe, expect, it } from 'vitest'
import { expectAccessible, haveChromium, screenshot } from '../support/browser.js'
import { devUserToken, exchange } from '../support/dev-broker.js'
import { consoleRig, signIn } from './support.js'

const DEMO = 'https://demo.example'

describe.runIf(haveChromium('test/browser/chains.test.ts'))('console: chains and the audit log in Chromium', () => {
  const rig = consoleRig('chains-browser')

  it('draws a delegation chain as a graph: the user, the agent, the sub-agent', async () => {
    const base = rig.broker.base
    const parent = await exchange(base, 'demo-agent', await devUserToken(base, 'alice', 'demo:read demo:write'), DEMO, 'demo:read')
    expect(parent.status, JSON.stringify(parent.body)).toBe(200)
    const parentToken = String(parent.body['access_token'])
    const child = await exchange(base, 'demo-subagent', parentToken, DEMO, 'demo:read')
    expect(child.status, JSON.stringify(child.body)).toBe(200)
    const jtis = [parentToken, String(child.body['access_token'])].map((t) => String(decodeJwt(t).jti))

    // Opened from the agent page's list of the chains it is in (the one delegation made here).
    const page = await rig.page()
    await signIn(page, 'alice')
    await page.goto('/console/agents/demo-agent')
    await page
      .getByRole('link', { name: /^Chain of token / })
      .first()
      .click()
    await page.waitForURL('**/console/chains/*')
    expect(jtis).toContain(decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!))
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
