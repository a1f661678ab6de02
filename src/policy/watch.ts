import { unwatchFile, watch, watchFile, type FSWatcher, type Stats } from 'node:fs'
import { formatIssue, type AgentPolicy, type PolicyIssue, type PolicyStore } from './port.js'
import type { Logger } from '../telemetry/log.js'
import { createPolicyStore, loadPolicies, type LoadOptions } from './load.js'

export interface ReloadablePolicyStore extends PolicyStore {
  /** Re-reads the directory; swaps the set in only when every file is good. */
  reload(): Promise<{ ok: true; agents: number } | { ok: false; issues: readonly PolicyIssue[] }>
  /** How the last reload went; no I/O. */
  status(): PolicyReloadStatus
  /** Tells `events` of every later reload; returns the unsubscribe. */
  subscribe(events: WatchEvents): () => void
  close(): void
}

/**
 * The outcome of the last reload (the load at start counts as a good one).
 * After a rejected reload the last good set keeps serving, but the
 * directory no longer says what is in force: `ok` stays false, with the
 * issues, until a reload succeeds. A directory that is gone or unreadable is
 * one issue on the directory itself (line 0).
 */
export interface PolicyReloadStatus {
  readonly ok: boolean
  readonly issues: readonly PolicyIssue[]
}

export interface WatchEvents {
  /** After every successful reload, with the whole new set and what the loader warned of. */
  onLoaded?(agents: number, policies: readonly AgentPolicy[], warnings: readonly PolicyIssue[]): void
  onRejected?(issues: readonly PolicyIssue[]): void
}

export interface WatchOptions extends Pick<LoadOptions, 'anomalyRules'> {
  /** Quiet time after a change before the reload. Default 150 ms. */
  readonly debounceMs?: number
  /**
   * How often the directory itself is stat-polled. The change watcher follows
   * one directory inode: this notices the directory removed, moved away or
   * replaced, reloads, and watches the new one. Default 5 s.
   */
  readonly pollMs?: number
}

/**
 * A policy store over `dir` that follows edits: a change triggers a reload
 * after `debounceMs` of quiet; a bad edit, or a directory that went away,
 * is reported and the last good set stays in force. Readers always see one
 * complete set.
 */
export function watchPolicies(dir: string, initial: PolicyStore, options: WatchOptions = {}): ReloadablePolicyStore {
  const debounceMs = options.debounceMs ?? 150
  let current = initial
  let status: PolicyReloadStatus = { ok: true, issues: [] }
  let timer: NodeJS.Timeout | undefined
  let running: Promise<unknown> = Promise.resolve()
  let closed = false
  const subscribers = new Set<WatchEvents>()
  const rejected = (issues: readonly PolicyIssue[]) => {
    for (const events of subscribers) events.onRejected?.(issues)
  }

  const reload: ReloadablePolicyStore['reload'] = async () => {
    const result = await loadPolicies(dir, { anomalyRules: options.anomalyRules })
    if (!result.ok) {
      status = { ok: false, issues: result.issues }
      rejected(result.issues)
      return { ok: false, issues: result.issues }
    }
    current = createPolicyStore(result.policies)
    status = { ok: true, issues: [] }
    for (const events of subscribers) events.onLoaded?.(current.size, result.policies, result.warnings)
    return { ok: true, agents: current.size }
  }

  const schedule = () => {
    if (closed) return
    clearTimeout(timer)
    timer = setTimeout(() => {
      // One reload at a time; loadPolicies reports problems as issues, but never let one escape unhandled.
      running = running.then(reload).catch((err: unknown) => {
        const issues = [{ file: dir, line: 0, column: 0, field: '', message: `reload failed: ${(err as Error).message}` }]
        status = { ok: false, issues }
        rejected(issues)
      })
    }, debounceMs)
  }

  let watcher: FSWatcher | undefined
  const rewatch = () => {
    watcher?.close()
    try {
      watcher = watch(dir, { persistent: false }, schedule)
      watcher.on('error', () => undefined)
    } catch {
      // Gone or unreadable: the reload reports it, the poll watches it again once it is back.
      watcher = undefined
    }
  }
  rewatch()

  const onStat = (now: Stats, before: Stats) => {
    // A missing directory stats as all zeros; a new one has another inode or birth time.
    if (now.ino === before.ino && now.dev === before.dev && now.birthtimeMs === before.birthtimeMs) return
    rewatch()
    schedule()
  }
  watchFile(dir, { interval: options.pollMs ?? 5_000, persistent: false }, onStat)

  return {
    snapshot: () => current,
    get: (agent) => current.get(agent),
    byWorkload: (issuer, subject) => current.byWorkload(issuer, subject),
    bySpiffeId: (id) => current.bySpiffeId(id),
    agents: () => current.agents(),
    get size() {
      return current.size
    },
    reload,
    status: () => status,
    subscribe(events) {
      subscribers.add(events)
      return () => subscribers.delete(events)
    },
    close() {
      closed = true
      clearTimeout(timer)
      watcher?.close()
      unwatchFile(dir, onStat)
    },
  }
}

/**
 * Loads `dir` and follows it (see `watchPolicies`), logging the load, each
 * reload and each rejected change. Throws `TypeError` when a file is invalid
 * at start: no instance starts on a partial set.
 */
export async function openPolicyDir(
  dir: string,
  logger: Logger,
  options: WatchOptions = {},
): Promise<{ readonly store: ReloadablePolicyStore; readonly initial: readonly AgentPolicy[] }> {
  const loaded = await loadPolicies(dir, { anomalyRules: options.anomalyRules })
  if (!loaded.ok) throw new TypeError(`policies in ${dir} are invalid: ${loaded.issues.map(formatIssue).join('; ')}`)
  const store = watchPolicies(dir, createPolicyStore(loaded.policies), options)
  // One line per warning, naming the file, at each load: a reload says it again until the file changes.
  const warn = (warnings: readonly PolicyIssue[]) => {
    for (const w of warnings) logger.warn({ file: w.file }, formatIssue(w))
  }
  warn(loaded.warnings)
  store.subscribe({
    onLoaded: (agents, _policies, warnings) => {
      logger.info({ agents, dir }, 'policies reloaded')
      warn(warnings)
    },
    onRejected: (issues) => logger.error({ issues: issues.map(formatIssue), dir }, 'policy change rejected; last good set stays in force'),
  })
  logger.info({ agents: loaded.policies.length, dir }, 'policies loaded')
  return { store, initial: loaded.policies }
}
