/**
 * A Redis server of the test's own (`redis-server`, nothing kept on disk) on
 * a free port, for tests that flush or restart Redis: the shared one at
 * 127.0.0.1:6379 serves other tests and is never flushed or restarted.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { Redis } from 'ioredis'
import { freePort } from './net.js'
import { redisAnswers } from './redis.js'

export const REDIS_SERVER = process.env['REDIS_SERVER_BIN'] ?? '/usr/bin/redis-server'

/** True when a redis-server binary is there to start (else the suites that need one are skipped). */
export const redisServerAvailable = existsSync(REDIS_SERVER)

export interface PrivateRedis {
  readonly port: number
  readonly url: string
  /** FLUSHALL, as an operator might. */
  flush(): Promise<void>
  /** Stops the server and starts an empty one on the same port. */
  restart(): Promise<void>
  stop(): Promise<void>
}

function launch(port: number): ChildProcess {
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: 'ignore',
  })
  child.on('error', () => {})
  return child
}

async function untilAnswers(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!(await redisAnswers(`redis://127.0.0.1:${port}`))) {
    if (child.exitCode !== null) throw new Error(`redis-server on port ${port} exited ${String(child.exitCode)}`)
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer within 10 s`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', () => resolve())
    child.kill('SIGKILL')
  })
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort()
  let child = launch(port)
  await untilAnswers(port, child)
  const url = `redis://127.0.0.1:${port}`
  return {
    port,
    url,
    async flush() {
      const r = new Redis(url, { maxRetriesPerRequest: 1 })
      try {
        await r.flushall()
      } finally {
        r.disconnect()
      }
    },
    async restart() {
      await stopChild(child)
      child = launch(port)
      await untilAnswers(port, child)
    },
    stop: () => stopChild(child),
  }
}
