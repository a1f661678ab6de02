/**
 * `mandate completion bash|zsh`: a completion script generated from the
 * command tree itself, so that it never lists a command or an option the
 * CLI does not have. The script is static (it never runs node on a TAB
 * press): commands, options with the values they take (a file, a
 * directory, one of a few words), and positional arguments.
 *
 * Commander has no completion of its own; the packages that add it run
 * the program on every TAB press (tabtab, omelette, @bomb.sh/tab), which
 * costs a Node start each time.
 */
import type { Argument, Command, Option } from 'commander'

/** What a word is: a file, a directory, one of some words, or free text (nothing to offer). */
type Kind = { readonly type: 'file' | 'dir' | 'text' } | { readonly type: 'choices'; readonly values: readonly string[] }

interface OptionSpec {
  readonly flags: readonly string[]
  readonly description: string
  /** Undefined for a flag that takes no value. */
  readonly value?: Kind
  /** Takes every following word up to the next option (`<role...>`). */
  readonly variadic: boolean
}

interface CommandSpec {
  /** Space-separated path from the root: '' for `mandate`, 'revoke agent'. */
  readonly path: string
  readonly subcommands: readonly { readonly name: string; readonly description: string }[]
  readonly options: readonly OptionSpec[]
  readonly args: readonly Kind[]
}

function kindOfName(name: string): Kind {
  if (/file/i.test(name)) return { type: 'file' }
  if (/dir/i.test(name)) return { type: 'dir' }
  return { type: 'text' }
}

function optionSpec(o: Option): OptionSpec {
  const flags = [o.short, o.long].filter((f): f is string => f !== undefined)
  if (!o.required && !o.optional) return { flags, description: o.description, variadic: false }
  const choices = o.argChoices
  const valueName = /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1] ?? ''
  return {
    flags,
    description: o.description,
    value: choices === undefined ? kindOfName(valueName) : { type: 'choices', values: choices },
    variadic: o.variadic,
  }
}

function argKind(a: Argument): Kind {
  return a.argChoices === undefined ? kindOfName(a.name()) : { type: 'choices', values: a.argChoices }
}

const HELP: OptionSpec = { flags: ['-h', '--help'], description: 'display help for command', variadic: false }

/** Every command under `root`, depth first, the root first. */
export function commandSpecs(root: Command): CommandSpec[] {
  const specs: CommandSpec[] = []
  const walk = (cmd: Command, path: string) => {
    const subcommands = cmd.commands.map((c) => ({ name: c.name(), description: c.description() }))
    // Commander answers `help [command]` wherever there are subcommands.
    if (subcommands.length > 0) subcommands.push({ name: 'help', description: 'display help for command' })
    const args = cmd.registeredArguments.map(argKind)
    specs.push({ path, subcommands, options: [...cmd.options.map(optionSpec), HELP], args })
    if (subcommands.length > 0)
      specs.push({
        path: `${path}${path === '' ? '' : ' '}help`,
        subcommands: [],
        options: [],
        args: [{ type: 'choices', values: cmd.commands.map((c) => c.name()) }],
      })
    for (const c of cmd.commands) walk(c, `${path}${path === '' ? '' : ' '}${c.name()}`)
  }
  walk(root, '')
  return specs
}

/** A POSIX-shell single-quoted word (bash and zsh alike). */
const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`

/** How the scripts encode a value kind in one word: `file`, `dir`, `text`, `choices:a b c`; `+` in front for a variadic option. */
function kindWord(k: Kind, variadic = false): string {
  return `${variadic ? '+' : ''}${k.type === 'choices' ? `choices:${k.values.join(' ')}` : k.type}`
}

/** Shell functions shared by both scripts: what follows an option, what a positional argument is. */
function lookupFunctions(name: string, specs: readonly CommandSpec[]): string {
  const valueCases = specs.flatMap((s) =>
    s.options
      .filter((o) => o.value !== undefined)
      .map((o) => `    ${o.flags.map((f) => q(`${s.path}|${f}`)).join('|')}) REPLY=${q(kindWord(o.value!, o.variadic))} ;;`),
  )
  const argCases = specs.flatMap((s) => s.args.map((k, i) => `    ${q(`${s.path}|${i + 1}`)}) REPLY=${q(kindWord(k))} ;;`))
  return `# The value an option of a command takes: '' (none: a flag), file, dir, text, choices:..., '+' in front when it takes several.
_${name}_option_value() {
  case "$1|$2" in
${valueCases.join('\n')}
    *) REPLY='' ;;
  esac
}

# What the Nth positional argument of a command is.
_${name}_argument() {
  case "$1|$2" in
${argCases.join('\n')}
    *) REPLY='' ;;
  esac
}`
}

/**
 * Walks the words before the cursor (shared logic, written once for both
 * shells in their common syntax): sets `cmd` to the command path, `npos`
 * to the positional arguments given to it, and `expect` to the kind of
 * value the word at the cursor is, when it is an option's value.
 */
function walkBody(name: string, words: string, cword: string, first: number): string {
  return `  local cmd='' w='' expect='' REPLY='' i=${first} npos=0
  while (( i < ${cword} )); do
    w=\${${words}[i]}
    if [[ $w == -* ]]; then
      _${name}_option_value "$cmd" "$w"
      if [[ -n $REPLY && $w != *=* ]]; then
        if [[ $REPLY == +* ]]; then
          while (( i + 1 < ${cword} )) && [[ \${${words}[i+1]} != -* ]]; do (( i++ )); done
          (( i + 1 == ${cword} )) && expect=$REPLY
        elif (( i + 1 == ${cword} )); then
          expect=$REPLY
        else
          (( i++ ))
        fi
      fi
    else
      _${name}_subcommands "$cmd"
      if _${name}_is_word "$w" $REPLY; then
        cmd=\${cmd:+$cmd }$w
        npos=0
      elif [[ -n $REPLY ]]; then
        # Not a command of this group: an error to commander, nothing to offer.
        cmd='?'
      else
        (( npos++ ))
      fi
    fi
    (( i++ ))
  done`
}

export function bashScript(name: string, root: Command): string {
  const specs = commandSpecs(root)
  const subCases = specs.filter((s) => s.subcommands.length > 0).map((s) => `    ${q(s.path)}) REPLY=${q(s.subcommands.map((c) => c.name).join(' '))} ;;`)
  const optCases = specs.map((s) => `    ${q(s.path)}) REPLY=${q(s.options.flatMap((o) => o.flags).join(' '))} ;;`)
  return `# bash completion for ${name}, generated by \`${name} completion bash\`.
