/**
 * Signing a dev person in to the console of an app composed with `dev: true`,
 * as the sign-in page's button does: their session cookie (`name=value`, for
 * a `cookie` header) and the CSRF token the pages carry.
 */
import type { Hono } from 'hono'
import { expect } from 'vitest'

export interface ConsoleSignedIn {
  readonly cookie: string
  readonly csrf: string
}

/** `app` is the broker's app (`Mandate['app']`); `person` one of the dev people (alice, rita, oscar, vera). */
export async function consoleSignIn(app: Pick<Hono, 'request'>, person: string): Promise<ConsoleSignedIn> {
  const res = await app.request('/console/dev/sign-in', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `person=${encodeURIComponent(person)}`,
  })
  expect(res.status, `sign-in as ${person}`).toBe(303)
  const cookie = res.headers
    .getSetCookie()
    .find((c) => /^(__Host-)?mandate_console=/.test(c))
    ?.split(';')[0]
  expect(cookie, `session cookie of ${person}`).toBeDefined()
  const page = await (await app.request('/console/agents', { headers: { cookie: cookie! } })).text()
  const csrf = /<meta name="csrf-token" content="([^"]+)"/.exec(page)?.[1]
  expect(csrf, `CSRF token of ${person}`).toBeDefined()
  return { cookie: cookie!, csrf: csrf! }
}
