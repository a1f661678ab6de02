/**
 * Forward auth behind a real nginx: the server block of docs/forward-auth.md
 * (read from the page, so the two cannot drift), in front of an upstream
 * that does no authentication of its own, with a real `mandate serve --dev`
 * as the broker. A token the broker minted passes and the upstream sees the
 * X-Mandate-* headers (and none a client forged); the agent killed through
 * the admin API is refused through nginx within 100 ms of the kill's 201; a
 * missing scope is 403 with its challenge; no token is 401 with the bare
 * challenge passed through to the client. A DPoP-bound token (RFC 9449),
 * from the token endpoint through oauth4webapi's DPoP client, with its proof for the original method and URL passes (the
 * page's block passes them as X-Original-Method and X-Original-URL); the
 * same token sent with a proof of another key (a stolen token) is refused,
 * and so is a proof replayed.
 *
 * nginx: NGINX_BIN (default /usr/sbin/nginx), run as a non-daemon child with
 * its own prefix, temp dirs and pid under a temp folder, logging to stderr.
 * Without it the file is skipped with a warning, except under CI=true, where
 * a missing nginx fails the run.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'
import { haveNginx, serverBlockFromDoc, startNginx, stopChild, type Nginx } from '../support/nginx.js'

const root = new URL('../../', import.meta.url).pathname

const AGENT = { authorization: `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}` }
const ADMIN = { authorization: 'Bearer demo-admin-key', 'content-type': 'application/json' }
/** The bound the kill switch promises (docs/ARCHITECTURE.md "The kill switch"): every mirror within 100 ms. */
const KILL_BOUND_MS = 100

interface Seen {
  readonly path: string
  readonly headers: IncomingHttpHeaders
}

