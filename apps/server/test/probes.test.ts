import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createDb, findFreePort } from '@airi/db'
import { startRedisServer, type RedisServerHandle } from '@airi/tooling/test/redis-server'
import { startTcpProxy, type TcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { service } from '../src/runtime.ts'
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

  async function waitForStatus(status: number) {
    let last = await readyz()
    await until(async () => (last = await readyz()).status === status, `/readyz to answer ${status}`)
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
  let proxy: TcpProxy
  let database: TestDatabase
  let server: TestServer

  beforeAll(async () => {
    // The server reaches its database through a proxy the test can cut.
    const real = await createTestDatabase()
    proxy = await startTcpProxy(Number(new URL(real.url).port))
    const proxied = new URL(real.url)
    proxied.port = String(proxy.port)
    const db = createDb({ connectionString: proxied.toString() })
    database = { url: proxied.toString(), db, drop: async () => { await db.destroy(); await real.drop() } }
    server = await startTestServer({ redisUrl: false, database })
  })
  afterAll(async () => {
    await server.close()
    await proxy.close()
    await database.drop()
  })

  it('turns 503 naming postgres when the database goes away, and 200 when it returns', async () => {
    const readyz = async () => {
      const response = await server.app.inject({ method: 'GET', url: '/readyz' })
      return { status: response.statusCode, body: response.json() }
    }
    expect(await readyz()).toEqual({ status: 200, body: { status: 'ok', checks: { postgres: { status: 'ok' } } } })

    await proxy.cut()
    await expect.poll(async () => (await readyz()).status, { timeout: 5000 }).toBe(503)
    const down = await readyz()
    expect(down.body).toMatchObject({ status: 'unavailable', checks: { postgres: { status: 'error' } } })
    // Without REDIS_URL there is no Redis check at all, and liveness does not care.
    expect(down.body.checks).not.toHaveProperty('redis')
    expect((await server.app.inject({ method: 'GET', url: '/livez' })).statusCode).toBe(200)

    // The pool replaces the connections it lost; readiness follows within moments.
    await proxy.restore()
    await expect.poll(async () => (await readyz()).status, { timeout: 5000 }).toBe(200)
  })
})
