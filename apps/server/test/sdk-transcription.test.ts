import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import {
  AiriError,
  createAiriClient,
  createTranscriptionStream,
  MAX_AUDIO_FRAME_BYTES,
  transcribe,
  type TranscriptEvent,
  type TranscriptionStreamError,
  type TranscriptionStreamOptions,
  type TranscriptionUsage,
  type WebSocketConstructor,
} from '@airi/sdk'
import { startFakeRealtimeSttUpstream, utteranceTranscript, type FakeRealtimeSttUpstream } from '@airi/tooling/fakes/realtime-stt-upstream'
import { DEFAULT_TRANSCRIPT, startFakeSttUpstream, type FakeSttUpstream } from '@airi/tooling/fakes/stt-upstream'
import { startTcpProxy } from '@airi/tooling/test/tcp-proxy'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

// The SDK's transcription helpers (docs/sdk.md) against the real server and the
// fake upstreams: `transcribe` over REST in each response format, and
// `createTranscriptionStream` over the socket, including how it fails.

const FIXTURES = new URL('../../../tooling/fixtures/audio/', import.meta.url)
/** tone.wav: 2.5 s of 16 kHz mono PCM16. */
const TONE_SECONDS = 2.5
/** The streaming upstream's own rate: audio sent at it reaches the fake byte for byte. */
const UPSTREAM_RATE = 24_000

let server: TestServer
let rest: FakeSttUpstream
let realtime: FakeRealtimeSttUpstream
let tone: Buffer

beforeAll(async () => {
  ;[server, rest, realtime, tone] = await Promise.all([startTestServer(), startFakeSttUpstream(), startFakeRealtimeSttUpstream(), readFile(new URL('tone.wav', FIXTURES))])
})
afterAll(async () => {
  await server.close()
  await Promise.all([rest.close(), realtime.close()])
})

async function configure(): Promise<void> {
  const { config, llmGateway } = server.api.services
  const restKey = llmGateway.encryptKey('whisper', 'k0', 'sk-stt')
  await config.set('STT_UPSTREAMS', { defaultModel: 'whisper', models: { whisper: { adapter: 'openai-compatible', baseUrl: rest.url, model: 'whisper-large-v3', keys: [{ id: restKey.keyId, ciphertext: restKey.ciphertext }] } } })
  const streamKey = llmGateway.encryptKey('streaming-stt', 'k0', 'sk-realtime')
  await config.set('STREAMING_STT_UPSTREAM', { url: realtime.url, model: 'gpt-4o-transcribe', keys: [{ id: streamKey.keyId, ciphertext: streamKey.ciphertext }] })
}

const wavFile = () => new File([new Uint8Array(tone)], 'tone.wav', { type: 'audio/wav' })
const balance = (user: TestUser) => server.api.services.billing.getBalance(user.id)

/** `seconds` of a 440 Hz tone as PCM16 mono at `rate`. */
function sine(seconds: number, rate: number): Int16Array {
  const samples = new Int16Array(Math.round(seconds * rate))
  for (let i = 0; i < samples.length; i++)
    samples[i] = Math.round(Math.sin((2 * Math.PI * 440 * i) / rate) * 8000)
  return samples
}

/** A session through the SDK, recording everything it reports. */
function listen(user: TestUser, options: Partial<TranscriptionStreamOptions> = {}) {
  const deltas: TranscriptEvent[] = []
  const finals: TranscriptEvent[] = []
  const errors: TranscriptionStreamError[] = []
  const done: Array<TranscriptionUsage & { cancelled: boolean }> = []
  let started = false
  const baseUrl = options.baseUrl ?? server.baseUrl
  const stream = createTranscriptionStream({
    baseUrl,
    client: createAiriClient({ baseUrl, getToken: () => user.token }),
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onDelta: delta => deltas.push(delta),
    onFinal: final => finals.push(final),
    onStarted: () => (started = true),
    onError: error => errors.push(error),
    onDone: usage => done.push(usage),
    ...options,
  })
  return { stream, deltas, finals, errors, done, started: () => started }
}

describe('before the operator configures transcription', () => {
  it('transcribe throws AiriError 503 STT_NOT_CONFIGURED, and the stream ends with streaming_stt_not_configured', async () => {
    const user = await createVerifiedUser(server)
    const failure = await transcribe({ baseUrl: server.baseUrl, getToken: () => user.token, file: wavFile(), model: 'whisper' }).catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(AiriError)
    expect(failure).toMatchObject({ status: 503, code: 'STT_NOT_CONFIGURED' })

    const session = listen(user)
    session.stream.sendAudio(sine(0.1, 16_000))
    await session.stream.closed
    expect(session.errors.map(error => error.code)).toEqual(['streaming_stt_not_configured'])
    expect(session.done).toEqual([])
  })
})

