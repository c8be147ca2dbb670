import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { createAiriClient, createSpeechStream, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeRealtimeSttUpstream, type FakeRealtimeSttUpstream } from '@airi/tooling/fakes/realtime-stt-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { startFakeSttUpstream, type FakeSttUpstream } from '@airi/tooling/fakes/stt-upstream'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { until } from '@airi/tooling/test/until'

import { botChat, createCharacter, replyEnded } from './conversations-setup.ts'
import { createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

// usage.calls and usage.summary (SPEC §4.14) over one user's mix of every metered
// call: an LLM call through the official client, a reply the server made, speech
// over REST and the socket, transcription over REST and the socket.

const STREAMING_TTS_MODEL = 'seed-tts-2.0'
const STREAMING_STT_MODEL = 'gpt-4o-transcribe'
/** 10 Flux per 1 000 characters: one Flux is 100 characters. */
const FLUX_PER_1K_CHARS = 10
/** 600 Flux a minute: one Flux is 100 ms of audio. */
const FLUX_PER_MINUTE = 600

let server: TestServer
let llm: FakeUpstream
let tts: FakeTtsUpstream
let streamingTts: FakeStreamingTtsUpstream
let stt: FakeSttUpstream
let realtimeStt: FakeRealtimeSttUpstream

const sealed = (alias: string, key: string) => {
  const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey(alias, 'k0', key)
  return [{ id: keyId, ciphertext }]
}

beforeAll(async () => {
  ;[server, llm, tts, streamingTts, stt, realtimeStt] = await Promise.all([
    startTestServer({ rateLimits: { windowSeconds: 3600 } }),
    startFakeOpenAIUpstream({ name: 'llm' }),
    startFakeTtsUpstream(),
    startFakeStreamingTtsUpstream(),
    startFakeSttUpstream(),
    startFakeRealtimeSttUpstream(),
  ])
  const { config } = server.api.services
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'llm-chat', baseUrl: llm.url, model: 'upstream-chat', keys: sealed('chat', 'sk-chat') }] } } })
  await config.set('TTS_UPSTREAMS', { defaultModel: 'voice', models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'upstream-tts', keys: sealed('voice', 'sk-tts') } } })
  await config.set('STREAMING_TTS_UPSTREAM', { url: streamingTts.url, keys: sealed('streaming-tts', 'sk-stream'), models: [{ id: STREAMING_TTS_MODEL }] })
  await config.set('STT_UPSTREAMS', { defaultModel: 'whisper', models: { whisper: { adapter: 'openai-compatible', baseUrl: stt.url, model: 'upstream-whisper', keys: sealed('whisper', 'sk-stt') } } })
  await config.set('STREAMING_STT_UPSTREAM', { url: realtimeStt.url, model: STREAMING_STT_MODEL, keys: sealed('streaming-stt', 'sk-realtime') })
  await config.set('FLUX_PER_1K_CHARS_TTS', FLUX_PER_1K_CHARS)
  await config.set('FLUX_PER_MINUTE_STT', FLUX_PER_MINUTE)
})
afterAll(async () => {
  await server.close()
  await Promise.all([llm.close(), tts.close(), streamingTts.close(), stt.close(), realtimeStt.close()])
})

const clients: AiriClient[] = []
afterAll(async () => {
  await Promise.all(clients.map(client => client.close()))
})
function sdkOf(user: TestUser): AiriClient {
  const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(client)
  return client
}
/** The official client: chat completions under /api/v1/openai, speech and transcription under /api/v1. */
const openai = (user: TestUser, path = '/api/v1') => new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}${path}`, maxRetries: 0 })
const wav = readFileSync(new URL('../../../tooling/fixtures/audio/tone.wav', import.meta.url))

/** `ms` of a 440 Hz tone, PCM16LE mono at 16 kHz. */
function tone(ms: number): Buffer {
  const samples = 16 * ms
  const pcm = Buffer.alloc(samples * 2)
  for (let n = 0; n < samples; n++)
    pcm.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * n) / 16_000)), n * 2)
  return pcm
}

async function streamSpeech(user: TestUser, text: string): Promise<void> {
  const done: unknown[] = []
  const stream = createSpeechStream({
    baseUrl: server.baseUrl,
    client: sdkOf(user),
    model: STREAMING_TTS_MODEL,
    voice: 'zh_female_vv',
    format: 'pcm',
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onAudio: () => {},
    onSentence: () => {},
    onError: (error) => {
      throw new Error(`speech session failed: ${error.code}`)
    },
    onDone: usage => done.push(usage),
  })
  stream.appendText(text)
  stream.finish()
  await stream.closed
  expect(done, 'the speech session finished').toHaveLength(1)
}

async function streamTranscription(user: TestUser, ms: number): Promise<void> {
  const { ticket } = await sdkOf(user).audio.createTranscriptionTicket.mutate()
  const ws = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/api/v1/audio/transcriptions/ws?ticket=${encodeURIComponent(ticket)}`)
  const frames: Array<{ event: string }> = []
  let closed = false
  ws.on('message', data => frames.push(JSON.parse(String(data)) as { event: string }))
  ws.on('close', () => (closed = true))
  await new Promise<void>((resolve, reject) => ws.once('open', resolve).once('error', reject))
  ws.send(JSON.stringify({ event: 'start', sample_rate: 16_000 }))
  await until(() => frames.some(frame => frame.event === 'session.started'), 'session.started')
  const pcm = tone(ms)
  for (let at = 0; at < pcm.length; at += 3200)
    ws.send(pcm.subarray(at, at + 3200))
  ws.send(JSON.stringify({ event: 'stop' }))
  await until(() => closed, 'the transcription socket to close')
  expect(frames.at(-1)?.event).toBe('session.finished')
}

