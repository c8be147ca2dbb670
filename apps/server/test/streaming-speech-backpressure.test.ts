import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { silentLogger, type Logger } from '@airi/api'
import { createAiriClient } from '@airi/sdk'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Issue 20 item 2: a client that stops reading the speech socket must not make the
 * server buffer the upstream's audio without bound, nor keep the socket forever.
 * The clients here are real `ws` sockets whose reading is paused (`ws.pause()`,
 * the TCP socket stops being read); the server's side of each socket is the real
 * one from `app.websocketServer`, sampled, not mocked.
 */

const MODEL = 'seed-tts-2.0'
const UNITS_PER_FLUX = 100
/** The outbound bound the servers here are given (the default is 1 MiB). */
const BOUND = 256 * 1024
const CHUNK = 64 * 1024
/**
 * Past the bound, frames already read from the upstream (at most one TCP read,
 * 64 KiB, plus the frame it completes) are still forwarded: that is the slack.
 */
const PEAK_LIMIT = BOUND + 4 * CHUNK

let fake: FakeStreamingTtsUpstream
/** Short deadlines: a client that does not drain is cut quickly. */
let strict: TestServer
/** Deadlines far beyond the tests: a client that reads again is served to the end. */
let patient: TestServer
const ended: Array<Record<string, unknown>> = []
const recording: Logger = { ...silentLogger, info: (obj, msg) => msg === 'speech session ended' && ended.push(obj as Record<string, unknown>) }

async function configure(target: TestServer): Promise<void> {
  const operator = await createVerifiedUser(target, ADMIN_EMAIL)
  const admin = createAiriClient({ baseUrl: target.baseUrl, getToken: () => operator.token })
  const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: 'streaming-tts', keyId: 'k0', apiKey: 'sk-stream' })
  await admin.admin.config.set.mutate({ key: 'STREAMING_TTS_UPSTREAM', value: { url: fake.url, keys: [{ id: keyId, ciphertext }], models: [{ id: MODEL }] } })
  await admin.admin.config.set.mutate({ key: 'FLUX_PER_1K_CHARS_TTS', value: 1000 / UNITS_PER_FLUX })
}

beforeAll(async () => {
  fake = await startFakeStreamingTtsUpstream()
  ;[strict, patient] = await Promise.all([
    startTestServer({ logger: recording, limits: { speechSocketLimits: { maxBufferedBytes: BOUND, drainTimeoutMs: 300, closeGraceMs: 100, idleTimeoutMs: 60_000 } } }),
    startTestServer({ limits: { speechSocketLimits: { maxBufferedBytes: BOUND, drainTimeoutMs: 60_000, closeGraceMs: 60_000, idleTimeoutMs: 60_000 } } }),
  ])
  await Promise.all([configure(strict), configure(patient)])
}, 60_000)
afterAll(async () => {
  await Promise.all([strict?.close(), patient?.close()])
  await fake?.close()
})

async function worth(target: TestServer, user: TestUser): Promise<number> {
  const [balance, debt] = await Promise.all([target.api.services.billing.getBalance(user.id), target.api.services.speech.meter.peekDebt(user.id)])
  return balance * UNITS_PER_FLUX - debt
}

/**
 * A raw client that stops reading as soon as it is open (it can still send), and
 * the server's side of the same socket.
 */
async function pausedClient(target: TestServer, user: TestUser) {
  const { ticket } = await createAiriClient({ baseUrl: target.baseUrl, getToken: () => user.token }).audio.createSpeechTicket.mutate()
  const known = new Set(target.app.websocketServer.clients)
  const ws = new WebSocket(`${target.baseUrl.replace('http', 'ws')}/api/v1/audio/speech/ws?ticket=${ticket}`)
  const frames: Array<Record<string, unknown>> = []
  const audio: Buffer[] = []
  let closeCode: number | undefined
  ws.on('message', (data, isBinary) => (isBinary ? audio.push(data as Buffer) : frames.push(JSON.parse(String(data)) as Record<string, unknown>)))
  ws.on('close', (code) => {
    closeCode = code
  })
  ws.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  ws.pause()
  let server: WebSocket | undefined
  await until(() => {
    server = [...target.app.websocketServer.clients].find(client => !known.has(client))
    return server !== undefined
  }, 'the server side of the socket')
  return { ws, server: server!, frames, audio, closeCode: () => closeCode }
}

