import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest'
import WebSocket from 'ws'

import { findFreePort } from '@airi/db'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { requiredInProduction } from '../src/env.ts'
import { buildLauncher, serverDir } from './server-process.ts'

const workspaceRoot = fileURLToPath(new URL('../../..', import.meta.url))
const bundle = fileURLToPath(new URL('../node_modules/.cache/airi-launch/main.js', import.meta.url))

/**
 * `pnpm start`'s process (`node launch.js main`: the cached bundle of src/main.ts), or
 * with `source` the TypeScript through tsx (NODE_ENV=production would want a build).
 */
function startMain(env: Record<string, string>, how: 'launcher' | 'source' = 'launcher'): { child: ChildProcess, output: () => string, exited: Promise<number | null> } {
  let output = ''
  const child = spawn(process.execPath, how === 'launcher' ? ['launch.js', 'main'] : ['--import', 'tsx', 'src/main.ts'], {
    cwd: serverDir,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  return { child, output: () => output, exited }
}

/** Starts the server on Postgres and Redis (a database of its own) and waits for /readyz. */
async function startReady(database: TestDatabase, env: Record<string, string> = {}) {
  const port = await findFreePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const main = startMain({ DATABASE_URL: database.url, REDIS_URL: inject('redisUrl'), REDIS_KEY_PREFIX: testRedisPrefix(), HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', ...env })
  // A deadline, not a speed check: someone's edit can make this start bundle again.
  const deadline = Date.now() + 120_000
  while (Date.now() < deadline) {
    const ready = await fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false)
    if (ready)
      return { main, baseUrl }
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  throw new Error(`server did not become ready:\n${main.output()}`)
}

beforeAll(() => buildLauncher(['main']), 300_000)

describe('the server process', () => {
  it('refuses to start in production, naming every missing variable', async () => {
    const main = startMain({ NODE_ENV: 'production' }, 'source')
    expect(await main.exited).toBe(1)
    for (const name of requiredInProduction)
      expect(main.output()).toContain(`${name} is required when NODE_ENV=production`)
  })

  describe('with Postgres and Redis configured', () => {
    let database: TestDatabase
    let baseUrl: string
    let main: ReturnType<typeof startMain>
    let startedAt: number

    beforeAll(async () => {
      database = await createTestDatabase()
      startedAt = Date.now()
      ;({ main, baseUrl } = await startReady(database))
    }, 180_000)
    afterAll(async () => {
      main.child.kill('SIGKILL')
      await database.drop()
    })

    it('starts from the bundle the first start built, without building again', async () => {
      expect(main.output()).not.toContain('bundling src/main.ts')
      expect(statSync(bundle).mtimeMs).toBeLessThan(startedAt)
    })

    it('logs structured lines with the request id', async () => {
      await fetch(`${baseUrl}/trpc/meta.info`, { headers: { 'x-request-id': 'log-probe-1' } })
      // The request's line is written once its connection has sent the last byte.
      await until(() => main.output().includes('log-probe-1'), 'the request\'s log line')
      const line = main.output().split('\n').find(text => text.includes('log-probe-1'))
      expect(JSON.parse(line!)).toMatchObject({ reqId: 'log-probe-1', service: 'airi-server' })
    })

    it('shuts down gracefully on SIGTERM: closes WebSockets, drains, exits 0', async () => {
      // An open tRPC socket (the production router has no data-free subscription to hold).
      const socket = new WebSocket(`${baseUrl.replace('http', 'ws')}/trpc`)
      const closed = new Promise<number>(resolve => socket.once('close', code => resolve(code)))
      await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))

      main.child.kill('SIGTERM')
      expect(await main.exited, main.output()).toBe(0)
      expect(main.output()).toContain('shutdown complete')
      // The server sent a close frame (1005: one without a status); a dropped connection would be 1006.
      expect(await closed).toBe(1005)
    })
  })

  it('cuts a request still open at the shutdown deadline, then exits 0', async () => {
    const database = await createTestDatabase()
    try {
      // A client that never finishes its body, and no request timeout to save the day.
      // At debug the server logs each request as it starts.
      const { main, baseUrl } = await startReady(database, { SHUTDOWN_TIMEOUT_MS: '500', HTTP_REQUEST_TIMEOUT_MS: '600000', LOG_LEVEL: 'debug' })
      const url = new URL(baseUrl)
      const socket = connect(Number(url.port), url.hostname)
      const closed = new Promise(resolve => socket.once('close', resolve))
      socket.on('error', () => {})
      socket.write(`POST /trpc/meta.info HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`)
      await until(() => main.output().split('\n').some(line => line.includes('"msg":"request started"') && line.includes('"url":"/trpc/meta.info"')), 'the server to receive the request')

      main.child.kill('SIGTERM')
      expect(await main.exited, main.output()).toBe(0)
      expect(main.output()).toContain('shutdown deadline reached')
      await closed
    }
    finally {
      await database.drop()
    }
  }, 60_000)
})

/** A process's parent and state from /proc (Linux), or undefined once it is gone. */
function procStat(pid: number): { ppid: number, state: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // `pid (comm) state ppid …`, where comm may hold spaces and parentheses.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { ppid: Number(ppid), state: state! }
  }
  catch {
    return undefined
  }
}

/** A zombie has ended; only its parent has not read its status yet. */
const running = (pid: number) => ![undefined, 'Z', 'X'].includes(procStat(pid)?.state)

/** `pid` and every running process below it. */
function processTree(pid: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc').filter(name => /^\d+$/.test(name))) {
    const stat = procStat(Number(entry))
    if (stat && running(Number(entry)))
      children.set(stat.ppid, [...children.get(stat.ppid) ?? [], Number(entry)])
  }
  const tree = [pid]
  for (let at = 0; at < tree.length; at++)
    tree.push(...children.get(tree[at]!) ?? [])
  return tree
}