describe('transcribe', () => {
  beforeAll(configure)

  it('answers { text } for json (the default), sending the file and fields as given and the upstream model in place of the alias', async () => {
    rest.reset()
    const user = await createVerifiedUser(server)
    const result = await transcribe({ baseUrl: server.baseUrl, getToken: () => user.token, file: wavFile(), model: 'whisper', language: 'en', prompt: 'AIRI and Kiki' })
    expect(result).toEqual({ text: DEFAULT_TRANSCRIPT })
    const request = rest.requests[0]!
    expect(request.fields).toMatchObject({ model: 'whisper-large-v3', language: 'en', prompt: 'AIRI and Kiki' })
    expect(request.file?.bytes.equals(tone)).toBe(true)
  })

  it('answers the bare text for text, from a Blob without a name', async () => {
    rest.reset()
    const user = await createVerifiedUser(server)
    const text = await transcribe({ baseUrl: server.baseUrl, getToken: () => user.token, file: new Blob([new Uint8Array(tone)], { type: 'audio/wav' }), model: 'whisper', responseFormat: 'text' })
    expect(text).toBe(DEFAULT_TRANSCRIPT)
    expect(rest.requests[0]!.file?.bytes.equals(tone)).toBe(true)
  })

  it('answers { text, language, duration } for verbose_json, the duration the file\'s own', async () => {
    const user = await createVerifiedUser(server)
    const result = await transcribe({ baseUrl: server.baseUrl, getToken: () => user.token, file: wavFile(), model: 'whisper', responseFormat: 'verbose_json', language: 'en' })
    expect(result).toMatchObject({ text: DEFAULT_TRANSCRIPT, duration: TONE_SECONDS })
    expect(result.language).toEqual(expect.any(String))
  })

  it('throws AiriError with the server\'s status and code: 401 without a token, 400 UNSUPPORTED_AUDIO for a file that is not audio', async () => {
    const user = await createVerifiedUser(server)
    const anonymous = await transcribe({ baseUrl: server.baseUrl, getToken: () => null, file: wavFile(), model: 'whisper' }).catch((error: unknown) => error)
    expect(anonymous).toBeInstanceOf(AiriError)
    expect((anonymous as AiriError).status).toBe(401)

    const notAudio = new File([new Uint8Array(await readFile(new URL('not-audio.bin', FIXTURES)))], 'voice.wav', { type: 'audio/wav' })
    const unreadable = await transcribe({ baseUrl: server.baseUrl, getToken: () => user.token, file: notAudio, model: 'whisper' }).catch((error: unknown) => error)
    expect(unreadable).toBeInstanceOf(AiriError)
    expect(unreadable).toMatchObject({ status: 400, code: 'UNSUPPORTED_AUDIO' })
  })

  it('rejects with the signal\'s AbortError when aborted, and a server out of reach is AiriError NETWORK_ERROR', async () => {
    rest.reset()
    rest.behave(() => ({ kind: 'hang' }))
    const user = await createVerifiedUser(server)
    const controller = new AbortController()
    const call = transcribe({ baseUrl: server.baseUrl, getToken: () => user.token, file: wavFile(), model: 'whisper', signal: controller.signal }).catch((error: unknown) => error)
    await until(() => rest.requests.length === 1, 'the upstream to be called')
    controller.abort()
    expect(await call).toMatchObject({ name: 'AbortError' })
    rest.reset()

    const proxy = await startTcpProxy(Number(new URL(server.baseUrl).port))
    await proxy.cut()
    const unreachable = await transcribe({ baseUrl: `http://127.0.0.1:${proxy.port}`, getToken: () => user.token, file: wavFile(), model: 'whisper' }).catch((error: unknown) => error)
    await proxy.close()
    expect(unreachable).toBeInstanceOf(AiriError)
    expect(unreachable).toMatchObject({ code: 'NETWORK_ERROR' })
  })
})

