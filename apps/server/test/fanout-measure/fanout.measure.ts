import { Worker } from 'node:worker_threads'
import { createServer } from 'node:http'

import type { KyselyPlugin } from 'kysely'
import { it } from 'vitest'
import { WebSocketServer } from 'ws'

import { createAiriClient } from '@airi/sdk'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'

/**
 * Send→receive latency of one chat message to 1 000 live subscriptions, beside a
 * bare `ws` broadcast to as many sockets, and the SQL statements each instance
 * issues per message. Prints; asserts nothing. USERS × PER_USER sockets, first all
 * on one server, then spread over two (the sender always uses the first).
 */
const USERS = Number(process.env.USERS ?? 100)
const PER_USER = Number(process.env.PER_USER ?? 10)
const ROUNDS = Number(process.env.ROUNDS ?? 40)

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
}

function row(name: string, values: number[]): string {
  return `${name.padEnd(28)} p50 ${percentile(values, 0.5).toFixed(1).padStart(7)} ms   p99 ${percentile(values, 0.99).toFixed(1).padStart(7)} ms   (${values.length} deliveries)`
}

function startWorker(data: unknown) {
  const worker = new Worker(new URL('./clients.mjs', import.meta.url), { workerData: data })
  const ask = <T>(cmd: object, reply: string) => new Promise<T>((resolve) => {
    const on = (msg: { type: string }) => {
      if (msg.type === reply) {
        worker.off('message', on)
        resolve(msg as T)
      }
    }
    worker.on('message', on)
    worker.postMessage(cmd)
  })
  return { worker, ask }
}

/** Latencies of every round after three warm-up ones; stops early (and says so) when a round is not delivered within 30 s. */
async function runRounds(ask: ReturnType<typeof startWorker>['ask'], send: () => void, expected: number): Promise<number[]> {
  const all: number[] = []
  for (let round = 0; round < ROUNDS + 3; round++) {
    send()
    const deadline = Date.now() + 30_000
    for (let count = 0; count < expected; count = (await ask<{ count: number }>({ type: 'count' }, 'count')).count) {
      if (Date.now() > deadline) {
        console.warn(`round ${round} timed out: ${count} of ${expected} delivered within 30 s; stopping`)
        return all
      }
      await new Promise(resolve => setTimeout(resolve, 2))
    }
    const { latencies } = await ask<{ latencies: number[] }>({ type: 'take' }, 'latencies')
    if (round >= 3)
      all.push(...latencies)
  }
  return all
}

it('measures chat fan-out', async () => {
  // Bare ws broadcast: the sender's message goes to every socket.
  const http = createServer()
  const wss = new WebSocketServer({ server: http })
  wss.on('connection', (socket) => {
    socket.on('message', (raw) => {
      const text = raw.toString()
      for (const client of wss.clients)
        client.send(text)
    })
  })
  await new Promise<void>(resolve => http.listen(0, '127.0.0.1', resolve))
  const bareUrl = `ws://127.0.0.1:${(http.address() as { port: number }).port}`
  const bare = startWorker({ mode: 'bare', sockets: Array.from({ length: USERS * PER_USER }, () => ({ url: bareUrl })) })
  await bare.ask({ type: 'connect' }, 'connected')
  const bareLatencies = await runRounds(bare.ask, () => bare.worker.postMessage({ type: 'send' }), USERS * PER_USER)
  await bare.ask({ type: 'close' }, 'closed')
  await bare.worker.terminate()
  wss.close()
  http.close()

  const counts: number[] = []
  const counting = (i: number): KyselyPlugin => ({
    transformQuery({ node }) {
      counts[i] = (counts[i] ?? 0) + 1
      return node
    },
    async transformResult({ result }) {
      return result
    },
  })
  const shared = await createTestDatabase()
  const redisPrefix = testRedisPrefix()
  const limits = { trpcLimits: { socketsPerUser: PER_USER + 2, socketsPerIp: USERS * PER_USER + 100, subscriptionsPerSocket: 16, maxBatchSize: 50 } }
  const servers: TestServer[] = []
  for (let i = 0; i < 2; i++) {
    const database: TestDatabase = { ...shared, db: shared.db.withPlugin(counting(i)), drop: async () => {} }
    servers.push(await startTestServer({ database, redisPrefix, limits: limits as never }))
  }
  const users = []
  // A few at a time, each tried again once: sign-up hashes a password, slow on a loaded machine.
  const signUp = () => createVerifiedUser(servers[0]!).catch(() => createVerifiedUser(servers[0]!))
  for (let i = 0; i < USERS; i += 5)
    users.push(...await Promise.all(Array.from({ length: Math.min(5, USERS - i) }, signUp)))
  const owner = users[0]!
  const sdk = createAiriClient({ baseUrl: servers[0]!.baseUrl, getToken: () => owner.token })
  const chat = await sdk.chats.create.mutate({ type: 'group', title: 'fan-out', members: users.slice(1).map(user => ({ type: 'user' as const, id: user.id })) })

  const lines = [`fan-out: ${USERS} users x ${PER_USER} sockets, ${ROUNDS} rounds`, row('bare ws broadcast', bareLatencies)]
  for (const instances of [1, 2]) {
    const sockets = users.flatMap((user, u) => Array.from({ length: PER_USER }, (_, k) => ({
      url: `${servers[(u * PER_USER + k) % instances]!.baseUrl.replace('http', 'ws')}/trpc`,
      token: user.token,
    })))
    const ours = startWorker({ mode: 'trpc', sockets })
    await ours.ask({ type: 'connect' }, 'connected')
    const sqlBefore = [...counts]
    const ourLatencies = await runRounds(ours.ask, () => ours.worker.postMessage({ type: 'send', url: servers[0]!.baseUrl, token: owner.token, chatId: chat.id }), USERS * PER_USER)
    const sqlPerMessage = servers.map((_, i) => ((counts[i] ?? 0) - (sqlBefore[i] ?? 0)) / (ourLatencies.length / (USERS * PER_USER) + 3))
    // Idle: statements over 3 s with every subscription open and nothing sent.
    const idleBefore = [...counts]
    await new Promise(resolve => setTimeout(resolve, 3000))
    const idle = servers.map((_, i) => (counts[i] ?? 0) - (idleBefore[i] ?? 0))
    await ours.ask({ type: 'close' }, 'closed')
    await ours.worker.terminate()
    lines.push(
      row(`chats.onMessages, ${instances} inst.`, ourLatencies),
      `  ratio p50 ${(percentile(ourLatencies, 0.5) / percentile(bareLatencies, 0.5)).toFixed(2)}  p99 ${(percentile(ourLatencies, 0.99) / percentile(bareLatencies, 0.99)).toFixed(2)}`,
      `  SQL statements per message, sender / other: ${sqlPerMessage.map(n => n.toFixed(1)).join(' / ')}`,
      `  SQL statements in 3 s idle, sender / other: ${idle.join(' / ')}`,
    )
  }
  console.warn(lines.join('\n'))

  await sdk.close()
  for (const server of servers)
    await server.close()
  await shared.drop()
})
