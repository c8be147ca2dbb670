import { setTimeout as sleep } from 'node:timers/promises'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createApi, createLogTransport, createMemoryAdapters, silentLogger } from '@airi/api'
import { createDb, findFreePort } from '@airi/db'
import { startRedisServer, type RedisServerHandle } from '@airi/tooling/test/redis-server'

import { service } from '../src/runtime.ts'
import { buildServer } from '../src/server.ts'
import { startTestServer, type TestServer } from './harness.ts'

describe('probes', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await startTestServer()
  })
  afterAll(() => server.close())

  it('GET / names the service', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/' })
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ service: 'airi-server', version: service.version })
  })

  it('GET /livez answers without touching a dependency', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/livez' })
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ status: 'ok' })
  })

  it('GET /readyz checks Postgres and Redis', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/readyz' })
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ status: 'ok', checks: { postgres: { status: 'ok' }, redis: { status: 'ok' } } })
  })
})

describe('readiness follows Redis', () => {
  let redis: RedisServerHandle
  let server: TestServer

  beforeAll(async () => {
    redis = await startRedisServer(await findFreePort())
    server = await startTestServer({ redisUrl: redis.url })
  })
  afterAll(async () => {
    await server.close()
    await redis.stop()
  })

  async function readyz() {
    const response = await server.app.inject({ method: 'GET', url: '/readyz' })
    return { status: response.statusCode, body: response.json() }
  }

  async function waitForStatus(status: number, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs
    let last = await readyz()
    while (last.status !== status && Date.now() < deadline) {
      await sleep(100)
      last = await readyz()
    }
    return last
  }

  it('turns 503 when Redis stops and 200 when it returns', async () => {
    expect((await readyz()).status).toBe(200)

    await redis.stop()
    const down = await waitForStatus(503)
    expect(down.status).toBe(503)
    expect(down.body).toMatchObject({ status: 'unavailable', checks: { postgres: { status: 'ok' }, redis: { status: 'error' } } })
    expect(down.body.checks.redis.error).toEqual(expect.any(String))

    redis = await startRedisServer(redis.port)
    const up = await waitForStatus(200)
    expect(up).toEqual({ status: 200, body: { status: 'ok', checks: { postgres: { status: 'ok' }, redis: { status: 'ok' } } } })
  })
})

describe('readiness follows Postgres', () => {
  it('turns 503 naming postgres when the database cannot be reached', async () => {
    const db = createDb({ connectionString: `postgres://nobody:nothing@127.0.0.1:${await findFreePort()}/none` })
    const api = await createApi({
      db,
      adapters: createMemoryAdapters(),
      logger: silentLogger,
      emailTransport: createLogTransport(silentLogger),
      auth: { secret: 'test-secret-0123456789abcdefghijklmnop', baseUrl: 'http://127.0.0.1' },
      service,
    })
    const app = await buildServer({ api, service })
    try {
      const response = await app.inject({ method: 'GET', url: '/readyz' })
      expect(response.statusCode).toBe(503)
      expect(response.json()).toMatchObject({ status: 'unavailable', checks: { postgres: { status: 'error' } } })
      // Without REDIS_URL there is no Redis check at all.
      expect(response.json().checks).not.toHaveProperty('redis')
      expect((await app.inject({ method: 'GET', url: '/livez' })).statusCode).toBe(200)
    }
    finally {
      await app.close()
      await api.close()
      await db.destroy()
    }
  })
})
