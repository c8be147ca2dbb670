import { randomUUID } from 'node:crypto'
import type { Socket } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import superjson from 'superjson'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'
import { startChildServer, type ChildServer } from './server-process.ts'

/**
 * Soak (bounded, loopback): one user opens 2 000 sockets at once. The per-user cap
 * must hold with a clear close code, the heap must come back after they close, and
 * another user's chat must keep flowing meanwhile. Latency is printed, not asserted
 * (benchmarks judge speed); delivery is asserted.
 */

const ATTEMPTS = 2_000
const PER_USER = 16

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

function heapAfterGc(): number {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

describe('soak: 2 000 sockets from one user', () => {
  let server: TestServer
  let attacker: TestUser
  let alice: TestUser
  let bob: TestUser
  const clients: AiriClient[] = []

  beforeAll(async () => {
    // Every socket comes from 127.0.0.1, so the per-address cap is lifted to reach the per-user one.
    // The grace period is lifted too: on a loaded machine 2 000 sign-ins can take longer than 10 s.
    server = await startTestServer({ limits: { trpcLimits: { socketsPerUser: PER_USER, socketsPerIp: ATTEMPTS * 2, authGraceMs: 300_000 } } })
    ;[attacker, alice, bob] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server), createVerifiedUser(server)])
  })
  afterAll(async () => {
    await Promise.all(clients.map(client => client.close()))
    await server.close()
  })

  function sdk(user: TestUser): AiriClient {
    const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, WebSocket: WebSocket as unknown as WebSocketConstructor })
    clients.push(client)
    return client
  }

  /** Opens a socket, authenticates, and reports whether the server kept it or how it closed it. */
  function attempt(token: string): Promise<{ socket: WebSocket, closed: Promise<{ code: number, reason: string }> }> {
    const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/trpc?connectionParams=1`)
    const closed = new Promise<{ code: number, reason: string }>(resolve => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    return new Promise((resolve, reject) => {
      socket.once('open', () => {
        socket.send(JSON.stringify({ method: 'connectionParams', data: { token } }))
        resolve({ socket, closed })
      })
      socket.once('error', reject)
    })
  }

  it('holds the cap, returns the memory, and keeps another user\'s chat flowing', async () => {
    const chat = await sdk(alice).chats.create.mutate({ type: 'group', title: 'soak', members: [{ type: 'user', id: bob.id }] })
    const received: Array<{ content: string, at: number }> = []
    let ready = false
    const subscription = sdk(bob).chats.onMessages.subscribe(undefined, {
      onData: ({ data }) => {
        ready = true
        if (data.type === 'messages')
          received.push(...data.messages.map(message => ({ content: message.content, at: performance.now() })))
      },
    })
    const send = async (content: string) => {
      const sentAt = performance.now()
      await sdk(alice).chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content }] })
      await until(() => received.some(message => message.content === content), `"${content}" to fan out`)
      return received.find(message => message.content === content)!.at - sentAt
    }
    // The first event (no messages) carries the cursor: from then on nothing sent is missed.
    await until(() => ready, 'the subscription to be ready')
    await send('warm-up')
    const baseline = heapAfterGc()

    // The flood, in waves of 200 connects so the client side stays within its file limits.
    const sockets: Awaited<ReturnType<typeof attempt>>[] = []
    const latencies: number[] = []
    for (let wave = 0; wave < ATTEMPTS / 200; wave++) {
      sockets.push(...await Promise.all(Array.from({ length: 200 }, () => attempt(attacker.token))))
      latencies.push(await send(`during wave ${wave}`))
    }
    await until(() => sockets.filter(({ socket }) => socket.readyState === WebSocket.CLOSED).length === ATTEMPTS - PER_USER, 'every socket past the cap to be closed', 60_000)
    const closes = await Promise.all(sockets.filter(({ socket }) => socket.readyState === WebSocket.CLOSED).map(({ closed }) => closed))
    // Each refused socket is sent 4029 with its reason. When this one process (server and 2 000
    // clients) is starved for 30 s, ws gives up on the closing handshake and the client sees 1006.
    const capped = `4029 Too many connections for this user (at most ${PER_USER})`
    const outcomes = new Set(closes.map(close => `${close.code} ${close.reason}`))
    expect(outcomes).toContain(capped)
    expect([...outcomes].filter(outcome => outcome !== capped && outcome !== '1006 ')).toEqual([])
    const kept = sockets.filter(({ socket }) => socket.readyState === WebSocket.OPEN)
    expect(kept).toHaveLength(PER_USER)
    const peak = heapAfterGc()

    for (const { socket } of kept)
      socket.close()
    await Promise.all(kept.map(({ closed }) => closed))
    latencies.push(await send('after'))
    sockets.length = 0
    kept.length = 0
    const after = heapAfterGc()
    subscription.unsubscribe()

    const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
    latencies.sort((a, b) => a - b)
    console.warn(`soak: heap baseline ${mb(baseline)}, with sockets ${mb(peak)}, after close ${mb(after)}; fan-out during the flood p50 ${latencies[Math.floor(latencies.length / 2)]!.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms`)
    // The server keeps nothing per refused or closed socket: what is left is noise, not 2 000 sockets' worth.
    expect(after - baseline).toBeLessThan(8 * 1024 * 1024)
  }, 300_000)
})

/**
 * Soak (issue 20): one account opens 16 sockets × 16 `chats.onMessages`
 * subscriptions, stops reading, and sends about 1 MB into its own chat. The
 * server runs as a process of its own, so its RSS is read from /proc and nothing
 * the test itself allocates counts. Before the fix every subscription's socket
 * kept its own copy of every event (+256 MB per MB sent); now each socket is
 * closed with 4008 once more than WS_MAX_BUFFERED_BYTES wait for it, and one
 * event's bytes are shared by every frame that carries it.
 */
describe('soak: slow readers cannot pin memory', () => {
  const SOCKETS = 16
  const SUBSCRIPTIONS = 16
  const SENDS = 10
  const CONTENT_CHARS = 100_000
  /** What the attack may add to the server's RSS (docs/operations.md states it). */
  const RSS_BOUND_BYTES = 64 * 1024 * 1024

  let database: TestDatabase
  let server: ChildServer
  beforeAll(async () => {
    database = await createTestDatabase()
    server = await startChildServer(database, {
      // The subscription cap is lifted so all 256 subscriptions exist: the buffer bound alone must hold.
      CHAT_SUBSCRIPTIONS_PER_USER: String(SOCKETS * SUBSCRIPTIONS),
      // Long enough that a paused client, once resumed, still reads the close frame and its code.
      WS_SLOW_CONSUMER_CLOSE_MS: '300000',
    })
  }, 240_000)
  afterAll(async () => {
    await server?.stop()
    await database?.drop()
  })

  it('keeps the server\'s RSS within the bound and closes every slow socket with 4008', async () => {
    const [alice, bob] = [await server.createUser(), await server.createUser()]
    const chat = await server.call<{ id: string }>(alice.token, 'chats.create', { type: 'group', title: 'slow readers', members: [{ type: 'user', id: bob.id }] })

    // A reader that keeps up (another user of the chat): its messages must keep flowing.
    const reader = createAiriClient({ baseUrl: server.baseUrl, getToken: () => bob.token, WebSocket: WebSocket as unknown as WebSocketConstructor })
    const received: string[] = []
    let readerReady = false
    const readerSubscription = reader.chats.onMessages.subscribe(undefined, {
      onData: ({ data }) => {
        readerReady = true
        if (data.type === 'messages')
          received.push(...data.messages.map(message => message.content))
      },
    })

    const attackers = await Promise.all(Array.from({ length: SOCKETS }, () => openRawSocket(server.baseUrl, alice.token)))
    for (const attacker of attackers) {
      for (let index = 0; index < SUBSCRIPTIONS; index++)
        attacker.subscribe('chats.onMessages')
    }
    await until(() => readerReady && attackers.every(attacker => attacker.dataFrames() === SUBSCRIPTIONS), 'every subscription to be ready', 60_000)
    expect(attackers.flatMap(attacker => attacker.errors())).toEqual([])

    // A warm-up send through every path, then the clients stop reading.
    await server.call(alice.token, 'chats.sendMessages', { chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'warm-up' }] })
    await until(() => received.includes('warm-up') && attackers.every(attacker => attacker.dataFrames() === 2 * SUBSCRIPTIONS), 'the warm-up to reach every subscription', 60_000)
    for (const attacker of attackers)
      attacker.pause()

    const baseline = server.rss()
    let peak = baseline
    const sampler = setInterval(() => {
      peak = Math.max(peak, server.rss())
    }, 10)
    try {
      for (let send = 0; send < SENDS; send++) {
        const content = `${send}:`.padEnd(CONTENT_CHARS, 'x')
        await server.call(alice.token, 'chats.sendMessages', { chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content }] })
      }
      await until(() => received.length === 1 + SENDS, 'the reader to receive every message', 60_000)
      // The slow subscriptions have had every event handed to them by now; give the sampler a look at the result.
      const settled = server.rss()
      peak = Math.max(peak, settled)
    }
    finally {
      clearInterval(sampler)
    }
    const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
    console.warn(`slow readers: server RSS ${mb(baseline)} before, peak ${mb(peak)} (+${mb(peak - baseline)}) after ${SENDS} × ${CONTENT_CHARS} characters to ${SOCKETS * SUBSCRIPTIONS} paused subscriptions`)
    expect(peak - baseline).toBeLessThan(RSS_BOUND_BYTES)

    // Once they read again, each slow socket finds it was closed for being slow (the SDK would reconnect and resume).
    for (const attacker of attackers)
      attacker.resume()
    const closes = await Promise.all(attackers.map(attacker => attacker.closed))
    expect(new Set(closes.map(close => close.code))).toEqual(new Set([4008]))
    expect(closes[0]!.reason).toMatch(/slow/i)
    // The reader kept up and was never closed.
    expect(received).toHaveLength(1 + SENDS)
    readerSubscription.unsubscribe()
    await reader.close()
  }, 300_000)
})

/** A client speaking tRPC's WebSocket protocol itself, so the test can stop its reading. */
async function openRawSocket(baseUrl: string, token: string) {
  const socket = new WebSocket(`${baseUrl.replace('http', 'ws')}/trpc?connectionParams=1`)
  const frames: Array<{ id?: number, result?: { type?: string }, error?: unknown }> = []
  const closed = new Promise<{ code: number, reason: string }>(resolve => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  socket.on('message', (data) => {
    // The server's keep-alive asks with a bare PING now and then.
    if (data.toString() !== 'PING')
      frames.push(JSON.parse(data.toString()))
  })
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('error', reject)
  })
  socket.send(JSON.stringify({ method: 'connectionParams', data: { token } }))
  // Writing still works while reading is paused: the attacker keeps the server's keep-alive satisfied.
  const heartbeat = setInterval(() => socket.readyState === WebSocket.OPEN && socket.send('PONG'), 5_000)
  void closed.then(() => clearInterval(heartbeat))
  let nextId = 1
  // ws keeps its TCP socket here; pausing it stops reading, as a client that stalls would.
  const tcp = (socket as unknown as { _socket: Socket })._socket
  return {
    closed,
    subscribe(path: string) {
      socket.send(JSON.stringify({ id: nextId++, method: 'subscription', params: { path, input: superjson.serialize(undefined) } }))
    },
    dataFrames: () => frames.filter(frame => frame.result?.type === 'data').length,
    errors: () => frames.filter(frame => frame.error !== undefined),
    pause: () => tcp.pause(),
    resume: () => tcp.resume(),
  }
}
