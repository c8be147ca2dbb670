import { execFileSync, spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import superjson from 'superjson'
import { inject } from 'vitest'

import { findFreePort } from '@airi/db'
import { testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
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

export interface ChildServer {
  baseUrl: string
  /** The server process's resident set size, from /proc. */
  rss: () => number
  createUser: () => Promise<{ id: string, token: string }>
  call: <T = unknown>(token: string, path: string, input: unknown) => Promise<T>
  /** SIGKILL, as a crash: nothing of the server's shutdown runs. */
  stop: () => Promise<void>
}

/**
 * `src/main.ts` in a process of its own, started again on another port when the one
 * found free was taken before the child could listen (a busy machine's connections).
 */
export async function startChildServer(database: TestDatabase, env: Record<string, string>): Promise<ChildServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServerProcessOnce(database, env)
    }
    catch (error) {
      if (attempt >= 3 || !String((error as Error).message).includes('EADDRINUSE'))
        throw error
    }
  }
}

/** `src/main.ts` in a process of its own (through tsx), on the test Postgres and Redis. */
async function startServerProcessOnce(database: TestDatabase, env: Record<string, string>): Promise<ChildServer> {
  const port = await findFreePort()
  const baseUrl = `http://127.0.0.1:${port}`
  let output = ''
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'test',
      DATABASE_URL: database.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: testRedisPrefix(),
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'warn',
      BETTER_AUTH_SECRET: 'soak-secret-0123456789abcdefghijklmnopqrstuvwxyz',
      LLM_ROUTER_MASTER_KEY: '07'.repeat(32),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  await until(async () => {
    if (child.exitCode !== null)
      throw new Error(`the server exited:\n${output}`)
    return fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false)
  }, 'the server process to be ready', 180_000)

  const authPost = (path: string, body: unknown) => fetch(`${baseUrl}/api/auth${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'origin': baseUrl },
    body: JSON.stringify(body),
  })
  return {
    baseUrl,
    rss() {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
      return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) * 1024
    },
    async createUser() {
      const email = `soak-${randomUUID().slice(0, 8)}@example.com`
      const password = 'correct horse battery staple'
      const signUp = await authPost('/sign-up/email', { email, password, name: 'soak' })
      if (!signUp.ok)
        throw new Error(`sign-up failed: ${signUp.status} ${await signUp.text()}`)
      // The verification e-mail only goes to the server's log; following its link would do this.
      await database.db.updateTable('user').set({ emailVerified: true }).where('email', '=', email).execute()
      const signIn = await authPost('/sign-in/email', { email, password })
      const token = signIn.headers.get('set-auth-token')
      const body = await signIn.json() as { user: { id: string } }
      if (!signIn.ok || !token)
        throw new Error(`sign-in failed: ${signIn.status}`)
      return { id: body.user.id, token }
    },
    async call<T>(token: string, path: string, input: unknown) {
      const response = await fetch(`${baseUrl}/trpc/${path}`, {
        method: 'POST',
        headers: { 'authorization': `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(superjson.serialize(input)),
      })
      const payload = await response.json() as { result?: { data: Parameters<typeof superjson.deserialize>[0] } }
      if (!response.ok || !payload.result)
        throw new Error(`${path} failed: ${response.status} ${JSON.stringify(payload)}`)
      return superjson.deserialize(payload.result.data) as T
    },
    async stop() {
      child.kill('SIGKILL')
      await exited
    },
  }
}
