import { connect } from 'node:net'

import superjson from 'superjson'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

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
    const started = [await raw.call('subscription', 'meta.ticks', { count: 100, intervalMs: 5_000 }), await raw.call('subscription', 'meta.ticks', { count: 100, intervalMs: 5_000 })]
    expect(started.map(message => message.result?.type)).toEqual(['started', 'started'])
    const third = await raw.call('subscription', 'meta.ticks', { count: 100, intervalMs: 5_000 })
    expect(third.error?.data).toMatchObject({ code: 'TOO_MANY_REQUESTS', apiCode: 'SUBSCRIPTION_LIMIT' })

    // Stopping one makes room again.
    raw.socket.send(JSON.stringify({ id: started[0]!.id, method: 'subscription.stop' }))
    await until(async () => (await raw.call('subscription', 'meta.ticks', { count: 100, intervalMs: 5_000 })).result?.type === 'started', 'room for a subscription')
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
