import { performance } from 'node:perf_hooks'

import { afterAll, beforeAll, expect, it } from 'vitest'
import WebSocket from 'ws'

import { createAiriClient, createSpeechStream, type WebSocketConstructor } from '@airi/sdk'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Not a pass/fail test: prints the latency the server adds to the first audio
 * byte (first `text` frame → first binary frame), through the server versus
 * straight at the fake upstream, as p50/p99 over sequential runs. Both paths use
 * an already open socket, so only the relay is measured.
 */
const RUNS = 60
const SENTENCE = 'Hello there, this is the first sentence. '

let server: TestServer
let fake: FakeStreamingTtsUpstream
/** Several users: each may take 30 speech tickets a minute. */
let users: TestUser[]

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer(), startFakeStreamingTtsUpstream()])
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  const admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
  const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: 'streaming-tts', keyId: 'k0', apiKey: 'sk-stream' })
  await admin.admin.config.set.mutate({ key: 'STREAMING_TTS_UPSTREAM', value: { url: fake.url, keys: [{ id: keyId, ciphertext }], models: [{ id: 'm' }] } })
  users = [await createVerifiedUser(server), await createVerifiedUser(server), await createVerifiedUser(server)]
})
afterAll(async () => {
  await server.close()
  await fake.close()
})

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/** Straight at the fake: open, start, wait for session.started, then time text → first audio. */
async function direct(): Promise<number> {
  const ws = new WebSocket(fake.url, { headers: { authorization: 'Bearer sk-stream' } })
  await new Promise(resolve => ws.once('open', resolve))
  ws.send(JSON.stringify({ event: 'start', model: 'm', voice: 'v' }))
  await new Promise<void>(resolve => ws.on('message', (data, isBinary) => !isBinary && String(data).includes('session.started') && resolve()))
  const sent = performance.now()
  const first = new Promise<number>(resolve => ws.on('message', (_data, isBinary) => isBinary && resolve(performance.now())))
  ws.send(JSON.stringify({ event: 'text', text: SENTENCE }))
  const elapsed = await first - sent
  ws.send(JSON.stringify({ event: 'cancel' }))
  ws.close()
  return elapsed
}

/** Through the server with the SDK: same, once the session has started. */
async function throughServer(user: TestUser): Promise<number> {
  const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  let started!: () => void
  let failed!: (error: Error) => void
  const isStarted = new Promise<void>((resolve, reject) => {
    started = resolve
    failed = reject
  })
  let gotAudio!: (at: number) => void
  const firstAudio = new Promise<number>(resolve => (gotAudio = resolve))
  const stream = createSpeechStream({
    baseUrl: server.baseUrl,
    client,
    model: 'm',
    voice: 'v',
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onStarted: () => started(),
    onError: error => failed(error),
    onAudio: () => gotAudio(performance.now()),
  })
  await isStarted
  const sent = performance.now()
  stream.appendText(SENTENCE)
  const elapsed = await firstAudio - sent
  stream.cancel()
  await stream.closed
  return elapsed
}

it('prints the added first-audio latency (p50/p99)', async () => {
  const directMs: number[] = []
  const serverMs: number[] = []
  for (let run = 0; run < RUNS; run++) {
    directMs.push(await direct())
    serverMs.push(await throughServer(users[run % users.length]!))
  }
  const row = (name: string, values: number[]) => `${name}: p50 ${percentile(values, 50).toFixed(2)} ms, p99 ${percentile(values, 99).toFixed(2)} ms`
  const added = serverMs.map((value, index) => value - directMs[index]!)
  console.warn([`first audio byte after the first text frame, ${RUNS} runs`, row('direct to the fake', directMs), row('through the server', serverMs), row('added by the server', added)].join('\n'))
  expect(serverMs).toHaveLength(RUNS)
}, 300_000)
