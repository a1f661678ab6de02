/**
 * The Node.js binaries a package's tarball test runs its example under: this
 * test run's own, and Node 22 (the oldest line the packages' `engines`
 * admit) when `MANDATE_NODE22` names its binary. `.ci/run` installs Node 22
 * and sets it, so under CI=true its absence is a failure, never a skip.
 */
import { spawnSync } from 'node:child_process'

export interface NodeRuntime {
  /** `node v24.22.3`, for test names. */
  readonly name: string
  readonly bin: string
}

function runtimeOf(bin: string): NodeRuntime {
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' })
  if (version.status !== 0) throw new Error(`${bin} --version failed: ${version.stderr}`)
  return { name: `node ${version.stdout.trim()}`, bin }
}

export function packageRuntimes(): NodeRuntime[] {
  const runtimes = [runtimeOf(process.execPath)]
  const node22 = process.env['MANDATE_NODE22']
  if (node22 !== undefined && node22 !== '') runtimes.push(runtimeOf(node22))
  else if (process.env['CI'] === 'true') throw new Error('MANDATE_NODE22 is not set: .ci/run installs Node 22 for the package tests')
  return runtimes
}