const commandLine = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')

/** SIGKILL, for cleaning up: a process that ended meanwhile is fine. */
function killNow(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  }
  catch {
    // Already gone.
  }
}

/**
 * `pnpm start` from the workspace root as a person or a supervisor runs it: the
 * embedded Postgres under a data directory of its own, in a process group of its
 * own (a terminal's Ctrl-C signals the whole group).
 */
describe('pnpm start with the embedded Postgres', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'airi-lifecycle-'))
  // Under root the cluster runs as the `postgres` user, who must reach its directory.
  chmodSync(dataDir, 0o755)
  // The server exits by itself at twice its deadline; the rest is slack for a loaded machine.
  const SHUTDOWN_TIMEOUT_MS = 5_000
  const treeDeadlineMs = 4 * SHUTDOWN_TIMEOUT_MS + 10_000
  let started: number[] = []

  // A failed test must not leave a server or a postmaster behind (the next start needs the data directory).
  afterEach(async () => {
    started.filter(running).forEach(killNow)
    await until(() => !started.some(running), 'the processes left behind to be killed')
    started = []
  })
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

  async function startPnpm() {
    const port = await findFreePort()
    const baseUrl = `http://127.0.0.1:${port}`
    let output = ''
    const child = spawn('pnpm', ['start'], {
      cwd: workspaceRoot,
      detached: true,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, HOST: '127.0.0.1', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
    const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
    const ready = async () => {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error('pnpm start exited before it was ready')
      return fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false)
    }
    await until(ready, 'pnpm start to be ready', 180_000).catch((error: Error) => {
      processTree(child.pid!).forEach(killNow)
      throw new Error(`${error.message}\n${output}`)
    })
    const tree = processTree(child.pid!)
    started = [...started, ...tree]
    // pnpm, the server and the postmaster (with its workers) at least.
    expect(tree.map(commandLine).some(command => command.includes('launch.js main')), tree.map(commandLine).join('\n')).toBe(true)
    expect(tree.map(commandLine).some(command => command.includes('postgres -D')), tree.map(commandLine).join('\n')).toBe(true)
    return { child, tree, baseUrl, output: () => output, exited }
  }

  async function expectAllGone(tree: number[], baseUrl: string, output: () => string) {
    await until(() => tree.every(pid => !running(pid)), 'every process of pnpm start to end', treeDeadlineMs)
      .catch((error: Error) => {
        throw new Error(`${error.message}; still running:\n${tree.filter(running).map(commandLine).join('\n')}\n${output()}`)
      })
    expect(await fetch(`${baseUrl}/readyz`).then(() => 'answered', () => 'refused')).toBe('refused')
  }

  it('SIGTERM to pnpm\'s PID stops the server and the embedded Postgres, and pnpm exits 0', async () => {
    const { child, tree, baseUrl, output, exited } = await startPnpm()
    child.kill('SIGTERM')
    await expectAllGone(tree, baseUrl, output)
    expect(await exited, output()).toEqual({ code: 0, signal: null })
    expect(output()).toContain('shutdown complete')
  }, 300_000)

  it('Ctrl-C (SIGINT to the process group) shuts down gracefully, exit 0 and no ELIFECYCLE', async () => {
    const { child, tree, baseUrl, output, exited } = await startPnpm()
    process.kill(-child.pid!, 'SIGINT')
    await expectAllGone(tree, baseUrl, output)
    expect(await exited, output()).toEqual({ code: 0, signal: null })
    expect(output()).toContain('shutdown complete')
    expect(output()).not.toContain('ELIFECYCLE')
  }, 300_000)

  it('completes its shutdown when the embedded Postgres ended first (Ctrl-C reaches the postmaster too)', async () => {
    const { child, tree, baseUrl, output, exited } = await startPnpm()
    const postmaster = tree.find(pid => commandLine(pid).includes('postgres -D'))!
    process.kill(postmaster, 'SIGINT')
    await until(() => !running(postmaster), 'the postmaster to end')
    child.kill('SIGTERM')
    await expectAllGone(tree, baseUrl, output)
    expect(await exited, output()).toEqual({ code: 0, signal: null })
    // Not an exit by an emptied event loop halfway: the pools closed and telemetry was flushed.
    expect(output()).toContain('shutdown complete')
  }, 300_000)

  it('when pnpm is killed outright (SIGKILL), the server notices it is orphaned and stops with its Postgres', async () => {
    const { child, tree, baseUrl, output } = await startPnpm()
    child.kill('SIGKILL')
    await expectAllGone(tree, baseUrl, output)
    expect(output()).toContain('shutdown complete')
  }, 300_000)
})
