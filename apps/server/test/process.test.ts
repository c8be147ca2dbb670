import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import WebSocket from 'ws'

import { findFreePort } from '@airi/db'
import { createAiriClient, type WebSocketConstructor } from '@airi/sdk'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import { requiredInProduction } from '../src/env.ts'

const serverDir = fileURLToPath(new URL('..', import.meta.url))

function startMain(env: Record<string, string>): { child: ChildProcess, output: () => string, exited: Promise<number | null> } {
  let output = ''
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: serverDir,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  return { child, output: () => output, exited }
}

describe('the server process', () => {
  it('refuses to start in production, naming every missing variable', async () => {
    const main = startMain({ NODE_ENV: 'production' })
    expect(await main.exited).toBe(1)
    for (const name of requiredInProduction)
      expect(main.output()).toContain(`${name} is required when NODE_ENV=production`)
  })

  describe('with Postgres and Redis configured', () => {
    let database: TestDatabase
    let baseUrl: string
    let main: ReturnType<typeof startMain>

    beforeAll(async () => {
      database = await createTestDatabase()
      const port = await findFreePort()
      baseUrl = `http://127.0.0.1:${port}`
      main = startMain({ DATABASE_URL: database.url, REDIS_URL: inject('redisUrl'), REDIS_KEY_PREFIX: testRedisPrefix(), HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info' })
      const deadline = Date.now() + 30_000
      while (Date.now() < deadline) {
        const ready = await fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false)
        if (ready)
          return
        await new Promise(resolve => setTimeout(resolve, 200))
      }
      throw new Error(`server did not become ready:\n${main.output()}`)
    })
    afterAll(async () => {
      main.child.kill('SIGKILL')
      await database.drop()
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
      while (ticks.length < 2)
        await new Promise(resolve => setTimeout(resolve, 20))

      main.child.kill('SIGTERM')
      expect(await main.exited, main.output()).toBe(0)
      expect(main.output()).toContain('shutdown complete')
      // The subscription did not run to its 100th tick: the server closed the socket.
      await Promise.race([ended, new Promise(resolve => setTimeout(resolve, 500))])
      expect(ticks.length).toBeLessThan(100)
      await client.close()
    })
  })
})
