import { createTRPCClient, createWSClient, wsLink, type TRPCClient } from '@trpc/client'
import { sql } from 'kysely'
import OpenAI from 'openai'
import superjson from 'superjson'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import type { AppRouter } from '@airi/api'
import { createDb, findFreePort } from '@airi/db'
import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { startRedisServer, type RedisServerHandle } from '@airi/tooling/test/redis-server'
import { startTcpProxy, type TcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { authPost, createVerifiedUser, failure, signIn, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * With Postgres or Redis out of reach, calls answer 503 SERVICE_UNAVAILABLE with
 * `retry-after` on every transport, instead of a 500 (issue 9, item 4).
 */

const OUTAGE = { httpStatus: 503, code: 'SERVICE_UNAVAILABLE', apiCode: 'SERVICE_UNAVAILABLE', details: { retryAfterSeconds: 5 } }

const closers: Array<() => unknown> = []
afterAll(async () => {
  await Promise.all(closers.map(close => close()))
})

function sdkFor(server: TestServer, user: TestUser): AiriClient {
  const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  closers.push(() => client.close())
  return client
}

/** A tRPC client whose every call goes over one WebSocket, as a long-lived app's would. */
function overWebSocket(server: TestServer, user: TestUser): TRPCClient<AppRouter> {
  const wsClient = createWSClient({ url: `${server.baseUrl.replace('http', 'ws')}/trpc`, WebSocket: WebSocket as unknown as typeof globalThis.WebSocket, connectionParams: { token: user.token } })
  closers.push(() => wsClient.close())
  return createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient, transformer: superjson })] })
}