describe.runIf(haveNginx('test/e2e/forward-auth-nginx.test.ts'))('forward auth behind nginx', () => {
  let dir: string
  let broker: ChildProcess
  let nginx: Nginx | undefined
  let upstream: Server
  let brokerUrl: string
  let front: string
  const seen: Seen[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-fwdauth-nginx-'))
    const [brokerPort, upstreamPort, nginxPort] = [await freePort(), await freePort(), await freePort()]

    // The resource server: no authentication at all, it answers whatever reaches it and remembers what it saw.
    upstream = createServer((req, res) => {
      seen.push({ path: req.url ?? '', headers: req.headers })
      res.writeHead(200, { 'content-type': 'text/plain' }).end('orders')
    })
    await new Promise<void>((resolve) => upstream.listen(upstreamPort, '127.0.0.1', resolve))

    // The dev demo agents, granted the page's audience and scopes instead of the walkthrough's.
    const policies = join(dir, 'policies')
    await mkdir(policies)
    for (const name of ['demo-agent.yaml', 'demo-subagent.yaml']) {
      const text = await readFile(join(root, 'policies/dev', name), 'utf8')
      const orders = text.replaceAll('https://demo.example', 'https://orders.example').replaceAll('demo:', 'orders:')
      if (!orders.includes('orders:read') || !orders.includes('https://orders.example')) throw new Error(`policies/dev/${name} changed: no grant to rewrite`)
      await writeFile(join(policies, name), orders)
    }
    broker = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
      cwd: root,
      env: {
        ...process.env,
        PORT: String(brokerPort),
        MANDATE_DATA_DIR: join(dir, 'data'),
        MANDATE_POLICIES_DIR: policies,
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const sink = logSink('forward-auth broker')
    broker.stdout!.on('data', sink)
    broker.stderr!.on('data', sink)
    brokerUrl = `http://127.0.0.1:${brokerPort}`

    nginx = await startNginx(dir, await serverBlockFromDoc(brokerPort, upstreamPort, nginxPort))
    front = `http://127.0.0.1:${nginxPort}`

    const up = (url: string) =>
      fetch(url).then(
        (r) => r.status,
        () => 0,
      )
    for (const deadline = Date.now() + 60_000; ;) {
      if (broker.exitCode !== null) throw new Error(`broker exited with ${broker.exitCode}`)
      if (nginx.child.exitCode !== null) throw new Error(`nginx exited with ${nginx.child.exitCode}: ${nginx.lines.slice(-5).join('\n')}`)
      // nginx answers 401 for / without a token once both it and the broker are up (500 while the broker is not).
      if ((await up(`${brokerUrl}/readyz`)) === 200 && (await up(`${front}/`)) === 401) break
      if (Date.now() > deadline) throw new Error(`broker or nginx not ready in 60 s: ${nginx.lines.slice(-5).join('\n')}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }, 90_000)

  afterAll(async () => {
    await nginx?.stop() // nginx's graceful shutdown
    await stopChild(broker, 'SIGTERM')
    await new Promise((resolve) => upstream?.close(resolve))
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  /** A token for demo-agent from the dev user issuer, for https://orders.example with `scope`. */
  async function token(scope: string): Promise<string> {
    const user = (await (await fetch(`${brokerUrl}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"orders:read orders:write"}' })).json()) as {
      access_token: string
    }
    const res = await fetch(`${brokerUrl}/oauth2/token`, {
      method: 'POST',
      headers: AGENT,
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://orders.example',
        scope,
      }),
    })
    const body = (await res.json()) as { access_token?: string }
    expect(res.status, JSON.stringify(body)).toBe(200)
    return body.access_token!
  }

  it('a live token passes, and the upstream sees the decision’s headers, never the ones a client forged', async () => {
    const t = await token('orders:read orders:write')
    const before = seen.length
    const res = await fetch(`${front}/orders/7?x=1`, {
      headers: { authorization: `Bearer ${t}`, 'x-mandate-subject': 'mallory', 'x-mandate-agent': 'forged', 'x-mandate-scope': 'admin' },
    })
    expect(res.status).toBe(200)
    expect(await res.text()).toBe('orders')
    expect(seen.length).toBe(before + 1)
    const got = seen.at(-1)!
    expect(got.path).toBe('/orders/7?x=1')
    expect(got.headers['x-mandate-subject']).toBe('alice')
    expect(got.headers['x-mandate-subject-issuer']).toBe('https://users.dev.mandate.invalid')
    expect(got.headers['x-mandate-agent']).toBe('demo-agent')
    expect(got.headers['x-mandate-scope']).toBe('orders:read orders:write')
    expect(got.headers['x-mandate-actor-chain']).toBe('demo-agent')
    expect(got.headers['x-mandate-token-id']).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('no token: 401 with the bare challenge passed through to the client; the upstream never sees the request', async () => {
    const before = seen.length
    const res = await fetch(`${front}/orders/7`, { headers: { 'x-mandate-subject': 'mallory' } })
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="mandate"')
    const bad = await fetch(`${front}/orders/7`, { headers: { authorization: 'Bearer not.a.token' } })
    expect(bad.status).toBe(401)
    expect(bad.headers.get('www-authenticate')).toMatch(/^Bearer realm="mandate", error="invalid_token", error_description="[^"]+"$/)
    expect(seen.length).toBe(before)
  })

  it('a missing scope: 403 with the insufficient_scope challenge', async () => {
    const t = await token('orders:write')
    const before = seen.length
    const res = await fetch(`${front}/orders/7`, { headers: { authorization: `Bearer ${t}` } })
    expect(res.status).toBe(403)
    expect(res.headers.get('www-authenticate')).toBe(
      'Bearer realm="mandate", error="insufficient_scope", error_description="the access token lacks a scope this resource needs", scope="orders:read"',
    )
    expect(seen.length).toBe(before)
  })

  type KeyPair = Awaited<ReturnType<typeof oauth.generateKeyPair>>

  /**
   * A token for demo-agent bound to a new key (`cnf.jkt`, RFC 9449 §6.1):
   * oauth4webapi's DPoP client at the broker's token endpoint, as the
   * metadata names it.
   */
  async function bound(scope: string): Promise<{ token: string; pair: KeyPair }> {
    const user = (await (await fetch(`${brokerUrl}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"orders:read orders:write"}' })).json()) as {
      access_token: string
    }
    const metadata = (await (await fetch(`${brokerUrl}/.well-known/oauth-authorization-server`)).json()) as { issuer: string; token_endpoint: string }
    const as: oauth.AuthorizationServer = { issuer: metadata.issuer, token_endpoint: metadata.token_endpoint }
    const client: oauth.Client = { client_id: 'demo-agent' }
    const pair = await oauth.generateKeyPair('ES256')
    const DPoP = oauth.DPoP(client, pair)
    const params = new URLSearchParams({
      subject_token: user.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'https://orders.example',
      scope,
    })
    const ask = () =>
      oauth.genericTokenEndpointRequest(as, client, oauth.ClientSecretBasic('demo-secret'), 'urn:ietf:params:oauth:grant-type:token-exchange', params, {
        DPoP,
        [oauth.allowInsecureRequests]: true,
        [oauth.customFetch]: (url, init) => fetch(new URL(new URL(url).pathname, brokerUrl), init),
      })
    let res = await ask()
    // A broker started seconds ago refuses proofs that may predate its replay store (503, Retry-After): as a client does, wait and send a new one.
    for (let attempt = 0; res.status === 503 && attempt < 10; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 1000 * Number(res.headers.get('retry-after') ?? '1')))
      res = await ask()
    }
    const body = await oauth.processGenericTokenEndpointResponse(as, client, res)
    expect(body.token_type).toBe('dpop')
    return { token: body.access_token, pair }
  }

  /** oauth4webapi's DPoP request for https://orders.example`path`, sent to nginx: the answer, challenged or not, and the headers sent. */
  async function dpopThrough(token: string, pair: KeyPair, method: string, path: string): Promise<{ res: Response; sent: Record<string, string> }> {
    let sent: Record<string, string> = {}
    const options: oauth.ProtectedResourceRequestOptions = {
      DPoP: oauth.DPoP({}, pair),
      [oauth.customFetch]: (target: string, init: oauth.CustomFetchOptions<string, oauth.ProtectedResourceRequestBody>) => {
        sent = { ...init.headers }
        const u = new URL(target)
        return fetch(`${front}${u.pathname}${u.search}`, { method: init.method, headers: init.headers, ...(method === 'GET' ? {} : { body: 'x' }) })
      },
    }
    try {
      return {
        res: await oauth.protectedResourceRequest(
          token,
          method,
          new URL(`https://orders.example${path}`),
          new Headers(),
          method === 'GET' ? null : 'x',
          options,
        ),
        sent,
      }
    } catch (err) {
      if (err instanceof oauth.WWWAuthenticateChallengeError) return { res: err.response, sent }
      throw err
    }
  }

  it('DPoP: a bound token with a proof for the original method and URL passes; the upstream sees the request', async () => {
    const { token: t, pair } = await bound('orders:read')
    const before = seen.length
    const { res, sent } = await dpopThrough(t, pair, 'POST', '/orders/7?x=1')
    expect(sent['authorization']).toBe(`DPoP ${t}`)
    expect(res.status).toBe(200)
    expect(seen.length).toBe(before + 1)
    expect(seen.at(-1)!.path).toBe('/orders/7?x=1')
    expect(seen.at(-1)!.headers['x-mandate-agent']).toBe('demo-agent')
    // The same token as Bearer: refused (RFC 9449 §7.2).
    const bearer = await fetch(`${front}/orders/7`, { headers: { authorization: `Bearer ${t}` } })
    expect(bearer.status).toBe(401)
    expect(bearer.headers.get('www-authenticate')).toMatch(/^Bearer realm="mandate", error="invalid_token"/)
  })

  it('DPoP: a stolen token sent with another key’s proof, and a replayed proof, are refused through nginx', async () => {
    const { token: t, pair } = await bound('orders:read')
    const before = seen.length
    const stolen = await dpopThrough(t, await oauth.generateKeyPair('ES256'), 'GET', '/orders/7')
    expect(stolen.res.status).toBe(401)
    expect(stolen.res.headers.get('www-authenticate')).toMatch(
      /^DPoP realm="mandate", error="invalid_dpop_proof", error_description="DPoP proof is invalid", algs="/,
    )

    const first = await dpopThrough(t, pair, 'GET', '/orders/7')
    expect(first.res.status).toBe(200)
    const replayed = await fetch(`${front}/orders/7`, { headers: first.sent })
    expect(replayed.status).toBe(401)
    expect(replayed.headers.get('www-authenticate')).toMatch(/error="invalid_dpop_proof"/)
    // A fresh proof for /orders/7 sent to /orders/8 is refused too: nginx passes the URL the client asked for.
    let unsent: Record<string, string> = {}
    await oauth.protectedResourceRequest(t, 'GET', new URL('https://orders.example/orders/7'), new Headers(), null, {
      DPoP: oauth.DPoP({}, pair),
      [oauth.customFetch]: (_target: string, init: oauth.CustomFetchOptions<string, oauth.ProtectedResourceRequestBody>) => {
        unsent = { ...init.headers }
        return Promise.resolve(new Response(null, { status: 204 }))
      },
    })
    const elsewhere = await fetch(`${front}/orders/8`, { headers: unsent })
    expect(elsewhere.status).toBe(401)
    expect(elsewhere.headers.get('www-authenticate')).toMatch(/error="invalid_dpop_proof"/)
    expect((await fetch(`${front}/orders/7`, { headers: unsent })).status).toBe(200)
    expect(seen.length).toBe(before + 2)
  })

  // Last: it kills demo-agent, which the tests above need alive.
  it(`the agent killed through the admin API is refused through nginx within ${KILL_BOUND_MS} ms of the kill's 201`, async () => {
    const t = await token('orders:read')
    const through = () => fetch(`${front}/orders/7`, { headers: { authorization: `Bearer ${t}` } })
    expect((await through()).status).toBe(200)

    const kill = await fetch(`${brokerUrl}/admin/revocations`, { method: 'POST', headers: ADMIN, body: JSON.stringify({ agent: 'demo-agent', reason: 'e2e' }) })
    const killedAt = performance.now()
    expect(kill.status).toBe(201)
    const { id } = (await kill.json()) as { id: string }

    // Polled through nginx, bounded: the first refusal's time after the 201.
    let refusedAfter: number | undefined
    const polls: number[] = []
    while (performance.now() - killedAt < 5_000) {
      const res = await through()
      polls.push(res.status)
      if (res.status === 401) {
        refusedAfter = performance.now() - killedAt
        expect(res.headers.get('www-authenticate')).toMatch(/error="invalid_token"/)
        break
      }
    }
    expect(refusedAfter, `statuses seen: ${polls.join(',')}`).toBeDefined()
    expect(refusedAfter!).toBeLessThan(KILL_BOUND_MS)
    expect(polls.filter((s) => s !== 200 && s !== 401)).toEqual([])

    await fetch(`${brokerUrl}/admin/revocations/${id}`, { method: 'DELETE', headers: ADMIN })
  })
})
