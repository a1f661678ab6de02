/**
 * A real nginx in front of a resource server, with the forward-auth server
 * block of docs/forward-auth.md (read from the page, so a test and the page
 * cannot drift). nginx: NGINX_BIN (default /usr/sbin/nginx), run as a
 * non-daemon child with its own prefix, temp dirs and pid under a folder the
 * caller owns, logging to stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

const root = new URL('../../', import.meta.url).pathname
export const NGINX = process.env['NGINX_BIN'] || '/usr/sbin/nginx'

/**
 * Whether nginx is here. Without it a test file that needs it is skipped
 * with a warning naming `file`, except under CI=true, where a missing nginx
 * fails the run (.ci/run installs it).
 */
export function haveNginx(file: string): boolean {
  if (existsSync(NGINX)) return true
  if (process.env['CI'] === 'true') throw new Error(`nginx not found at ${NGINX}: CI must run ${file} (.ci/run installs nginx)`)
  console.warn(`nginx not found at ${NGINX}: ${file} skipped (set NGINX_BIN, or install nginx)`)
  return false
}

/** The nginx server block of docs/forward-auth.md, pointed at a broker and an upstream on 127.0.0.1. */
export async function serverBlockFromDoc(brokerPort: number, upstreamPort: number, nginxPort: number): Promise<string> {
  const doc = await readFile(join(root, 'docs/forward-auth.md'), 'utf8')
  const block = /<!-- forward-auth-nginx:[^>]*-->\s*```nginx\n([\s\S]*?)```/.exec(doc)?.[1]
  if (block === undefined) throw new Error('docs/forward-auth.md: no nginx block after the forward-auth-nginx marker')
  const replaced = block
    .replace('server mandate.internal:8080;', `server 127.0.0.1:${brokerPort};`)
    .replace('proxy_pass http://orders.internal:3000;', `proxy_pass http://127.0.0.1:${upstreamPort};`)
    .replace('listen 80;', `listen 127.0.0.1:${nginxPort};`)
  for (const placeholder of ['mandate.internal', 'orders.internal', 'listen 80;']) {
    if (replaced.includes(placeholder)) throw new Error(`docs/forward-auth.md's nginx block changed: ${placeholder} left after substitution`)
  }
  return replaced
}

export interface Nginx {
  readonly child: ChildProcess
  /** What nginx printed (its error log), for failure messages. */
  readonly lines: string[]
  /** SIGQUIT (a graceful shutdown), SIGKILL after 10 s. */
  stop(): Promise<void>
}

/** Sends `signal` to a child that is still running and waits for its exit (SIGKILL after 10 s). */
export async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/**
 * Starts nginx with `serverBlock` inside a minimal `http {}` under
 * `dir/nginx`. Returns at once: the caller waits for it to answer (it does
 * once both it and the broker behind it are up).
 */
export async function startNginx(dir: string, serverBlock: string): Promise<Nginx> {
  const prefix = join(dir, 'nginx')
  for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) await mkdir(join(prefix, d), { recursive: true })
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${join(prefix, 'nginx.pid')};
error_log stderr warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path ${join(prefix, 'client_body')};
    proxy_temp_path ${join(prefix, 'proxy')};
    fastcgi_temp_path ${join(prefix, 'fastcgi')};
    uwsgi_temp_path ${join(prefix, 'uwsgi')};
    scgi_temp_path ${join(prefix, 'scgi')};
${serverBlock}
}
`
  await writeFile(join(prefix, 'nginx.conf'), conf)
  const child = spawn(NGINX, ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', 'stderr'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const keep = (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean))
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  return { child, lines, stop: () => stopChild(child, 'SIGQUIT') }
}
