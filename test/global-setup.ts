/**
 * vitest globalSetup: opens the run-wide log sink (test/support/log-sink.ts)
 * and, once every test file has run, scans everything the brokers logged for
 * what must never be logged (CONTRIBUTING.md "Conventions"): a compact JWS (a token or a
 * client assertion; the one exception is the signed audit checkpoint, which
 * the broker logs on purpose), an Authorization header's Basic or Bearer
 * value, a credential field with a value, and the secrets the tests use. A
 * finding fails the run (exit code 1) and is printed with its source and
 * line, the secret itself cut short.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ADMIN_KEYS, SECRET } from './support/broker.js'
import { LOG_SINK_ENV } from './support/log-sink.js'

const JWS = /eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}/
const AUTH_VALUE = /\b(?:Basic|Bearer) [A-Za-z0-9+/=._~-]{16,}/
const CREDENTIAL_FIELDS = ['authorization', 'subject_token', 'actor_token', 'client_assertion', 'client_secret', 'access_token', 'refresh_token', 'password']
/** Secrets the tests use (test/support/broker.ts, test/e2e/workers.test.ts). The dev-mode demo credentials are public by design. */
const KNOWN_SECRETS = [SECRET, ...Object.values(ADMIN_KEYS), 'workers-test-secret-0123456789abcdef0123456789abcdef']

function findings(text: string): string[] {
  const found: string[] = []
  let source = '(unknown)'
  let n = 0
  for (const raw of text.split('\n')) {
    n++
    if (raw.startsWith('#source ')) {
      source = raw.slice('#source '.length)
      continue
    }
    let line = raw
    let parsed: Record<string, unknown> | undefined
    try {
      parsed = raw.startsWith('{') ? (JSON.parse(raw) as Record<string, unknown>) : undefined
    } catch {
      parsed = undefined
    }
    if (parsed !== undefined) {
      if (parsed['msg'] === 'audit checkpoint') delete parsed['checkpoint']
      for (const f of CREDENTIAL_FIELDS) {
        const v = parsed[f]
        if (v !== undefined && v !== '[redacted]') found.push(`${source} line ${n}: field ${f} has a value`)
      }
      line = JSON.stringify(parsed)
    }
    const jws = JWS.exec(line)
    if (jws !== null) found.push(`${source} line ${n}: a compact JWS (${jws[0].slice(0, 24)}…)`)
    const auth = AUTH_VALUE.exec(line)
    if (auth !== null) found.push(`${source} line ${n}: an Authorization value (${auth[0].slice(0, 12)}…)`)
    for (const s of KNOWN_SECRETS) if (line.includes(s)) found.push(`${source} line ${n}: a test secret (${s.slice(0, 6)}…)`)
  }
  return found
}

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'mandate-test-logs-'))
  const file = join(dir, 'logs.txt')
  process.env[LOG_SINK_ENV] = file
  return () => {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      // nothing was logged (a run of files that start no broker)
    }
    const lines = text === '' ? 0 : text.split('\n').length
    const found = findings(text)
    if (found.length > 0) {
      console.error(`\nLOG SCAN FAILED: ${found.length} finding(s) in ${lines} lines of broker logs:`)
      for (const f of found.slice(0, 50)) console.error(`  ${f}`)
      console.error(`(the logs are kept in ${file})`)
      process.exitCode = 1
      return
    }
    console.log(`\nlog scan: ${lines} lines of broker logs from this run hold no token, Authorization value, credential field or test secret`)
    rmSync(dir, { recursive: true, force: true })
  }
}