describe('a client that stops reading the speech socket', () => {
  it('stops reading the upstream at the bound, ends the session at the drain deadline and closes the socket', async () => {
    fake.reset()
    const flood = 128 * 1024 * 1024
    fake.behave({ flood: { chunkBytes: CHUNK, totalBytes: flood } })
    const user = await createVerifiedUser(strict)
    const before = await worth(strict, user)
    const client = await pausedClient(strict, user)
    client.ws.send(JSON.stringify({ event: 'start', model: MODEL, voice: 'v', response_format: 'pcm' }))
    client.ws.send(JSON.stringify({ event: 'text', text: 'Flood me' }))

    let peak = 0
    await until(() => {
      peak = Math.max(peak, client.server.bufferedAmount)
      return client.server.readyState === WebSocket.CLOSED
    }, 'the server to close the socket of a client that stopped reading', 15_000)
    const upstream = fake.sessions[0]!
    await until(() => upstream.closed, 'the upstream session to be closed')
    console.warn(`backpressure: peak server-side buffer ${peak} B (bound ${BOUND} B); the upstream sent ${upstream.audioBytes} of ${flood} B before it was cancelled`)

    expect(peak).toBeGreaterThan(0)
    expect(peak).toBeLessThanOrEqual(PEAK_LIMIT)
    // The server stopped reading, so the upstream could not send everything (kernel buffers took the rest).
    expect(upstream.floodDone).toBe(false)
    expect(upstream.audioBytes).toBeLessThan(flood / 2)
    expect(upstream.cancelled).toBe(true)
    await until(() => ended.some(entry => entry.code === 'drain_timeout'), 'the session to end with drain_timeout')
    expect(strict.api.services.streamingSpeech.openSessions).toBe(0)
    // Audio reached the client's connection: billed like a disconnect, the characters forwarded.
    await until(async () => before - await worth(strict, user) === 'Flood me'.length, 'the forwarded characters to be billed')
    client.ws.terminate()
  }, 60_000)

  it('terminates the socket a grace period after session.finished when the client never answers the close', async () => {
    fake.reset()
    const user = await createVerifiedUser(strict)
    const before = await worth(strict, user)
    const client = await pausedClient(strict, user)
    const text = 'Short and sweet. '
    client.ws.send(JSON.stringify({ event: 'start', model: MODEL, voice: 'v' }))
    client.ws.send(JSON.stringify({ event: 'text', text }))
    client.ws.send(JSON.stringify({ event: 'finish' }))
    await until(() => fake.sessions[0]?.finished === true, 'the upstream to finish')
    // ws's own close timeout is 30 s; the configured grace is 100 ms.
    await until(() => client.server.readyState === WebSocket.CLOSED, 'the server to end a socket whose client never completes the close', 10_000)
    expect(before - await worth(strict, user)).toBe(text.length)
    // What was written before the hard close still reaches the client, session.finished included.
    client.ws.resume()
    await until(() => client.closeCode() !== undefined, 'the client to see the connection end')
    expect(client.frames.at(-1)).toMatchObject({ event: 'session.finished', usage: { characters: text.length } })
    expect(Buffer.concat(client.audio).equals(Buffer.concat(fake.sessions[0]!.audio))).toBe(true)
  })

  it('resumes the upstream once the client reads again, and delivers every byte in order', async () => {
    fake.reset()
    const flood = 16 * 1024 * 1024
    fake.behave({ flood: { chunkBytes: CHUNK, totalBytes: flood } })
    const user = await createVerifiedUser(patient)
    const before = await worth(patient, user)
    const client = await pausedClient(patient, user)
    const text = 'Read me later'
    client.ws.send(JSON.stringify({ event: 'start', model: MODEL, voice: 'v', response_format: 'pcm' }))
    client.ws.send(JSON.stringify({ event: 'text', text }))
    client.ws.send(JSON.stringify({ event: 'finish' }))

    let peak = 0
    const sample = () => {
      peak = Math.max(peak, client.server.bufferedAmount)
    }
    await until(() => {
      sample()
      return client.server.bufferedAmount >= BOUND
    }, 'the server-side buffer to reach the bound')
    client.ws.resume()
    await until(() => {
      sample()
      return client.frames.some(frame => frame.event === 'session.finished')
    }, 'the session to finish', 60_000)
    console.warn(`backpressure: a client that reads again gets ${flood} B with a peak server-side buffer of ${peak} B (bound ${BOUND} B)`)

    expect(peak).toBeLessThanOrEqual(PEAK_LIMIT)
    // The flood's chunks, all and in order, then the audio of the text spoken at finish.
    const floodChunks = client.audio.slice(0, flood / CHUNK)
    expect(floodChunks.reduce((sum, chunk) => sum + chunk.length, 0)).toBe(flood)
    expect(floodChunks.every((chunk, index) => chunk.readUInt32BE(0) === index)).toBe(true)
    expect(Buffer.concat(client.audio.slice(flood / CHUNK)).equals(Buffer.concat(fake.sessions[0]!.audio))).toBe(true)
    expect(client.frames.filter(frame => frame.event === 'error')).toEqual([])
    expect(client.frames.at(-1)).toMatchObject({ event: 'session.finished', usage: { characters: text.length } })
    expect(before - await worth(patient, user)).toBe(text.length)
    await until(() => client.closeCode() !== undefined, 'the socket to close')
    expect(client.closeCode()).toBe(1000)
  }, 90_000)
})