describe('createTranscriptionStream', () => {
  beforeAll(configure)

  it('streams deltas and finals of each utterance, then done with the seconds billed; audio given before the socket opens is queued, split into ≤ 64 KiB frames and kept whole across odd-sized pieces', async () => {
    realtime.reset()
    const user = await createVerifiedUser(server)
    const before = await balance(user)
    const session = listen(user, { sampleRate: UPSTREAM_RATE, language: 'en' })
    const audio = new Uint8Array(sine(TONE_SECONDS, UPSTREAM_RATE).buffer)
    // 120 000 bytes in odd-sized pieces, the first larger than one frame.
    const cuts = [0, MAX_AUDIO_FRAME_BYTES + 7, MAX_AUDIO_FRAME_BYTES + 7 + 33_333, audio.byteLength]
    for (let i = 0; i < cuts.length - 1; i++)
      session.stream.sendAudio(audio.slice(cuts[i], cuts[i + 1]).buffer)
    session.stream.stop()
    await session.stream.closed

    expect(session.errors).toEqual([])
    expect(session.started()).toBe(true)
    const upstream = realtime.sessions[0]!
    expect(upstream.bytes).toBe(audio.byteLength)
    expect(upstream.update?.audio?.input?.transcription).toMatchObject({ model: 'gpt-4o-transcribe', language: 'en' })
    const expected = [utteranceTranscript(1, 1000), utteranceTranscript(2, 1000), utteranceTranscript(3, 500)]
    expect(session.finals.map(final => final.text)).toEqual(expected)
    // Each utterance's deltas add up to its final text, under the same item id.
    for (const final of session.finals)
      expect(session.deltas.filter(delta => delta.itemId === final.itemId).map(delta => delta.text).join('')).toBe(final.text)
    expect(session.done).toHaveLength(1)
    expect(session.done[0]).toMatchObject({ seconds: TONE_SECONDS, cancelled: false })
    expect(session.done[0]!.flux).toBe(before - await balance(user))
  })

  it('cancel ends the session at once with done (cancelled) and no transcript of the rest', async () => {
    realtime.reset()
    const user = await createVerifiedUser(server)
    const session = listen(user, { sampleRate: UPSTREAM_RATE })
    const audio = sine(0.5, UPSTREAM_RATE)
    session.stream.sendAudio(audio)
    await until(() => realtime.sessions[0]?.bytes === audio.byteLength, 'the audio to reach the upstream')
    session.stream.cancel()
    await session.stream.closed
    expect(session.errors).toEqual([])
    expect(session.finals).toEqual([])
    expect(session.done).toEqual([expect.objectContaining({ seconds: 0.5, cancelled: true })])
  })

  it('an error frame is reported once through onError (a rate the socket does not take), and nothing after it', async () => {
    const user = await createVerifiedUser(server)
    const session = listen(user, { sampleRate: 96_000 })
    session.stream.sendAudio(sine(0.1, 96_000))
    session.stream.stop()
    await session.stream.closed
    expect(session.errors.map(error => error.code)).toEqual(['invalid_start_frame'])
    expect(session.done).toEqual([])
  })

  it('ends with insufficient_flux for a user who cannot pay for the pre-flight minute', async () => {
    realtime.reset()
    const user = await createVerifiedUser(server)
    await server.api.services.billing.debit({ userId: user.id, amount: await balance(user), requestId: `test:${randomUUID()}`, description: 'test setup' })
    const session = listen(user, { sampleRate: UPSTREAM_RATE })
    session.stream.sendAudio(sine(0.1, UPSTREAM_RATE))
    await session.stream.closed
    expect(session.errors.map(error => error.code)).toEqual(['insufficient_flux'])
    expect(realtime.sessions).toHaveLength(0)
  })

  it('a socket that closes without session.finished is the error streaming_stt_closed', async () => {
    realtime.reset()
    const user = await createVerifiedUser(server)
    const proxy = await startTcpProxy(Number(new URL(server.baseUrl).port))
    try {
      const session = listen(user, { baseUrl: `http://127.0.0.1:${proxy.port}`, sampleRate: UPSTREAM_RATE })
      session.stream.sendAudio(sine(0.2, UPSTREAM_RATE))
      await until(() => session.started(), 'the session to start')
      await proxy.cut()
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['streaming_stt_closed'])
      expect(session.done).toEqual([])
    }
    finally {
      await proxy.close()
    }
  })

  it('ends with audio_backlog when more audio waits for the socket than maxQueuedBytes', async () => {
    const user = await createVerifiedUser(server)
    const session = listen(user, { sampleRate: UPSTREAM_RATE, maxQueuedBytes: 4096 })
    session.stream.sendAudio(new Int16Array(2048))
    expect(session.errors).toEqual([])
    session.stream.sendAudio(new Int16Array(1))
    await session.stream.closed
    expect(session.errors.map(error => error.code)).toEqual(['audio_backlog'])
  })
})