# Load it from ~/.bashrc:      source <(${name} completion bash)
# or install it for bash-completion:
#   ${name} completion bash > ~/.local/share/bash-completion/completions/${name}

_${name}_subcommands() {
  case "$1" in
${subCases.join('\n')}
    *) REPLY='' ;;
  esac
}

_${name}_options() {
  case "$1" in
${optCases.join('\n')}
    *) REPLY='' ;;
  esac
}

${lookupFunctions(name, specs)}

# Is $1 one of the remaining words?
_${name}_is_word() {
  local w=$1
  shift
  local x
  for x in "$@"; do [[ $x == "$w" ]] && return 0; done
  return 1
}

_${name}_complete_kind() {
  local kind=\${1#+}
  case "$kind" in
    file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$2")) ;;
    dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$2")) ;;
    choices:*) COMPREPLY=($(compgen -W "\${kind#choices:}" -- "$2")) ;;
    *) COMPREPLY=() ;;
  esac
}

_${name}() {
  local cur=\${COMP_WORDS[COMP_CWORD]}
${walkBody(name, 'COMP_WORDS', 'COMP_CWORD', 1)}
  COMPREPLY=()
  if [[ -n $expect && ( $expect != +* || $cur != -* ) ]]; then
    _${name}_complete_kind "$expect" "$cur"
  elif [[ $cur == -* ]]; then
    _${name}_options "$cmd"
    COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
  else
    _${name}_subcommands "$cmd"
    if [[ -n $REPLY ]]; then
      COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
    else
      _${name}_argument "$cmd" $(( npos + 1 ))
      _${name}_complete_kind "$REPLY" "$cur"
    fi
  fi
}

complete -F _${name} ${name}
`
}

/** A description for a completion menu: its first clause, on one line. */
function short(description: string): string {
  const one = description.replace(/\s+/g, ' ').trim()
  const cut = one.split(/: |; | \(/)[0]!.trim()
  return cut.length > 60 ? `${cut.slice(0, 59)}…` : cut
}

export function zshScript(name: string, root: Command): string {
  const specs = commandSpecs(root)
  const entries = (items: readonly { name: string; description: string }[]) => items.map((c) => q(`${c.name}:${short(c.description)}`)).join(' ')
  const subCases = specs.filter((s) => s.subcommands.length > 0).map((s) => `    ${q(s.path)}) reply=(${entries(s.subcommands)}) ;;`)
  const optCases = specs.map(
    (s) => `    ${q(s.path)}) reply=(${entries(s.options.flatMap((o) => o.flags.map((f) => ({ name: f, description: o.description }))))}) ;;`,
  )
  return `#compdef ${name}
# zsh completion for ${name}, generated by \`${name} completion zsh\`.
# Load it from ~/.zshrc, after compinit:   source <(${name} completion zsh)
# or install it in a directory of $fpath, before compinit:
#   ${name} completion zsh > ~/.zfunc/_${name}     (with fpath=(~/.zfunc $fpath) in ~/.zshrc)

# Subcommands of a command, as name:description; REPLY holds their names.
_${name}_subcommands() {
  case "$1" in
${subCases.join('\n')}
    *) reply=() ;;
  esac
  REPLY="\${(j: :)\${(@)reply%%:*}}"
}

_${name}_options() {
  case "$1" in
${optCases.join('\n')}
    *) reply=() ;;
  esac
}

${lookupFunctions(name, specs)}

_${name}_is_word() {
  local w=$1
  shift
  local -a list
  list=("$@")
  (( \${list[(Ie)$w]} ))
}

_${name}_complete_kind() {
  local kind=\${1#+}
  local -a values
  case "$kind" in
    file) _files ;;
    dir) _files -/ ;;
    choices:*) values=(\${=kind#choices:}); compadd -a values ;;
    *) _message 'text' ;;
  esac
}

_${name}() {
  local -a reply
  local cur=\${words[CURRENT]}
${walkBody(name, 'words', 'CURRENT', 2).replace('$REPLY; then', '${=REPLY}; then')}
  if [[ -n $expect && ( $expect != +* || $cur != -* ) ]]; then
    _${name}_complete_kind "$expect"
  elif [[ $cur == -* ]]; then
    _${name}_options "$cmd"
    _describe -t options option reply
  else
    _${name}_subcommands "$cmd"
    if (( \${#reply} )); then
      _describe -t commands command reply
    else
      _${name}_argument "$cmd" $(( npos + 1 ))
      _${name}_complete_kind "$REPLY"
    fi
  fi
}

# Autoloaded from $fpath this file is the body of _${name}; sourced, it registers it.
if [[ $funcstack[1] == _${name} ]]; then
  _${name} "$@"
else
  compdef _${name} ${name}
fi
`
}
