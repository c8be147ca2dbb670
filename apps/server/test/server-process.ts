import { execFileSync, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { findFreePort } from '@airi/db'
import { until } from '@airi/tooling/test/until'

/** apps/server, where `node launch.js <entry>` runs. */
export const serverDir = fileURLToPath(new URL('..', import.meta.url))

/** What a first `pnpm start` (or `pnpm airi`) builds: the web client for `main`, and each entry's bundle; done once so the starts reuse them. */
export function buildLauncher(entries: Array<'main' | 'airi'>): void {
  if (entries.includes('main'))
    execFileSync(process.execPath, ['../stage-web/scripts/build-if-stale.mjs'], { cwd: serverDir, stdio: 'inherit' })
  for (const entry of entries)
    execFileSync(process.execPath, ['scripts/dev-bundle.mjs', entry], { cwd: serverDir, stdio: 'inherit' })
}

export interface ServerProcess {
  baseUrl: string
  /** Everything it wrote to stdout and stderr so far. */
  output: () => string
  /** SIGTERM (unless it already ended); resolves with its exit code. */
  stop: () => Promise<number | null>
}

/**
 * `pnpm start`'s process (`node launch.js main`) on a loopback port, with only `env`
 * (and PATH); resolves once `ready` holds (by default /readyz answers 200).
 */
export async function startServerProcess(env: Record<string, string>, ready?: () => boolean | Promise<boolean>): Promise<ServerProcess> {
  const port = await findFreePort()
  const baseUrl = `http://127.0.0.1:${port}`
  let output = ''
  const child = spawn(process.execPath, ['launch.js', 'main'], {
    cwd: serverDir,
    env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: String(port), API_SERVER_URL: baseUrl, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout.on('data', (chunk: Buffer) => (output += chunk))
  child.stderr.on('data', (chunk: Buffer) => (output += chunk))
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null)
      child.kill('SIGTERM')
    return exited
  }
  const isReady = ready ?? (() => fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false))
  await until(async () => {
    if (child.exitCode !== null)
      throw new Error(`the server exited with ${child.exitCode}:\n${output}`)
    return isReady()
  }, 'the server to be ready', 90_000).catch(async (error: Error) => {
    await stop()
    throw new Error(`${error.message}\n${output}`)
  })
  return { baseUrl, output: () => output, stop }
}
