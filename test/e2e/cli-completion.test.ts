/**
 * `mandate completion bash|zsh`: the scripts as a shell runs them. bash: the
 * completion function called with COMP_WORDS and COMP_CWORD set, COMPREPLY
 * read back. zsh (when installed): a real interactive zsh in a pseudo-terminal
 * (zsh/zpty) with compinit, a TAB typed, and the candidates the completion
 * system was given printed by a compadd wrapper.
 */
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = new URL('../../', import.meta.url).pathname
const script = (shell: string) => {
  const r = spawnSync(process.execPath, [join(root, 'bin/mandate.js'), 'completion', shell], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  expect(r.status, r.stderr).toBe(0)
  return r.stdout
}
const hasZsh = spawnSync('zsh', ['-c', 'zmodload zsh/zpty'], { encoding: 'utf8' }).status === 0
// .ci/run installs zsh: under CI=true its absence fails the zsh cases instead of skipping them.
const runZsh = hasZsh || process.env['CI'] === 'true'

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-completion-'))
  await writeFile(join(dir, 'keys.json'), '{}')
  await writeFile(join(dir, 'kept.txt'), '')
  await mkdir(join(dir, 'policies'))
})
afterAll(() => rm(dir, { recursive: true, force: true }))

describe('bash', () => {
  let file: string
  beforeAll(async () => {
    file = join(dir, 'mandate.bash')
    await writeFile(file, script('bash'))
  }, 60_000)

  /** COMPREPLY for each command line; the last word is the one being completed. */
  function complete(lines: string[][]): string[][] {
    const calls = lines.map((words) => {
      const quoted = words.map((w) => `'${w.replaceAll("'", `'\\''`)}'`).join(' ')
      return `COMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; COMPREPLY=(); _mandate; echo "::$(IFS=,; echo "\${COMPREPLY[*]}")"`
    })
    const r = spawnSync('bash', ['-c', [`source '${file}'`, ...calls].join('\n')], { encoding: 'utf8', timeout: 30_000 })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stderr).toBe('')
    return r.stdout
      .split('\n')
      .filter((l) => l.startsWith('::'))
      .map((l) => (l === '::' ? [] : l.slice(2).split(',').sort()))
  }

  it('the script parses and registers itself for mandate', () => {
    const r = spawnSync('bash', ['-c', `source '${join(dir, 'mandate.bash')}' && complete -p mandate`], { encoding: 'utf8' })
    expect(r.stdout.trim()).toBe('complete -F _mandate mandate')
  })

  it('completes commands, subcommands, options, option values and arguments', () => {
    const cases: [string[], string[]][] = [
      [
        ['mandate', ''],
        ['admin-key', 'agents', 'approvals', 'audit', 'completion', 'config', 'help', 'keys', 'migrate', 'policy', 'revoke', 'serve', 'webhooks'],
      ],
      [
        ['mandate', 'approvals', ''],
        ['approve', 'deny', 'help', 'list', 'show'],
      ],
      [
        ['mandate', 'approvals', 'list', '--status', ''],
        ['approved', 'cancelled', 'denied', 'expired', 'issued', 'pending'],
      ],
      [
        ['mandate', 'approvals', 'approve', 'x', '--'],
        ['--help', '--json', '--note', '--url'],
      ],
      [['mandate', 're'], ['revoke']],
      [
        ['mandate', 'agents', ''],
        ['attest', 'help', 'list', 'show'],
      ],
      [
        ['mandate', 'revoke', ''],
        ['agent', 'chain', 'help', 'instance', 'jti', 'lift', 'list', 'status', 'sub'],
      ],
      [
        ['mandate', 'revoke', 'agent', 'x', '--'],
        ['--force', '--help', '--iss', '--json', '--reason', '--sub', '--url'],
      ],
      [
        ['mandate', 'revoke', 'instance', 'x', 'y', '--'],
        ['--force', '--help', '--json', '--reason', '--url'],
      ],
      // Free text: nothing is offered (not the files of the directory).
      [['mandate', 'revoke', 'agent', 'x', '--reason', ''], []],
      [['mandate', 'revoke', 'agent', '--reason', 'why', 'x', '--f'], ['--force']],
      // An option's value is not counted as an argument: the cursor is at rotate's <file>.
      [['mandate', 'keys', 'rotate', '--activate-after', '600', join(dir, 'key')], [join(dir, 'keys.json')]],
      [
        ['mandate', 'admin-key', 'bob', '--role', ''],
        ['admin', 'approver', 'auditor', 'responder'],
      ],
      // --role takes several.
      [
        ['mandate', 'admin-key', 'bob', '--role', 'admin', 'a'],
        ['admin', 'approver', 'auditor'],
      ],
      [
        ['mandate', 'admin-key', 'bob', '--role', 'admin', '--'],
        ['--approver', '--help', '--role'],
      ],
      [
        ['mandate', 'completion', ''],
        ['bash', 'zsh'],
      ],
      [['mandate', 'help', 'au'], ['audit']],
      [
        ['mandate', 'keys', 'help', ''],
        ['generate', 'rotate'],
      ],
      [
        ['mandate', 'keys', 'generate', join(dir, 'k')],
        [join(dir, 'keys.json'), join(dir, 'kept.txt')],
      ],
      [['mandate', 'serve', '--config', join(dir, 'key')], [join(dir, 'keys.json')]],
      [['mandate', 'serve', '-c', join(dir, 'key')], [join(dir, 'keys.json')]],
      // A directory argument: directories only.
      [['mandate', 'policy', 'check', `${dir}/`], [join(dir, 'policies')]],
      [
        ['mandate', 'policy', ''],
        ['check', 'diff', 'explain', 'help', 'secret', 'shrink', 'unused'],
      ],
      [
        ['mandate', 'audit', ''],
        ['help', 'query', 'show', 'verify'],
      ],
      [
        ['mandate', 'policy', 'shrink', 'x', '--'],
        ['--dir', '--help', '--json', '--since', '--url', '--write'],
      ],
      [
        ['mandate', 'audit', 'query', '--event', 'token.*', '--j'],
        ['--jti', '--json'],
      ],
      [['mandate', 'nonsense', ''], []],
    ]
    const got = complete(cases.map(([words]) => words))
    for (const [i, [words, expected]] of cases.entries()) expect({ words, got: got[i] }).toEqual({ words, got: [...expected].sort() })
  })
})

/**
 * A small version of the zpty technique that zsh completion tests commonly
 * use: each candidate handed to compadd is printed as "word -- description",
 * between two NUL lines printed before and after completion.
 */
const CAPTURE = String.raw`
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "source ${'$'}1"
repeat 100; do
  zpty -r z line
  [[ $line == ok* ]] && break
done
zpty -w z "$2"$'\t'
integer tog=0
while zpty -r z; do :; done | while IFS= read -r line; do
  if [[ $line == *$'\0\r' ]]; then
    (( tog++ )) && exit 0 || continue
  fi
  (( tog )) && echo -E - ${'$'}{line%$'\r'}
done
`
const INIT = String.raw`
PROMPT=
autoload -U compinit
compinit -u -D
bindkey '^I' complete-word
null-line () { echo -E - $'\0' }
compprefuncs=( null-line )
comppostfuncs=( null-line exit )
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd () {
  if [[ ${'$'}{@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
    builtin compadd "$@"
    return $?
  fi
  typeset -a __hits __dscr __tmp
  if (( $@[(I)-d] )); then
    __tmp=${'$'}{@[$[${'$'}{@[(i)-d]}+1]]}
    if [[ $__tmp == \(* ]]; then eval "__dscr=$__tmp"; else __dscr=( "${'$'}{(@P)__tmp}" ); fi
  fi
  builtin compadd -A __hits -D __dscr "$@"
  [[ -n $__hits ]] || return
  local i
  for i in {1..$#__hits}; do
    if (( $#__dscr >= i )); then echo -E - "$__hits[$i] -- ${'$'}{${'$'}{${'$'}{__dscr[$i]}##$__hits[$i] #}#-- }"; else echo -E - "$__hits[$i]"; fi
  done
}
`

describe.skipIf(!runZsh)('zsh', () => {
  let capture: string
  let init: string
  beforeAll(async () => {
    capture = join(dir, 'capture.zsh')
    init = join(dir, 'init.zsh')
    const completion = join(dir, '_mandate')
    await writeFile(completion, script('zsh'))
    await writeFile(capture, CAPTURE)
    await writeFile(init, `${INIT}\nsource '${completion}'\necho ok\n`)
  }, 60_000)

  const complete = (line: string): string[] => {
    const r = spawnSync('zsh', ['-f', capture, init, line], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status, r.stderr).toBe(0)
    return r.stdout.split('\n').filter(Boolean).sort()
  }

  it('completes commands with their descriptions', { timeout: 180_000 }, () => {
    expect(complete('mandate re')).toEqual(['revoke -- kill switch'])
    expect(complete('mandate revoke ')).toEqual([
      'agent -- kill an agent',
      'chain -- revoke a token and every token delegated from it',
      'help -- display help for command',
      'instance -- kill one running copy of an agent',
      'jti -- revoke one token',
      'lift -- lift an agent, user or instance kill',
      'list -- list revocations, newest first',
      'status -- where a revocation has reached',
      'sub -- kill a user',
    ])
  })

  it('completes options, skipping option values, and the values of options and arguments', { timeout: 300_000 }, () => {
    expect(complete('mandate revoke agent --reason why x --')).toEqual([
      '--force -- kill it even though no policy defines it',
      '--help -- display help for command',
      '--iss -- the user’s issuer',
      '--json -- print the broker’s JSON answer instead of a table',
      '--reason -- why',
      '--sub -- only for this user',
      '--url -- broker admin API base URL',
    ])
    expect(complete('mandate admin-key bob --role admin ')).toEqual(['admin', 'approver', 'auditor', 'responder'])
    expect(complete('mandate completion ')).toEqual(['bash', 'zsh'])
    expect(complete(`mandate keys generate ${dir}/key`)).toEqual(['keys.json'])
  })
})
