import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import WebSocket from 'ws'

import { createDb } from '@airi/db'
import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { startTcpProxy, type TcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer } from './harness.ts'

/**
 * Live sync through a Redis outage (issue 20, item 8): while an instance's pub/sub
 * connection is down its subscriptions read their feeds on a short interval, so a
 * message sent on one instance reaches a device on another before Redis is back;
 * once it is back the interval stops and the instance is silent again.
 */

const POLL_MS = 100

let real: TestDatabase
let proxy: TcpProxy
let a: TestServer
let b: TestServer
/** Every statement instance B sends to Postgres. */
let statementsOfB = 0
const clients: AiriClient[] = []

beforeAll(async () => {
  real = await createTestDatabase()
  // Instance B talks to the same database through a pool of its own, so its statements can be counted.
  const counted = createDb({ connectionString: real.url, onQuery: () => statementsOfB++ })
  // Both instances reach Redis through one proxy the test can cut, as when Redis itself goes away.
  const redisUrl = new URL(inject('redisUrl'))
  proxy = await startTcpProxy(Number(redisUrl.port))
  redisUrl.port = String(proxy.port)
  const shared = { redisUrl: redisUrl.toString(), redisPrefix: testRedisPrefix(), liveSyncFallbackPollMs: POLL_MS }
  a = await startTestServer({ ...shared, database: real })
  b = await startTestServer({ ...shared, database: { ...real, db: counted, drop: () => counted.destroy() } })
})
afterAll(async () => {
  await Promise.all(clients.map(client => client.close()))
  await Promise.all([a?.close(), b?.close()])
  await b?.database.drop()
  await proxy?.close()
  await real?.drop()
})

function client(token: string, server: TestServer): AiriClient {
  const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(created)
  return created
}

const text = (content: string) => ({ id: randomUUID(), role: 'user' as const, content })
const readiness = async (server: TestServer) => (await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode

/** Waits until instance B has sent no statement for `windows` poll intervals in a row. */
async function quietFor(windows: number, what: string): Promise<void> {
  let seen = statementsOfB
  let since = performance.now()
  await until(() => {
    if (statementsOfB !== seen) {
      seen = statementsOfB
      since = performance.now()
    }
    return performance.now() - since > windows * POLL_MS
  }, what)
}

describe('live sync while Redis is down', () => {
  it('a message sent on instance A during the outage reaches a device on instance B before Redis is back; then B polls no more', async () => {
    const sender = await createVerifiedUser(a)
    const receiver = await createVerifiedUser(a)
    const chat = await client(sender.token, a).chats.create.mutate({ type: 'private', members: [{ type: 'user', id: receiver.id }] })

    const contents: string[] = []
    const errors: unknown[] = []
    let events = 0
    const subscription = client(receiver.token, b).chats.onMessages.subscribe(undefined, {
      onData: ({ data }) => {
        events++
        if (data.type === 'messages')
          contents.push(...data.messages.map(message => message.content))
      },
      onError: error => errors.push(error),
    })
    await until(() => events > 0, 'the ready event')
    const sending = client(sender.token, a)
    await sending.chats.sendMessages.mutate({ chatId: chat.id, messages: [text('before')] })
    await until(() => contents.includes('before'), 'the message sent before the outage')

    // Healthy and idle: instance B sends nothing to Postgres.
    await quietFor(5, 'instance B to be idle before the outage')

    await proxy.cut()
    await until(async () => await readiness(a) === 503 && await readiness(b) === 503, 'both instances to see Redis gone')
    const sentAt = performance.now()
    await sending.chats.sendMessages.mutate({ chatId: chat.id, messages: [text('during the outage')] })
    await until(() => contents.includes('during the outage'), 'the message sent during the outage, while Redis is still down')
    const deliveredInMs = Math.round(performance.now() - sentAt)
    // Still down: it came through the fallback, not through Redis.
    expect(await readiness(b)).toBe(503)
    const duringOutage = statementsOfB
    await until(() => statementsOfB > duringOutage + 2, 'instance B to keep reading feed heads while Redis is down')
    console.warn(`live sync during a Redis outage: delivered on the other instance in ${deliveredInMs} ms (fallback poll every ${POLL_MS} ms)`)

    await proxy.restore()
    await until(async () => await readiness(a) === 200 && await readiness(b) === 200, 'both instances to see Redis back')
    // The fallback stops once pub/sub is back: after one re-check, no statement for 20 poll intervals
    // (while it polled, a quiet stretch of even two intervals never came).
    await quietFor(20, 'instance B to stop polling once Redis is back')

    // Live over Redis again, and nothing was delivered twice (A's retried notice included).
    await sending.chats.sendMessages.mutate({ chatId: chat.id, messages: [text('after')] })
    await until(() => contents.includes('after'), 'the message sent after the outage')
    expect(contents).toEqual(['before', 'during the outage', 'after'])
    expect(errors).toEqual([])
    subscription.unsubscribe()
  })
})
