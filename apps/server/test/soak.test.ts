import { randomUUID } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

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

describe('soak: 2 000 sockets from one user', () => {
  it('holds the cap, returns the memory, and keeps another user\'s chat flowing', async () => {
    const chat = await sdk(alice).chats.create.mutate({ type: 'group', title: 'soak', members: [{ type: 'user', id: bob.id }] })
    const received: Array<{ content: string, at: number }> = []
    let ready = false
    const subscription = sdk(bob).chats.onMessages.subscribe(undefined, {
      onData: ({ data }) => {
        ready = true
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
