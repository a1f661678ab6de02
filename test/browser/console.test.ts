/**
 * The console in a real browser against `mandate serve --dev`: a signed-out
 * person is sent to sign in; the dev people sign in with one click; the
 * Agents page lists and finds agents; the session cookie is a credential of
 * the admin API only with the CSRF token from the page, and only within the
 * person's role; signing out ends the session.
 */
import { describe, expect, it } from 'vitest'
import { csrfToken, expectAccessible, fetchInPage, haveChromium, screenshot } from '../support/browser.js'
import { devUserToken, exchange } from '../support/dev-broker.js'
import { consoleRig, signIn } from './support.js'

describe.runIf(haveChromium('test/browser/console.test.ts'))('console: sign-in, agents, CSRF and roles in Chromium', () => {
  const rig = consoleRig('console-browser')

  it('sends a signed-out person to sign in, with one button per dev person', async () => {
    const page = await rig.page()
    await page.goto('/console')
    expect(new URL(page.url()).pathname).toBe('/console/sign-in')
    for (const name of ['alice (admin)', 'rita (responder)', 'oscar (owner)', 'vera (viewer)']) {
      await expect.poll(() => page.getByRole('button', { name: `Sign in as ${name}` }).count()).toBe(1)
    }
    await expectAccessible(page)
    await screenshot(page, 'sign-in')
  })

  it('signs alice in to the Agents page: a table of the dev agents and their use, found by search, each linking to its page', async () => {
    const base = rig.broker.base
    for (const scope of ['demo:read', 'demo:read demo:write']) {
      const issued = await exchange(base, 'demo-agent', await devUserToken(base, 'alice', 'demo:read demo:write'), 'https://demo.example', scope)
      expect(issued.status, JSON.stringify(issued.body)).toBe(200)
    }
    const page = await rig.page()
    await signIn(page, 'alice')
    const table = page.getByRole('table')
    await expect.poll(() => table.locator('caption').textContent()).toMatch(/3 of 3 agents/)
    const links = table.getByRole('link')
    expect(await links.allTextContents()).toEqual(expect.arrayContaining(['demo-agent', 'demo-subagent', 'demo-payer']))
    // demo-agent's row counts the two tokens just issued (the "Tokens 24 h" column).
    const row = table.getByRole('row').filter({ has: page.getByRole('link', { name: 'demo-agent', exact: true }) })
    const headers = await table.getByRole('columnheader').allTextContents()
    const cells = await row.getByRole('cell').allTextContents()
    expect(cells[headers.findIndex((h) => h.trim() === 'Tokens 24 h')]?.trim()).toBe('2')
    expect(await page.getByRole('link', { name: 'demo-agent', exact: true }).getAttribute('href')).toBe('/console/agents/demo-agent')
    await expectAccessible(page)
    await screenshot(page, 'agents')

    // ?q= filters on the server: the page that comes back lists the match only.
    await page.getByLabel('Search').fill('payer')
    await page.getByRole('button', { name: 'Find' }).click()
    await page.waitForURL('**/console/agents?*q=payer*')
    expect(await page.getByRole('table').getByRole('link').allTextContents()).toEqual(['demo-payer'])
    await expectAccessible(page)
  })

  it('refuses a state-changing admin request that carries the session cookie but not the CSRF token (403), and a form without its csrf field', async () => {
    const page = await rig.page()
    await signIn(page, 'alice')
    const body = JSON.stringify({ agent: 'demo-agent', reason: 'CSRF probe: must not be recorded' })
    const noToken = await fetchInPage(page, '/admin/revocations', { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    expect(noToken.status).toBe(403)
    expect(JSON.parse(noToken.text)).toMatchObject({ error: 'forbidden' })
    const wrongToken = await fetchInPage(page, '/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': 'not-the-token' },
      body,
    })
    expect(wrongToken.status).toBe(403)
    // Nothing was recorded: the list (a read, no token needed) has no kill.
    const list = await fetchInPage(page, '/admin/revocations', { method: 'GET' })
    expect(list.status).toBe(200)
    expect(list.text).not.toContain('CSRF probe')

    // A console form posted without its csrf field (the sign-out form, as another site would forge it) does nothing.
    const signOut = await fetchInPage(page, '/console/sign-out', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
    })
    expect(signOut.status).toBe(403)
    await page.goto('/console/agents')
    expect(new URL(page.url()).pathname).toBe('/console/agents')
  })

  it('lets the admin API take a console request with its CSRF token, within the role: alice reads; vera (viewer) may not kill (403)', async () => {
    const alice = await rig.page()
    await signIn(alice, 'alice')
    const agents = await fetchInPage(alice, '/admin/agents', { method: 'GET' })
    expect(agents.status).toBe(200)

    const vera = await rig.page()
    await signIn(vera, 'vera')
    const kill = await fetchInPage(vera, '/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': await csrfToken(vera) },
      body: JSON.stringify({ agent: 'demo-agent', reason: 'a viewer tries to kill' }),
    })
    expect(kill.status).toBe(403)
    expect(JSON.parse(kill.text)).toMatchObject({ error: 'forbidden' })
    const list = await fetchInPage(alice, '/admin/revocations', { method: 'GET' })
    expect(list.text).not.toContain('a viewer tries to kill')
  })

  it('signs out with the header button: the session ends, and the console asks to sign in again', async () => {
    const page = await rig.page()
    await signIn(page, 'rita')
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.waitForURL('**/console/sign-in')
    await page.goto('/console/agents')
    expect(new URL(page.url()).pathname).toBe('/console/sign-in')
    const admin = await fetchInPage(page, '/admin/agents', { method: 'GET' })
    expect(admin.status).toBe(401)
  })
})
