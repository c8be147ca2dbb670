import { createTRPCClient, createWSClient, wsLink, type TRPCClient } from '@trpc/client'
import superjson from 'superjson'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import type { AppRouter } from '@airi/api'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, authPost, createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * A socket's context is made once, but every call on it and every live
 * subscription must follow the session's current state (issue 9, item 1).
 */

let database: TestDatabase
let serverA: TestServer
let serverB: TestServer
const closers: Array<() => unknown> = []

beforeAll(async () => {
  // Two instances of one deployment: the same Postgres and Redis namespace.
  database = await createTestDatabase()
  const redisPrefix = testRedisPrefix()
  ;[serverA, serverB] = await Promise.all([startTestServer({ database, redisPrefix }), startTestServer({ database, redisPrefix })])
})
afterAll(async () => {
  await Promise.all(closers.map(close => close()))
  await Promise.all([serverA.close(), serverB.close()])
  await database.drop()
})

/** A tRPC client whose every call goes over one WebSocket, as a long-lived app's would. */
function overWebSocket(server: TestServer, token: string): TRPCClient<AppRouter> {
  const wsClient = createWSClient({ url: `${server.baseUrl.replace('http', 'ws')}/trpc`, WebSocket: WebSocket as unknown as typeof globalThis.WebSocket, connectionParams: { token } })
  closers.push(() => wsClient.close())
  return createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient, transformer: superjson })] })
}

function watchChats(client: TRPCClient<AppRouter>) {
  const errors: Array<{ data?: { code?: string } }> = []
  const subscription = client.chats.onMessages.subscribe(undefined, { onError: error => errors.push(error as never) })
  closers.push(() => subscription.unsubscribe())
  return errors
}

async function sessionIdOf(server: TestServer, user: TestUser): Promise<string> {
  const result = await server.api.auth.api.getSession({ headers: new Headers({ authorization: `Bearer ${user.token}` }) })
  return result!.session.id
}

describe('a revoked session on an open WebSocket', () => {
  it('stops authorizing calls and ends live subscriptions after sign-out on the same instance', async () => {
    const user = await createVerifiedUser(serverA)
    const socket = overWebSocket(serverA, user.token)
    await socket.chats.create.mutate({ type: 'group', title: 'before', members: [] })
    expect(await socket.flux.balance.query()).toMatchObject({ flux: expect.any(Number) })
    const subscriptionErrors = watchChats(socket)

    expect((await authPost(serverA, '/sign-out', {}, user.token)).ok).toBe(true)

    expect((await failure(socket.chats.create.mutate({ type: 'group', title: 'after', members: [] }))).data).toMatchObject({ code: 'UNAUTHORIZED' })
    expect((await failure(socket.flux.balance.query())).data).toMatchObject({ code: 'UNAUTHORIZED' })
    await until(() => subscriptionErrors.length > 0, 'the subscription to end')
    expect(subscriptionErrors[0]!.data).toMatchObject({ code: 'UNAUTHORIZED' })
    const chats = await database.db.selectFrom('chats').select('title').where('title', '=', 'after').execute()
    expect(chats).toEqual([])
  })

  it('learns of a sign-out on another instance through pub/sub', async () => {
    const user = await createVerifiedUser(serverA)
    const socket = overWebSocket(serverB, user.token)
    const subscriptionErrors = watchChats(socket)
    // A call first, so B has the session's state cached when the revocation arrives.
    await socket.chats.list.query()

    expect((await authPost(serverA, '/sign-out', {}, user.token)).ok).toBe(true)

    await until(() => subscriptionErrors.length > 0, 'the subscription on the other instance to end')
    expect(subscriptionErrors[0]!.data).toMatchObject({ code: 'UNAUTHORIZED' })
    expect((await failure(socket.chats.list.query())).data).toMatchObject({ code: 'UNAUTHORIZED' })
  })

  it('takes admin procedures away from a signed-out admin', async () => {
    const admin = await createVerifiedUser(serverA, ADMIN_EMAIL)
    const socket = overWebSocket(serverA, admin.token)
    expect(await socket.admin.config.list.query()).toBeInstanceOf(Array)
    expect((await authPost(serverA, '/sign-out', {}, admin.token)).ok).toBe(true)
    expect((await failure(socket.admin.config.list.query())).data).toMatchObject({ code: 'UNAUTHORIZED' })
  })

  it('ends the sockets of every session when the password is reset, and leaves other users alone', async () => {
    const user = await createVerifiedUser(serverA)
    const bystander = await createVerifiedUser(serverA)
    const socket = overWebSocket(serverB, user.token)
    const other = overWebSocket(serverB, bystander.token)
    const subscriptionErrors = watchChats(socket)
    await socket.chats.list.query()

    // revoke-sessions deletes every session of the user, as a password reset does.
    expect((await authPost(serverA, '/revoke-sessions', {}, user.token)).ok).toBe(true)

    await until(() => subscriptionErrors.length > 0, 'the subscription to end')
    expect((await failure(socket.chats.list.query())).data).toMatchObject({ code: 'UNAUTHORIZED' })
    expect(await other.chats.list.query()).toBeInstanceOf(Array)
  })

  it('stops a JWT access token at its expiry, and with its session', async () => {
    const user = await createVerifiedUser(serverA)
    const issuer = `${serverA.baseUrl}/api/auth`
    const sid = await sessionIdOf(serverA, user)
    const expiresSoon = Math.floor(Date.now() / 1000) + 6
    const { token: shortLived } = await serverA.api.auth.api.signJWT({ body: { payload: { sub: user.id, iss: issuer, aud: serverA.baseUrl, exp: expiresSoon } } })
    const { token: bound } = await serverA.api.auth.api.signJWT({ body: { payload: { sub: user.id, iss: issuer, aud: serverA.baseUrl, sid } } })

    const expiring = overWebSocket(serverA, shortLived)
    const expiringErrors = watchChats(expiring)
    const boundSocket = overWebSocket(serverA, bound)
    const boundErrors = watchChats(boundSocket)
    await boundSocket.chats.list.query()

    await until(() => expiringErrors.length > 0, 'the expired token\'s subscription to end')
    expect(expiringErrors[0]!.data).toMatchObject({ code: 'UNAUTHORIZED' })
    expect(Date.now() / 1000).toBeGreaterThanOrEqual(expiresSoon)
    expect((await failure(expiring.chats.list.query())).data).toMatchObject({ code: 'UNAUTHORIZED' })

    // The bound token outlives that expiry, but not its session.
    expect(boundErrors).toEqual([])
    expect((await authPost(serverA, '/sign-out', {}, user.token)).ok).toBe(true)
    await until(() => boundErrors.length > 0, 'the session-bound token\'s subscription to end')
    expect((await failure(boundSocket.chats.list.query())).data).toMatchObject({ code: 'UNAUTHORIZED' })
  })
})
