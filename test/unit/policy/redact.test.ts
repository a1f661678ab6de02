/**
 * A policy's text as the admin API shows it: every `secret_sha256` value
 * replaced (one, a flow list, a block list), everything else as written.
 */
import { describe, expect, it } from 'vitest'
import { parseDocument } from 'yaml'
import { redactPolicyText } from '../../../src/policy/redact.js'

const A = 'a'.repeat(64)
const B = 'b'.repeat(64)

describe('redactPolicyText', () => {
  it('replaces one hash in a flow mapping, keeping the comment beside it', () => {
    const text = `agent: x\nauthentication: { method: client_secret_basic, secret_sha256: ${A} } # rotated in May\n`
    expect(redactPolicyText(text)).toEqual({
      text: "agent: x\nauthentication: { method: client_secret_basic, secret_sha256: '<redacted>' } # rotated in May\n",
      redacted: ['authentication.secret_sha256'],
    })
  })

  it('replaces every hash of a list, flow or block, and the result is still YAML', () => {
    for (const list of [`[${A}, "${B}"]`, `\n    - ${A}\n    - '${B}'`]) {
      const out = redactPolicyText(`authentication:\n  method: client_secret_basic\n  secret_sha256: ${list}\n`)!
      expect(out.text).not.toContain(A)
      expect(out.text).not.toContain(B)
      expect(parseDocument(out.text).toJS()).toEqual({ authentication: { method: 'client_secret_basic', secret_sha256: ['<redacted>', '<redacted>'] } })
    }
  })

  it('leaves a policy without secrets as it is, and refuses text that is not YAML', () => {
    const text = 'agent: x\n# keys are public\nauthentication: { method: private_key_jwt, jwks_uri: https://x.test/jwks }\n'
    expect(redactPolicyText(text)).toEqual({ text, redacted: [] })
    expect(redactPolicyText('a: [unclosed')).toBeUndefined()
  })
})
