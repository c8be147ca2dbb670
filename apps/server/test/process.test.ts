import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { statSync } from 'node:fs'
import { connect } from 'node:net'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import WebSocket from 'ws'

import { findFreePort } from '@airi/db'
import { createAiriClient, type WebSocketConstructor } from '@airi/sdk'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { requiredInProduction } from '../src/env.ts'

const serverDir = fileURLToPath(new URL('..', import.meta.url))
const bundle = fileURLToPath(new URL('../node_modules/.cache/airi-launch/main.mjs', import.meta.url))

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

// What a first `pnpm start` builds (the web client, the bundle), so the starts below reuse them.
beforeAll(() => {
  execFileSync(process.execPath, ['../stage-web/scripts/build-if-stale.mjs'], { cwd: serverDir, stdio: 'inherit' })
  execFileSync(process.execPath, ['scripts/dev-bundle.mjs', 'main'], { cwd: serverDir, stdio: 'inherit' })
}, 300_000)

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
      const line = main.output().split('\n').find(text => text.includes('log-probe-1'))
      expect(line).toBeDefined()
      expect(JSON.parse(line!)).toMatchObject({ reqId: 'log-probe-1', service: 'airi-server' })
    })

    it('shuts down gracefully on SIGTERM: closes WebSockets, drains, exits 0', async () => {
      const client = createAiriClient({ baseUrl, WebSocket: WebSocket as unknown as WebSocketConstructor })
      const ticks: number[] = []
      const ended = new Promise<string>((resolve) => {
        client.meta.ticks.subscribe({ count: 100, intervalMs: 50 }, {
          onData: value => ticks.push(value.tick),
          onError: () => resolve('error'),
          onComplete: () => resolve('complete'),
          onStopped: () => resolve('stopped'),
        })
      })
      await until(() => ticks.length >= 2, 'two ticks')

      main.child.kill('SIGTERM')
      expect(await main.exited, main.output()).toBe(0)
      expect(main.output()).toContain('shutdown complete')
      // The subscription did not run to its 100th tick: the server closed the socket.
      await Promise.race([ended, new Promise(resolve => setTimeout(resolve, 500))])
      expect(ticks.length).toBeLessThan(100)
      await client.close()
    })
  })

  it('cuts a request still open at the shutdown deadline, then exits 0', async () => {
    const database = await createTestDatabase()
    try {
      // A client that never finishes its body, and no request timeout to save the day.
      const { main, baseUrl } = await startReady(database, { SHUTDOWN_TIMEOUT_MS: '500', HTTP_REQUEST_TIMEOUT_MS: '600000' })
      const url = new URL(baseUrl)
      const socket = connect(Number(url.port), url.hostname)
      const closed = new Promise(resolve => socket.once('close', resolve))
      socket.on('error', () => {})
      socket.write(`POST /trpc/meta.info HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`)
      await until(() => main.output().includes('"url":"/trpc/meta.info"'), 'the server to receive the request')

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