describe('Postgres out of reach', () => {
  let proxy: TcpProxy
  let database: TestDatabase
  let server: TestServer
  let user: TestUser
  let sdk: AiriClient

  beforeAll(async () => {
    // The server reaches its database through a proxy the test can cut.
    const real = await createTestDatabase()
    proxy = await startTcpProxy(Number(new URL(real.url).port))
    const proxied = new URL(real.url)
    proxied.port = String(proxy.port)
    const db = createDb({ connectionString: proxied.toString() })
    database = { url: proxied.toString(), db, drop: async () => { await db.destroy(); await real.drop() } }
    server = await startTestServer({
      redisUrl: false,
      database,
      // A plain REST route that reads Postgres itself, and one with a broken query.
      extend: (app) => {
        app.get('/test/read', async () => (await sql<{ ok: number }>`select 1 as ok`.execute(db)).rows[0])
        app.get('/test/broken', async () => (await sql`select * from no_such_table`.execute(db)).rows)
      },
    })
    user = await createVerifiedUser(server)
    sdk = sdkFor(server, user)
  })
  afterAll(async () => {
    await server.close()
    await proxy.close()
    await database.drop()
  })

  /** Runs `check` with the database cut off, then brings it back and waits until the server reads it again. */
  async function whileDown(check: () => Promise<void>): Promise<void> {
    await proxy.cut()
    try {
      await check()
    }
    finally {
      await proxy.restore()
      await until(async () => (await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 'Postgres to be back')
    }
  }

  it('answers tRPC queries and mutations over HTTP with 503 and retry-after, and serves them again once it is back', async () => {
    await whileDown(async () => {
      expect((await failure(sdk.flux.balance.query())).data).toMatchObject({ ...OUTAGE, path: 'flux.balance' })
      expect((await failure(sdk.chats.create.mutate({ type: 'group', title: 'during', members: [] }))).data).toMatchObject({ ...OUTAGE, path: 'chats.create' })

      const response = await fetch(`${server.baseUrl}/trpc/flux.balance`, { headers: { authorization: `Bearer ${user.token}` } })
      expect(response.status).toBe(503)
      expect(response.headers.get('retry-after')).toBe('5')
      expect(await response.json()).toMatchObject({ error: { json: { message: 'The service is temporarily unavailable; try again shortly', data: OUTAGE } } })
    })

    expect(await sdk.flux.balance.query()).toMatchObject({ flux: expect.any(Number) })
    expect(await sdk.chats.create.mutate({ type: 'group', title: 'after', members: [] })).toMatchObject({ title: 'after' })
  })

  it('answers calls on an open WebSocket with 503 when their procedure cannot reach Postgres', async () => {
    const socket = overWebSocket(server, user)
    // The socket's context (and its session) is made while the database is up.
    await socket.chats.list.query()

    await whileDown(async () => {
      expect((await failure(socket.chats.create.mutate({ type: 'group', title: 'during', members: [] }))).data).toMatchObject(OUTAGE)
      expect((await failure(socket.chats.list.query())).data).toMatchObject(OUTAGE)
    })

    expect(await socket.chats.create.mutate({ type: 'group', title: 'after', members: [] })).toMatchObject({ title: 'after' })
  })

  it('answers REST routes and better-auth with 503 and retry-after, and a broken query still with 500', async () => {
    await whileDown(async () => {
      for (const response of [
        await fetch(`${server.baseUrl}/test/read`),
        await fetch(`${server.baseUrl}/api/auth/get-session`, { headers: { authorization: `Bearer ${user.token}` } }),
        await authPost(server, '/sign-in/email', { email: user.email, password: user.password }),
      ]) {
        expect({ url: response.url, status: response.status, retryAfter: response.headers.get('retry-after') }).toEqual({ url: response.url, status: 503, retryAfter: '5' })
        expect(await response.json()).toEqual({ error: { code: 'SERVICE_UNAVAILABLE', message: 'The service is temporarily unavailable; try again shortly', details: { retryAfterSeconds: 5 } } })
      }
    })

    expect(await (await fetch(`${server.baseUrl}/test/read`)).json()).toEqual({ ok: 1 })
    expect((await authPost(server, '/sign-in/email', { email: user.email, password: user.password })).status).toBe(200)
    // Only the connection failing is an outage: a query that fails is a bug.
    const broken = await fetch(`${server.baseUrl}/test/broken`)
    expect(broken.status).toBe(500)
    expect(broken.headers.get('retry-after')).toBeNull()
    expect(await broken.json()).toEqual({ error: { code: 'INTERNAL_ERROR', message: 'Internal server error' } })
  })

  it('answers the LLM gateway with an OpenAI-shaped 503 and retry-after, for a session token and an OIDC access token', async () => {
    await server.api.services.config.set('LLM_ROUTER_CONFIG', { models: {} })
    // The first access token this server sees: it has yet to read its signing keys from Postgres.
    const { token: accessToken } = await server.api.auth.api.signJWT({ body: { payload: { sub: user.id, iss: `${server.baseUrl}/api/auth`, aud: server.baseUrl } } })
    const clients = [user.token, accessToken].map(apiKey => new OpenAI({ apiKey, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 }))
    await whileDown(async () => {
      for (const openai of clients) {
        const error = await openai.models.list().then(() => undefined, (e: unknown) => e)
        expect(error).toBeInstanceOf(OpenAI.APIError)
        const apiError = error as InstanceType<typeof OpenAI.APIError>
        expect(apiError.status).toBe(503)
        expect(apiError.headers?.get('retry-after')).toBe('5')
        expect(apiError.error).toMatchObject({ type: 'api_error', code: 'SERVICE_UNAVAILABLE', message: 'The service is temporarily unavailable; try again shortly' })
      }
    })

    for (const openai of clients)
      expect((await openai.models.list()).data).toEqual([])
  })
})

describe('Postgres that stops answering (paused, or the network silently gone)', () => {
  /** The advisory lock `/test/locked` waits on. */
  const LOCK_KEY = 20_006
  let proxy: TcpProxy
  let real: TestDatabase
  let server: TestServer
  let user: TestUser

  beforeAll(async () => {
    real = await createTestDatabase()
    proxy = await startTcpProxy(Number(new URL(real.url).port))
    const proxied = new URL(real.url)
    proxied.port = String(proxy.port)
    // Short bounds, so the test does not wait out the defaults; the statement timeout is below the query timeout, as by default.
    const db = createDb({ connectionString: proxied.toString(), connectionTimeoutMs: 2_000, statementTimeoutMs: 2_000, queryTimeoutMs: 3_000 })
    server = await startTestServer({
      redisUrl: false,
      database: { url: proxied.toString(), db, drop: async () => { await db.destroy(); await real.drop() } },
      extend: (app) => {
        app.get('/test/read', async () => (await sql<{ ok: number }>`select 1 as ok`.execute(db)).rows[0])
        // In flight for as long as the test holds the lock.
        app.get('/test/locked', async () => (await sql<{ ok: number }>`select pg_advisory_xact_lock(${LOCK_KEY}), 1 as ok`.execute(db)).rows[0])
      },
    })
    user = await createVerifiedUser(server)
  })
  afterAll(async () => {
    proxy.resume()
    await server.close()
    await proxy.close()
  })

  /**
   * Holds, on a connection of the test's own, the lock `/test/locked` waits on and
   * the session table (every session read waits); returns the release.
   */
  async function holdLocks(): Promise<() => Promise<void>> {
    let release!: () => void
    const released = new Promise<void>(resolve => release = resolve)
    let locked!: () => void
    const holding = new Promise<void>(resolve => locked = resolve)
    const done = real.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${LOCK_KEY})`.execute(trx)
      await sql`lock table session in access exclusive mode`.execute(trx)
      locked()
      await released
    })
    await Promise.race([holding, done])
    return async () => {
      release()
      await done
    }
  }

  /** Statements of this database waiting on a lock, as Postgres sees them. */
  const waitingOnLocks = async () => (await sql<{ n: number }>`
    select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(real.db)).rows[0]!.n

  /** Fresh session tokens: none of them is in the identity cache, so using one reads Postgres. */
  const freshTokens = (n: number) => Promise.all(Array.from({ length: n }, async () => (await signIn(server, user.email, user.password)).token))

  const get = (path: string, token?: string) => fetch(`${server.baseUrl}${path}`, token ? { headers: { authorization: `Bearer ${token}` } } : {})

  /** Waits (with a deadline) for every response, and says what each was: path, status, retry-after, error code. */
  async function outcomes(requests: Array<[string, Promise<Response>]>) {
    let answered = 0
    for (const [, request] of requests)
      void request.then(() => answered++, () => answered++)
    await until(() => answered === requests.length, `${requests.length - answered} of ${requests.length} requests to be answered`)
    return Promise.all(requests.map(async ([path, request]) => {
      const response = await request
      const body = await response.json() as { error?: { code?: string, json?: { data?: { code?: string } } } }
      return { path, status: response.status, retryAfter: response.headers.get('retry-after'), code: body.error?.code ?? body.error?.json?.data?.code }
    }))
  }
  const outage = (path: string) => ({ path, status: 503, retryAfter: '5', code: 'SERVICE_UNAVAILABLE' })

  it('answers 503, not a hang, for statements in flight when it goes silent and for requests during the silence; serves again once it answers', async () => {
    const [a, b, c, d] = await freshTokens(4)
    const release = await holdLocks()
    let released = false
    try {
      const inFlight: Array<[string, Promise<Response>]> = [
        ['/test/locked', get('/test/locked')],
        ['/trpc/auth.me', get('/trpc/auth.me', a)],
        ['/api/auth/get-session', get('/api/auth/get-session', b)],
      ]
      await until(async () => await waitingOnLocks() === inFlight.length, 'the three statements to be in flight')
      proxy.silence()
      // Postgres answers them now; the silence keeps the answers from the server.
      await release()
      released = true
      const during: Array<[string, Promise<Response>]> = [
        ['/test/read', get('/test/read')],
        ['/trpc/auth.me', get('/trpc/auth.me', c)],
        ['/api/auth/get-session', get('/api/auth/get-session', d)],
      ]
      expect(await outcomes([...inFlight, ...during])).toEqual([...inFlight, ...during].map(([path]) => outage(path)))
    }
    finally {
      if (!released)
        await release()
      proxy.resume()
    }

    await until(async () => (await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 'Postgres to be back')
    expect(await (await get('/test/read')).json()).toEqual({ ok: 1 })
    for (const token of [a, b, c, d]) {
      const me = await get('/trpc/auth.me', token)
      expect(me.status).toBe(200)
      expect(await me.json()).toMatchObject({ result: { data: { json: { user: { id: user.id } } } } })
    }
  })

  it('answers 503 for a session read Postgres cancels (statement timeout) while it answers everything else: the error decides, not a later SELECT 1', async () => {
    const [a, b] = await freshTokens(2)
    const release = await holdLocks()
    try {
      const results = await outcomes([
        ['/trpc/auth.me', get('/trpc/auth.me', a)],
        ['/api/auth/get-session', get('/api/auth/get-session', b)],
      ])
      expect(results).toEqual([outage('/trpc/auth.me'), outage('/api/auth/get-session')])
      // Postgres itself answered all along.
      expect(await (await get('/test/read')).json()).toEqual({ ok: 1 })
    }
    finally {
      await release()
    }
    expect((await get('/trpc/auth.me', a)).status).toBe(200)
  })
})

describe('Redis out of reach', () => {
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

  it('ends a live subscription that needs pub/sub with 503, and delivers again once Redis is back', async () => {
    const user = await createVerifiedUser(server)
    const sdk = sdkFor(server, user)
    const { id: chatId } = await sdk.chats.create.mutate({ type: 'group', title: 'live', members: [] })

    await redis.stop()
    await until(async () => (await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 503, 'readiness to see Redis gone')
    const errors: Array<{ data?: unknown }> = []
    const down = sdk.chats.onMessages.subscribe(undefined, { onError: error => errors.push(error as never) })
    closers.push(() => down.unsubscribe())
    await until(() => errors.length > 0, 'the subscription to fail')
    expect(errors[0]!.data).toMatchObject(OUTAGE)

    redis = await startRedisServer(redis.port)
    await until(async () => (await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 'readiness to see Redis back')
    const received: string[] = []
    const up = sdk.chats.onMessages.subscribe(undefined, {
      onData: (event) => {
        // The first event (`ready`) carries no messages.
        if (event.data.messages.length > 0)
          received.push(JSON.stringify(event))
      },
    })
    closers.push(() => up.unsubscribe())
    // Send until one arrives: the subscription may start listening after the first send.
    let sent = 0
    await until(async () => {
      if (received.length === 0)
        await sdk.chats.sendMessages.mutate({ chatId, messages: [{ id: `m${++sent}`, role: 'user', content: 'back' }] })
      return received.length > 0
    }, 'a message to arrive over the restored subscription')
    expect(received[0]).toContain('back')
  })
})
