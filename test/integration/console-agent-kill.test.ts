/**
 * The console's Agent, Kill and Kills pages through the composed broker
 * (`--dev`, PGlite), signed in as the dev people: the agent page shows every
 * section from the admin API; a responder kills with a reason through the
 * two-step form, and the kill is the admin API's, by `console:<her email>`,
 * and stops the agent at the token endpoint; a viewer gets no Kill link
 * and is refused; a form without its CSRF token kills nothing; a lift
 * through its confirm page lifts it; the Kills page lists both states.
 */
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_KEYS, AUDIENCE, basic, bearer, OTHER_AUDIENCE, SECRET, startTestBroker, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { consoleSignIn } from '../support/console.js'

const AGENT = 'ops-agent'
const SECRET_HASH = hashClientSecret(SECRET).toString('hex')
const POLICY = `# Runs the on-call chores.
agent: ${AGENT}
owner: platform-team@example.com
purpose: on-call chores
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${SECRET_HASH} }
users: [{ issuer: ${USER_ISSUER} }]
grants:
  - audience: ${AUDIENCE}
    scopes: [read, write]
    default_scopes: [read]
  # Reports, once.
  - audience: ${OTHER_AUDIENCE}
    scopes: [read]
token_ttl: { default: 300, max: 300 }
`
const DAY = 86_400

interface Page {
  readonly status: number
  readonly location: string | null
  readonly html: string
}

