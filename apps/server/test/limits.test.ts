import { randomUUID } from 'node:crypto'
import { connect, type Socket } from 'node:net'

import superjson, { type SuperJSONResult } from 'superjson'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER } from '@airi/api'
import { createAiriClient } from '@airi/sdk'
import { until } from '@airi/tooling/test/until'

import { authPost, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/** What one client may hold open (issue 9, item 2), spoken in tRPC's own WebSocket protocol. */

interface RawSocket {
  socket: WebSocket
  messages: Array<{ id?: number | null, result?: { type?: string }, error?: { data?: { code?: string, apiCode?: string } } }>
  closed: Promise<{ code: number, reason: string }>
  /** Sends a call and resolves with its first answer. */
  call: (method: 'query' | 'subscription', path: string, input?: unknown) => Promise<RawSocket['messages'][number]>
}

let nextId = 1

function rawSocket(server: TestServer, token?: string): Promise<RawSocket> {
  const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/trpc?connectionParams=1`)
  const messages: RawSocket['messages'] = []
  const closed = new Promise<{ code: number, reason: string }>((resolve) => {
    socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() }))
  })
  socket.on('message', (data) => {
    // The server's keep-alive asks with a bare PING now and then.
    if (data.toString() === 'PING')
      return
    const message = JSON.parse(data.toString())
    if (message.error)
      message.error = superjson.deserialize(message.error)
    messages.push(message)
  })
  const call: RawSocket['call'] = async (method, path, input) => {
    const id = nextId++
    socket.send(JSON.stringify({ id, method, params: { path, input: superjson.serialize(input) } }))
    await until(() => messages.some(message => message.id === id) || socket.readyState !== WebSocket.OPEN, `an answer to ${path}`)
    return messages.find(message => message.id === id) ?? {}
  }
  return new Promise((resolve, reject) => {
    socket.once('open', () => {
      socket.send(JSON.stringify({ method: 'connectionParams', data: token ? { token } : {} }))
      resolve({ socket, messages, closed, call })
    })
    socket.once('unexpected-response', (_request, response) => reject(Object.assign(new Error(`upgrade refused: ${response.statusCode}`), { status: response.statusCode })))
    socket.once('error', reject)
  })
}

const open: RawSocket[] = []
async function tracked(server: TestServer, token?: string): Promise<RawSocket> {
  const raw = await rawSocket(server, token)
  open.push(raw)
  return raw
}

afterAll(() => {
  for (const raw of open)
    raw.socket.terminate()
})

describe('WebSocket limits', () => {
  let server: TestServer
  let user: TestUser
  beforeAll(async () => {
    server = await startTestServer({ limits: { trpcLimits: { socketsPerUser: 3, subscriptionsPerSocket: 2, authGraceMs: 2_000 } } })
    user = await createVerifiedUser(server)
  })
  afterAll(() => server.close())

  it('caps the sockets of one user and tells the next one why it is closed', async () => {
    const first = await Promise.all([1, 2, 3].map(() => tracked(server, user.token)))
    for (const raw of first)
      expect((await raw.call('query', 'auth.me')).result).toBeDefined()

    const fourth = await tracked(server, user.token)
    expect(await fourth.closed).toEqual({ code: 4029, reason: 'Too many connections for this user (at most 3)' })

    // A closed socket frees its place.
    first[0]!.socket.close()
    await first[0]!.closed
    await until(async () => {
      const again = await tracked(server, user.token)
      const answer = await again.call('query', 'auth.me')
      again.socket.close()
      return answer.result !== undefined
    }, 'a freed place')
    for (const raw of first.slice(1))
      raw.socket.close()
    await Promise.all(first.map(raw => raw.closed))
  })

  it('closes a socket that does not authenticate within the grace period, and keeps one that did', async () => {
    const authenticated = await tracked(server, user.token)
    expect((await authenticated.call('query', 'auth.me')).result).toBeDefined()
    const anonymous = await tracked(server)

    expect(await anonymous.closed).toEqual({ code: 4001, reason: 'Authentication required' })
    // Its grace period was armed first, so it would have been closed by now.
    expect(authenticated.socket.readyState).toBe(WebSocket.OPEN)
    expect((await authenticated.call('query', 'auth.me')).result).toBeDefined()
    authenticated.socket.close()
  })

  it('closes a signed-out session\'s socket after the grace period', async () => {
    const other = await createVerifiedUser(server)
    const raw = await tracked(server, other.token)
    expect((await raw.call('query', 'auth.me')).result).toBeDefined()
    expect((await authPost(server, '/sign-out', {}, other.token)).ok).toBe(true)
    expect((await raw.closed).code).toBe(4001)
  })

  it('caps the subscriptions of one socket', async () => {
    const raw = await tracked(server, user.token)
    const started = [await raw.call('subscription', 'test.ticks', { count: 100, intervalMs: 5_000 }), await raw.call('subscription', 'test.ticks', { count: 100, intervalMs: 5_000 })]
    expect(started.map(message => message.result?.type)).toEqual(['started', 'started'])
    const third = await raw.call('subscription', 'test.ticks', { count: 100, intervalMs: 5_000 })
    expect(third.error?.data).toMatchObject({ code: 'TOO_MANY_REQUESTS', apiCode: 'SUBSCRIPTION_LIMIT' })

    // Stopping one makes room again.
    raw.socket.send(JSON.stringify({ id: started[0]!.id, method: 'subscription.stop' }))
    await until(async () => (await raw.call('subscription', 'test.ticks', { count: 100, intervalMs: 5_000 })).result?.type === 'started', 'room for a subscription')
    raw.socket.close()
  })
})

describe('WebSocket limits per address', () => {
  // A server of its own, so no socket of another test counts against the address.
  let server: TestServer
  beforeAll(async () => {
    server = await startTestServer({ limits: { trpcLimits: { socketsPerIp: 8 } } })
  })
  afterAll(() => server.close())

  it('refuses the upgrade past the cap per address', async () => {
    const sockets = await Promise.all(Array.from({ length: 8 }, () => tracked(server)))
    const refused = await rawSocket(server).then(() => undefined, (error: { status?: number }) => error)
    expect(refused?.status).toBe(429)
    for (const raw of sockets)
      raw.socket.terminate()
    await Promise.all(sockets.map(raw => raw.closed))
  })
})

describe('request limits', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await startTestServer({ limits: { trpcLimits: { maxBatchSize: 5 }, requestTimeoutMs: 500 } })
  })
  afterAll(() => server.close())

  it('refuses a tRPC batch with more calls than allowed', async () => {
    const batch = (size: number) => {
      const paths = Array.from({ length: size }, () => 'meta.info').join(',')
      const input = Object.fromEntries(Array.from({ length: size }, (_, index) => [index, superjson.serialize(undefined)]))
      return fetch(`${server.baseUrl}/trpc/${paths}?batch=1&input=${encodeURIComponent(JSON.stringify(input))}`)
    }
    expect((await batch(5)).status).toBe(200)
    const refused = await batch(6)
    expect(refused.status).toBe(400)
    expect(JSON.stringify(await refused.json())).toContain('Batch call exceeds maximum size')
  })

  it('cuts a request whose body trickles in too slowly', async () => {
    const url = new URL(server.baseUrl)
    const socket = connect(Number(url.port), url.hostname)
    let answer = ''
    socket.on('data', (chunk) => { answer += chunk.toString() })
    const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
    socket.write(`POST /trpc/chats.create HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{`)
    // One byte now and then, far slower than the request timeout allows, until the server gives up.
    let open = true
    void closed.then(() => { open = false })
    await until(() => {
      if (open)
        socket.write(' ')
      return !open
    }, 'the server to cut the slow request')
    expect(answer).toMatch(/^HTTP\/1\.1 408/)
  })
})

describe('a client that stops reading (issue 20)', () => {
  const BOUND = 256 * 1024
  let server: TestServer
  let user: TestUser
  beforeAll(async () => {
    // A grace period far beyond the test, so the paused client can still read up to the close frame.
    server = await startTestServer({ limits: { trpcLimits: { maxBufferedBytes: BOUND, slowConsumerCloseMs: 300_000 } } })
    user = await createVerifiedUser(server)
  })
  afterAll(() => server.close())

  /** The server's side of every tRPC socket still open. */
  const openOnServer = () => [...server.app.websocketServer.clients].filter(socket => socket.readyState === WebSocket.OPEN).length

  it('is closed with 4008 once more than the bound waits for it, and resumes from its last event without a gap', async () => {
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    const chat = await sdk.chats.create.mutate({ type: 'group', title: 'slow', members: [] })
    const raw = await tracked(server, user.token)
    const started = await raw.call('subscription', 'chats.onMessages')
    expect(started.result?.type).toBe('started')
    await until(() => raw.messages.some(message => message.result?.type === 'data'), 'the ready event')
    // The client stops reading; the server keeps sending until the bound is passed.
    const tcp = (raw.socket as unknown as { _socket: Socket })._socket
    tcp.pause()
    // It still writes, so the server's keep-alive does not end it first on a slow machine.
    const heartbeat = setInterval(() => raw.socket.send('PONG'), 5_000)
    const sent: string[] = []
    await until(async () => {
      const content = `${sent.length}:`.padEnd(100_000, 'x')
      await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content }] })
      sent.push(content)
      return openOnServer() === 0
    }, 'the server to close the slow socket', 60_000)
    clearInterval(heartbeat)
    console.warn(`slow consumer: closed after ${sent.length} sends of 100 000 characters (bound ${BOUND} bytes)`)

    tcp.resume()
    expect(await raw.closed).toEqual({ code: 4008, reason: `Slow consumer: more than ${BOUND} bytes unread` })
    // What arrived is whole and in order; resuming from its last id brings the rest.
    const events = raw.messages.filter(message => message.result?.type === 'data').map(message => superjson.deserialize<{ id: string, data: { messages: Array<{ content: string }> } }>((message.result as { data: SuperJSONResult }).data))
    const before = events.flatMap(event => event.data.messages.map(m => m.content))
    expect(before).toEqual(sent.slice(0, before.length))
    const again = await tracked(server, user.token)
    await again.call('subscription', 'chats.onMessages', { lastEventId: events.at(-1)!.id })
    await until(() => again.messages.filter(message => message.result?.type === 'data').length > sent.length - before.length, 'the rest of the messages')
    const after = again.messages.filter(message => message.result?.type === 'data').map(message => superjson.deserialize<{ data: { messages: Array<{ content: string }> } }>((message.result as { data: SuperJSONResult }).data))
    expect(after.flatMap(event => event.data.messages.map(m => m.content))).toEqual(sent.slice(before.length))
    again.socket.close()
    await sdk.close()
  })

  it('cuts a slow client that never reads once the close grace period ends', async () => {
    const quick = await startTestServer({ limits: { trpcLimits: { maxBufferedBytes: BOUND, slowConsumerCloseMs: 200 } } })
    try {
      const owner = await createVerifiedUser(quick)
      const sdk = createAiriClient({ baseUrl: quick.baseUrl, getToken: () => owner.token })
      const chat = await sdk.chats.create.mutate({ type: 'group', title: 'stalled', members: [] })
      const raw = await tracked(quick, owner.token)
      expect((await raw.call('subscription', 'chats.onMessages')).result?.type).toBe('started')
      ;(raw.socket as unknown as { _socket: Socket })._socket.pause()
      // Gone from the server (its buffers freed) without the client reading a byte.
      await until(async () => {
        if (quick.app.websocketServer.clients.size === 0)
          return true
        await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'x'.repeat(100_000) }] })
        return false
      }, 'the server to drop the stalled socket', 60_000)
      await sdk.close()
    }
    finally {
      await quick.close()
    }
  })
})

describe('live chat subscriptions per user, across sockets (issue 20)', () => {
  let server: TestServer
  let user: TestUser
  beforeAll(async () => {
    server = await startTestServer()
    user = await createVerifiedUser(server)
  })
  afterAll(() => server.close())

  it(`refuses the subscription past ${DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER} with TOO_MANY_REQUESTS / SUBSCRIPTION_LIMIT; stopping one makes room`, async () => {
    const perSocket = 16
    const sockets = await Promise.all(Array.from({ length: Math.ceil((DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER + 1) / perSocket) }, () => tracked(server, user.token)))
    const answers = []
    for (let index = 0; index < DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER; index++)
      answers.push(await sockets[Math.floor(index / perSocket)]!.call('subscription', 'chats.onMessages'))
    expect(answers.every(answer => answer.result?.type === 'started')).toBe(true)

    const last = sockets.at(-1)!
    const refused = await last.call('subscription', 'chats.onMessages')
    expect(refused.error?.data).toMatchObject({ code: 'TOO_MANY_REQUESTS', apiCode: 'SUBSCRIPTION_LIMIT' })
    // Other subscriptions are not chat subscriptions, and are not counted.
    expect((await last.call('subscription', 'test.ticks', { count: 100, intervalMs: 5_000 })).result?.type).toBe('started')

    sockets[0]!.socket.send(JSON.stringify({ id: answers[0]!.id, method: 'subscription.stop' }))
    await until(async () => (await last.call('subscription', 'chats.onMessages')).result?.type === 'started', 'room for a subscription')
    for (const raw of sockets)
      raw.socket.close()
  })
})
