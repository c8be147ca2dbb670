import { performance } from 'node:perf_hooks'

import WebSocket from 'ws'

import { REQUEST_DEADLINE_MS } from './context.ts'
import { until } from './infra.ts'

/** A set of sockets that record when each fan-out sequence number reached them. */
export interface Subscribers {
  count: number
  /** Receive times (performance.now()) of `seq`, one per socket that got it. */
  received: (seq: number) => number[]
  close: () => void
}

const SEQ = /fanout:(\d+):/

/** Resolves once `socket` is open; fails on an error or after the request deadline. */
export function opened(socket: WebSocket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.terminate()
      reject(new Error(`${socket.url}: not open within ${REQUEST_DEADLINE_MS} ms`))
    }, REQUEST_DEADLINE_MS)
    socket.once('open', () => {
      clearTimeout(timer)
      resolve()
    })
    socket.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
  })
}

function track(sockets: WebSocket[], log: Map<number, number[]>) {
  for (const socket of sockets) {
    socket.on('message', (data) => {
      const match = SEQ.exec(String(data))
      if (match) {
        const seq = Number(match[1])
        let times = log.get(seq)
        if (!times)
          log.set(seq, times = [])
        times.push(performance.now())
      }
    })
  }
  return {
    count: sockets.length,
    received: (seq: number) => log.get(seq) ?? [],
    close: () => sockets.forEach(socket => socket.terminate()),
  }
}

/**
 * `chats.onMessages` subscriptions over raw tRPC WebSockets (the wire protocol
 * the SDK speaks: connection params with the token, then one subscription), one
 * per socket, spread over `baseUrls` and `tokens` in turn. Resolves once every
 * subscription is started.
 */
export async function openChatSubscribers(baseUrls: string[], tokens: string[], count: number): Promise<Subscribers> {
  const sockets: WebSocket[] = []
  let started = 0
  let failed: Error | undefined
  const open = async (index: number) => {
    const base = baseUrls[index % baseUrls.length]!.replace(/^http/, 'ws')
    const socket = new WebSocket(`${base}/trpc?connectionParams=1`)
    sockets.push(socket)
    socket.on('message', (data) => {
      const text = String(data)
      if (text.includes('"type":"started"'))
        started++
      else if (text.includes('"error"'))
        failed ??= new Error(`a subscription failed: ${text.slice(0, 300)}`)
    })
    socket.on('error', error => (failed ??= error))
    await opened(socket)
    socket.send(JSON.stringify({ method: 'connectionParams', data: { token: tokens[index % tokens.length] } }))
    socket.send(JSON.stringify({ id: 1, method: 'subscription', params: { path: 'chats.onMessages', input: { json: {} } } }))
  }
  // A few at a time: each subscription authenticates on the server.
  let next = 0
  await Promise.all(Array.from({ length: 20 }, async () => {
    while (next < count)
      await open(next++)
  }))
  await until(() => {
    if (failed)
      throw failed
    return started >= count
  }, `${count} subscriptions to start`, 180_000)
  return track(sockets, new Map())
}

/** Plain `ws` sockets on the bare broadcast server. */
export async function openBareSubscribers(baseUrl: string, count: number): Promise<Subscribers> {
  const sockets = await Promise.all(Array.from({ length: count }, async () => {
    const socket = new WebSocket(baseUrl.replace(/^http/, 'ws'))
    await opened(socket)
    return socket
  }))
  return track(sockets, new Map())
}