describe('console: agent page, kill and lift', () => {
  let b: TestBroker
  const cookies = new Map<string, string>()

  const signIn = async (person: string) => {
    const { cookie } = await consoleSignIn(b.mandate.app, person)
    cookies.set(person, cookie)
  }
  const page = async (person: string, path: string, form?: Record<string, string>, headers: Record<string, string> = {}): Promise<Page> => {
    const res = await b.mandate.app.request(path, {
      method: form === undefined ? 'GET' : 'POST',
      headers: { ...headers, cookie: cookies.get(person)!, ...(form === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded' }) },
      ...(form === undefined ? {} : { body: new URLSearchParams(form).toString() }),
    })
    return { status: res.status, location: res.headers.get('location'), html: await res.text() }
  }
  const csrfOf = async (person: string) => {
    const { html } = await page(person, '/console/kills')
    const token = /<meta name="csrf-token" content="([^"]+)"/.exec(html)?.[1]
    expect(token).toBeDefined()
    return token!
  }
  const revocations = async () => {
    const res = await b.mandate.app.request('/admin/revocations', { headers: bearer(ADMIN_KEYS.auditor) })
    expect(res.status).toBe(200)
    return (
      (await res.json()) as {
        revocations: { id: string; kind: string; reason: string; created_by: string; in_force: boolean | null; lifted_by: string | null }[]
      }
    ).revocations
  }
  const exchange = async (scope: string) => b.token(b.exchangeForm(await b.userToken(), { scope }), basic(AGENT, SECRET))
  /** The text of the page, tags dropped, entities of quotes decoded: what a reader sees. */
  const text = (html: string) =>
    html
      .replace(/<[^>]+>/g, ' ')
      .replace(/&#39;|&#x27;/g, "'")
      .replace(/&quot;/g, '"')
      .replace(/&lt;/g, '<')
      .replace(/&gt;/g, '>')
      .replace(/&amp;/g, '&')
      .replace(/\s+/g, ' ')

  let jti: string
  let killId: string

  beforeAll(async () => {
    b = await startTestBroker({
      dev: true,
      embedded: true,
      sqlAudit: true,
      logLevel: 'warn',
      policies: { [`${AGENT}.yaml`]: POLICY },
      governance: { shrink_min_tokens: 1 },
    })
    // Day 0: its first token, with write; day 31: read only, and a scope it is not granted asked for and denied.
    expect((await exchange('read write')).status).toBe(200)
    b.advance(31 * DAY)
    const res = await exchange('read')
    expect(res.status).toBe(200)
    jti = decodeJwt(((await res.json()) as { access_token: string }).access_token).jti!
    expect((await exchange('admin')).status).toBe(400)
    for (const person of ['rita', 'vera', 'oscar']) await signIn(person)
  }, 120_000)
  afterAll(async () => {
    await b?.close()
  })

  it('renders every section of the agent page from the admin API', async () => {
    const p = await page('rita', `/console/agents/${AGENT}`)
    expect(p.status).toBe(200)
    expect(p.html).toContain(`<h1>${AGENT}</h1>`)
    const sections = [...p.html.matchAll(/<h2>([^<]+)<\/h2>/g)].map((m) => m[1])
    expect(sections).toEqual([
      'Policy',
      'Grants',
      'Suggested shrink',
      'Instances',
      'Recent tokens',
      'Recent denials',
      'Chains',
      'Kills',
      'Attestation',
      'Anomalies',
    ])
    const t = text(p.html)
    // Policy: the file as written, its path, the secret hash redacted.
    expect(t).toMatch(new RegExp(`File: /\\S+/policies/${AGENT}\\.yaml`))
    expect(t).toContain('# Runs the on-call chores.')
    expect(t).toContain("secret_sha256: '<redacted>'")
    expect(p.html).not.toContain(SECRET_HASH)
    // Grants: read used, write and the other audience unused in the 30-day window.
    expect(t).toMatch(new RegExp(`${AUDIENCE} read used`))
    expect(t).toMatch(new RegExp(`${AUDIENCE} write unused`))
    expect(t).toMatch(new RegExp(`${OTHER_AUDIENCE} read unused`))
    // The shrink as a diff: the unused grant's lines (and its comment) removed, write dropped from the scopes.
    expect(p.html).toMatch(/<span class="del"><span class="visually-hidden">removed: <\/span>- {2}# Reports, once\.\n<\/span>/)
    expect(p.html).toMatch(/<span class="del"><span class="visually-hidden">removed: <\/span>- {4}scopes: \[read, write\]\n<\/span>/)
    expect(p.html).toMatch(/<span class="add"><span class="visually-hidden">added: <\/span>\+ {4}\S/)
    expect(t).toContain(`suggested for removal: scope write at ${AUDIENCE}; audience ${OTHER_AUDIENCE}.`)
    // Recent tokens and denials, with the denial's reason.
    expect(t).toContain(jti)
    expect(t).toMatch(/invalid_scope/)
    // Attestation state; a responder may not attest, but may kill.
    expect(t).toMatch(/Attestation State not required Last attested never Next due none required/)
    expect(p.html).not.toMatch(/<button[^>]*>\s*Attest\s*<\/button>/)
    expect(p.html).toContain(`href="/console/kill?agent=${AGENT}"`)
    expect(p.html).toContain(`href="/console/kill?jti=${jti}"`)
  })

  it('shows a viewer no Kill link, refuses her the kill form, and her POST is 403 and kills nothing', async () => {
    const p = await page('vera', `/console/agents/${AGENT}`)
    expect(p.status).toBe(200)
    expect(p.html).not.toContain('/console/kill?')
    expect((await page('vera', `/console/kill?agent=${AGENT}`)).status).toBe(403)
    const csrf = await csrfOf('vera')
    for (const step of [{}, { confirm: 'yes' }]) {
      const tried = await page('vera', '/console/kill', { csrf, kind: 'agent', agent: AGENT, reason: 'vera tries', ...step })
      expect(tried.status).toBe(403)
    }
    expect(await revocations()).toEqual([])
  })

  it('refuses a kill form without its CSRF token, or from another site, at either step, and kills nothing', async () => {
    for (const step of [{}, { confirm: 'yes' }]) {
      const tried = await page('rita', '/console/kill', { kind: 'agent', agent: AGENT, reason: 'no token', ...step })
      expect(tried.status).toBe(403)
      const forged = await page('rita', '/console/kill', { csrf: 'not-the-token', kind: 'agent', agent: AGENT, reason: 'forged', ...step })
      expect(forged.status).toBe(403)
      // Her own token, but the browser says another site sent the form.
      const crossSite = await page(
        'rita',
        '/console/kill',
        { csrf: await csrfOf('rita'), kind: 'agent', agent: AGENT, reason: 'x', ...step },
        { 'sec-fetch-site': 'cross-site' },
      )
      expect(crossSite.status).toBe(403)
    }
    expect(await revocations()).toEqual([])
  })

  it('a responder kills the agent with a reason through the form and its confirm page; the broker then refuses it', async () => {
    const form = await page('rita', `/console/kill?agent=${AGENT}`)
    expect(form.status).toBe(200)
    expect(form.html).toMatch(/<legend>What to kill<\/legend>/)
    expect(form.html).toMatch(/<input type="radio" name="kind" value="agent" checked="" required=""/)
    expect(form.html).toMatch(/<label for="kill-reason">Reason<\/label><textarea id="kill-reason" name="reason" required=""/)
    const csrf = await csrfOf('rita')

    const noReason = await page('rita', '/console/kill', { csrf, kind: 'agent', agent: AGENT, reason: '  ' })
    expect(noReason.status).toBe(400)
    expect(text(noReason.html)).toContain('a reason is required')

    const confirm = await page('rita', '/console/kill', { csrf, kind: 'agent', agent: AGENT, reason: 'leaking tickets' })
    expect(confirm.status).toBe(200)
    const said = text(confirm.html)
    expect(said).toContain(`You are about to kill agent ${AGENT}.`)
    expect(said).toContain('This stops every live token the agent holds or appears in')
    expect(said).toContain(`${AGENT} has 0 live instances (issued a token in the last hour) and was issued 1 token in the last 24 hours`)
    expect(confirm.html).toMatch(/<button type="submit" class="danger">\s*Confirm kill\s*<\/button>/)
    expect(await revocations()).toEqual([])

    const done = await page('rita', '/console/kill', { csrf, kind: 'agent', agent: AGENT, reason: 'leaking tickets', confirm: 'yes' })
    expect(done.status).toBe(303)
    const [kill] = await revocations()
    expect(kill).toMatchObject({ kind: 'agent', reason: 'leaking tickets', created_by: 'console:rita@example.com', in_force: true })
    killId = kill!.id
    expect(done.location).toBe(`/console/kills/${killId}`)

    const refused = await exchange('read')
    expect(refused.status).toBe(400)
    expect(((await refused.json()) as { error: string }).error).toBe('unauthorized_client')
  })

  it('shows the kill: kind, target, reason, who, and its propagation status, with a Lift button for a responder only', async () => {
    const p = await page('rita', `/console/kills/${killId}`)
    expect(p.status).toBe(200)
    const t = text(p.html)
    expect(t).toContain(`Kill of agent ${AGENT}`)
    expect(t).toContain('leaking tickets')
    expect(t).toContain('console:rita@example.com')
    expect(t).toContain('in force')
    // One process, no Redis: it is the only instance, and no feed is open.
    expect(t).toMatch(/Reached every instance and subscriber at \S+ \S+ UTC/)
    expect(t).toMatch(/Where the kill has reached Kind Name On instance Applied or sent State Broker instance \S+ \S+ \S+ UTC applied/)
    expect(p.html).toMatch(/<button type="submit" class="primary">\s*Lift\s*<\/button>/)
    const viewer = await page('vera', `/console/kills/${killId}`)
    expect(viewer.status).toBe(200)
    expect(viewer.html).not.toMatch(/>\s*Lift\s*</)
    // The agent page lists it under Kills, and the Kills page among those in force.
    expect(text((await page('rita', `/console/agents/${AGENT}`)).html)).toMatch(
      /Kills Kills naming this agent, in force first .* in force This agent, everywhere agent ops-agent leaking tickets/,
    )
    const kills = text((await page('vera', '/console/kills')).html)
    expect(kills).toMatch(/In force 1 kill in force .* This agent, everywhere agent ops-agent leaking tickets console:rita@example\.com/)
    expect(kills).toContain('No kill was lifted.')
  })

  it('lifts through the confirm page; not without the CSRF token, nor as a viewer', async () => {
    expect((await page('vera', `/console/kills/${killId}/lift`)).status).toBe(403)
    const confirm = await page('rita', `/console/kills/${killId}/lift`)
    expect(confirm.status).toBe(200)
    expect(confirm.html).toMatch(/<button type="submit" class="primary">\s*Confirm lift\s*<\/button>/)
    expect((await page('rita', `/console/kills/${killId}/lift`, {})).status).toBe(403)
    expect((await page('vera', `/console/kills/${killId}/lift`, { csrf: await csrfOf('vera') })).status).toBe(403)
    expect((await revocations())[0]!.in_force).toBe(true)

    const lifted = await page('rita', `/console/kills/${killId}/lift`, { csrf: await csrfOf('rita') })
    expect(lifted.status).toBe(303)
    expect(lifted.location).toBe(`/console/kills/${killId}?done=lifted`)
    expect((await revocations())[0]).toMatchObject({ in_force: false, lifted_by: 'console:rita@example.com' })
    const shown = text((await page('rita', lifted.location!)).html)
    expect(shown).toContain('The kill was lifted.')
    expect(shown).toMatch(/State lifted/)
    const kills = text((await page('rita', '/console/kills')).html)
    expect(kills).toContain('No kill is in force.')
    expect(kills).toMatch(/Lifted 1 lifted kill, the latest first .* agent ops-agent leaking tickets console:rita@example\.com .* console:rita@example\.com/)
    b.advance(1)
    expect((await exchange('read')).status).toBe(200)
  })

  it('kills the agent for one user, from a recent token’s link; says what a kind lacks, and what the admin API refused', async () => {
    const agentPage = (await page('rita', `/console/agents/${AGENT}`)).html
    const link = `/console/kill?agent=${AGENT}&amp;sub=alice&amp;iss=${encodeURIComponent(USER_ISSUER)}`
    expect(agentPage).toContain(link)
    const form = await page('rita', link.replaceAll('&amp;', '&'))
    expect(form.html).toMatch(/<input type="radio" name="kind" value="agent_sub" checked=""/)
    const csrf = await csrfOf('rita')

    const lacking = await page('rita', '/console/kill', { csrf, kind: 'instance', agent: AGENT, reason: 'one copy' })
    expect(lacking.status).toBe(400)
    expect(text(lacking.html)).toContain('One running instance of the agent needs: Instance (act.instance).')
    // A user everywhere, at an issuer that is not trusted for users: the admin API's refusal, on the form, and nothing killed.
    const untrusted = await page('rita', '/console/kill', { csrf, kind: 'sub', sub: 'alice', iss: 'https://nobody.test', reason: 'x', confirm: 'yes' })
    expect(untrusted.status).toBe(400)
    expect(text(untrusted.html)).toMatch(/Nothing was killed: iss is not trusted for user subjects/)
    const before = (await revocations()).length

    const fields = { csrf, kind: 'agent_sub', agent: AGENT, sub: 'alice', iss: USER_ISSUER, reason: 'alice reported it' }
    expect(text((await page('rita', '/console/kill', fields)).html)).toContain(`You are about to kill agent ${AGENT} for user alice at ${USER_ISSUER}.`)
    const done = await page('rita', '/console/kill', { ...fields, confirm: 'yes' })
    expect(done.status).toBe(303)
    const all = await revocations()
    expect(all).toHaveLength(before + 1)
    expect(all[0]).toMatchObject({ kind: 'agent_sub', target: { agent: AGENT, sub: 'alice', iss: USER_ISSUER }, created_by: 'console:rita@example.com' })
    expect((await exchange('read')).status).toBe(400)
    const lifted = await page('rita', `/console/kills/${all[0]!.id}/lift`, { csrf })
    expect(lifted.status).toBe(303)

    // One token, from its link: revoked for good, so its page offers no Lift; the Kills page lists it apart.
    const token = await page('rita', '/console/kill', { csrf, kind: 'jti', jti, reason: 'token leaked', confirm: 'yes' })
    expect(token.status).toBe(303)
    const shown = await page('rita', token.location!)
    expect(text(shown.html)).toMatch(new RegExp(`Kill of token ${jti} State revoked Kind One token`))
    expect(shown.html).not.toMatch(/>\s*Lift\s*</)
    expect(text((await page('rita', '/console/kills')).html)).toMatch(
      new RegExp(`Revoked tokens and chains 1 revocation of a token or chain, .* One token token ${jti} token leaked console:rita@example\\.com`),
    )
  })

  it('offers Attest to the agent’s owner, and records it', async () => {
    const p = await page('oscar', `/console/agents/${AGENT}`)
    expect(p.html).toMatch(/<button type="submit" class="primary">\s*Attest\s*<\/button>/)
    expect(p.html).not.toContain('/console/kill?')
    const attested = await page('oscar', `/console/agents/${AGENT}/attest`, { csrf: await csrfOf('oscar'), note: 'still needed' })
    expect(attested.status).toBe(303)
    const after = text((await page('oscar', attested.location!)).html)
    expect(after).toContain('Attested: recorded in the delegation log.')
    expect(after).toMatch(/Last attested \S+ \S+ UTC by console:oscar@example\.com/)
  })
})