/** The net Flux the ledger moved for the user's metered calls: LLM reservations, settlements and refunds, and meter debits. */
async function ledgerDebits(user: TestUser): Promise<number> {
  const rows = await server.database.db.selectFrom('flux_transaction').select(['type', 'amount', 'request_id'])
    .where('user_id', '=', user.id)
    .where(eb => eb.or([eb('request_id', 'like', 'llm:%'), eb('request_id', 'like', 'meter:%')]))
    .execute()
  return rows.reduce((sum, row) => sum + (row.type === 'debit' ? row.amount : -row.amount), 0)
}

const today = () => new Date().toISOString().slice(0, 10)

describe('usage of a mix of metered calls', () => {
  let user: TestUser
  let sdk: AiriClient
  /** Kinds in the order the calls were made. */
  const made = ['llm', 'reply', 'tts', 'tts-stream', 'stt', 'stt-stream']

  beforeAll(async () => {
    user = await createVerifiedUser(server)
    sdk = sdkOf(user)
    await server.api.services.billing.credit({ userId: user.id, amount: 1000, requestId: `test:${randomUUID()}` })

    llm.behave(() => ({ kind: 'complete', content: 'Hello there, friend.', usage: { prompt_tokens: 1200, completion_tokens: 800, cached_tokens: 200 } }))
    const completion = await openai(user, '/api/v1/openai').chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hi' }] })
    expect(completion.choices[0]!.message.content).toBe('Hello there, friend.')

    const character = await createCharacter(sdk, {})
    const chatId = await botChat(sdk, character)
    const { reply } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Tell me a story.' } })
    expect((await replyEnded(sdk, chatId, reply.id)).status).toBe('complete')
    llm.reset()

    const speech = await openai(user).audio.speech.create({ model: 'voice', voice: 'alloy', input: 'a'.repeat(250) })
    expect((await speech.arrayBuffer()).byteLength).toBeGreaterThan(0)
    await streamSpeech(user, 'b'.repeat(180))

    const transcript = await openai(user).audio.transcriptions.create({ model: 'whisper', file: await toFile(wav, 'tone.wav', { type: 'audio/wav' }) })
    expect(transcript.text.length).toBeGreaterThan(0)
    await streamTranscription(user, 2000)
  })

  it('lists every call newest first, each with its kind, model and units', async () => {
    const { items, nextCursor } = await sdk.usage.calls.query({})
    expect(nextCursor).toBeNull()
    expect(items.map(item => item.kind)).toEqual([...made].reverse())
    const byKind = Object.fromEntries(items.map(item => [item.kind, item]))
    expect(byKind.llm).toMatchObject({ model: 'chat', status: 'completed', inputTokens: 1200, outputTokens: 800, cachedTokens: 200 })
    expect(byKind.reply).toMatchObject({ model: 'chat', status: 'completed' })
    expect(byKind.reply!.outputTokens).toBeGreaterThan(0)
    expect(byKind.tts).toMatchObject({ model: 'voice', status: 'completed', characters: 250, flux: 2 })
    // 180 characters on top of the 50 the REST call left owed: 2 whole Flux more.
    expect(byKind['tts-stream']).toMatchObject({ model: STREAMING_TTS_MODEL, status: 'completed', characters: 180, flux: 2 })
    expect(byKind.stt).toMatchObject({ model: 'whisper', status: 'completed', seconds: 2.5, flux: 25 })
    expect(byKind['stt-stream']).toMatchObject({ model: STREAMING_STT_MODEL, status: 'completed', seconds: 2, flux: 20 })
    for (const item of items) {
      expect(item.at).toBeInstanceOf(Date)
      expect(item.durationMs).toBeGreaterThanOrEqual(0)
      expect(item.characters === undefined || item.seconds === undefined).toBe(true)
    }
  })

  it('sums to exactly what the ledger debited for those calls, by day and by model', async () => {
    const debited = await ledgerDebits(user)
    expect(debited).toBeGreaterThan(49)
    const { items } = await sdk.usage.calls.query({})
    expect(items.reduce((sum, item) => sum + item.flux, 0)).toBe(debited)

    const byDay = await sdk.usage.summary.query({ from: today(), to: today(), groupBy: 'day' })
    expect(byDay.rows).toEqual([{ key: today(), calls: 6, flux: debited, inputTokens: expect.any(Number), outputTokens: expect.any(Number), characters: 430, seconds: 4.5, fluxByModel: expect.any(Object) }])
    const fluxOf = (kinds: string[]) => items.filter(item => kinds.includes(item.kind)).reduce((sum, item) => sum + item.flux, 0)
    expect(byDay.rows[0]!.fluxByModel).toEqual({ 'chat': fluxOf(['llm', 'reply']), 'voice': 2, [STREAMING_TTS_MODEL]: 2, 'whisper': 25, [STREAMING_STT_MODEL]: 20 })
    expect(byDay.rows[0]!.inputTokens).toBe(items.reduce((sum, item) => sum + (item.inputTokens ?? 0), 0))

    const byModel = await sdk.usage.summary.query({ from: today(), to: today(), groupBy: 'model' })
    expect(byModel.rows.map(row => row.key)).toEqual([STREAMING_STT_MODEL, 'chat', STREAMING_TTS_MODEL, 'voice', 'whisper'].sort())
    expect(byModel.rows.reduce((sum, row) => sum + row.flux, 0)).toBe(debited)
    expect(byModel.rows.find(row => row.key === 'chat')).toMatchObject({ calls: 2, characters: 0, seconds: 0 })
    expect(byModel.rows.find(row => row.key === 'voice')).toMatchObject({ calls: 1, flux: 2, characters: 250 })
  })

  it('pages by cursor through the same calls, and filters by kind', async () => {
    const { items: all } = await sdk.usage.calls.query({})
    const seen: string[] = []
    let cursor: string | null | undefined
    let pages = 0
    do {
      const page = await sdk.usage.calls.query({ limit: 4, cursor })
      seen.push(...page.items.map(item => item.id))
      cursor = page.nextCursor
      pages++
    } while (cursor)
    expect(pages).toBe(2)
    expect(seen).toEqual(all.map(item => item.id))

    for (const kind of made) {
      const { items } = await sdk.usage.calls.query({ kind: kind as 'llm' })
      expect(items.map(item => item.kind)).toEqual([kind])
    }
  })

  it('refuses a backwards or over-long range, and a cursor it did not issue, with 400 naming the field', async () => {
    const backwards = await failure(sdk.usage.summary.query({ from: '2025-03-02', to: '2025-03-01', groupBy: 'day' }))
    expect(backwards.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_RANGE', details: { field: 'from' } })
    const long = await failure(sdk.usage.summary.query({ from: '2024-01-01', to: '2025-01-01', groupBy: 'model' }))
    expect(long.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_RANGE', details: { field: 'to' } })
    // 366 days (2024 is a leap year) is the longest range.
    expect((await sdk.usage.summary.query({ from: '2024-01-01', to: '2024-12-31', groupBy: 'model' })).rows).toEqual([])
    const cursor = await failure(sdk.usage.calls.query({ cursor: 'bm90LWEtY3Vyc29y' }))
    expect(cursor.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CURSOR' })
    const limit = await failure(sdk.usage.calls.query({ limit: 101 }))
    expect(limit.data?.httpStatus).toBe(400)
  })

  it('shows another user none of these calls', async () => {
    const other = sdkOf(await createVerifiedUser(server))
    expect(await other.usage.calls.query({})).toEqual({ items: [], nextCursor: null })
    expect(await other.usage.summary.query({ from: today(), to: today(), groupBy: 'model' })).toEqual({ rows: [] })
    const { nextCursor } = await sdk.usage.calls.query({ limit: 1 })
    expect((await other.usage.calls.query({ cursor: nextCursor })).items).toEqual([])
  })
})
