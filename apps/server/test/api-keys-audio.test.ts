import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { keys } from '@airi/api'
import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeSttUpstream, type FakeSttUpstream } from '@airi/tooling/fakes/stt-upstream'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Personal API keys on the speech and transcription gateways (SPEC §4.17,
 * docs/gateway.md#personal-api-keys): a key's calls are billed to the key (its own
 * meter debt, its id on every ledger and usage row) and kept within its budget
 * before anything reaches the upstream, exactly under concurrency.
 */

let server: TestServer
let tts: FakeTtsUpstream
let stt: FakeSttUpstream

/** 10 Flux per 1 000 characters: one Flux per 100 characters. */
const TTS_PRICE = 10
/** tone.wav is 2 500 ms of audio. */
const TONE_MS = 2500

beforeAll(async () => {
  ;[tts, stt] = await Promise.all([startFakeTtsUpstream(), startFakeSttUpstream()])
  // An hour's window, so no rate-limit window rolls over mid-test.
  server = await startTestServer({ rateLimits: { windowSeconds: 3600 } })
  const sealed = (alias: string, apiKey: string) => {
    const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey(alias, 'k0', apiKey)
    return [{ id: keyId, ciphertext }]
  }
  await server.api.services.config.set('TTS_UPSTREAMS', { defaultModel: 'voice', models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'upstream-tts', keys: sealed('voice', 'sk-tts') } } })
  await server.api.services.config.set('STT_UPSTREAMS', { defaultModel: 'whisper', models: { whisper: { adapter: 'openai-compatible', baseUrl: stt.url, model: 'upstream-whisper', keys: sealed('whisper', 'sk-stt') } } })
  await server.api.services.config.set('FLUX_PER_1K_CHARS_TTS', TTS_PRICE)
})
afterAll(async () => {
  await server?.close()
  await Promise.all([tts?.close(), stt?.close()])
})

const sdk = (user: TestUser): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
const openai = (token: string) => new OpenAI({ apiKey: token, baseURL: `${server.baseUrl}/api/v1`, maxRetries: 0 })

type CreateInput = Parameters<AiriClient['apiKeys']['create']['mutate']>[0]
const makeKey = (user: TestUser, input: Partial<CreateInput> = {}) => sdk(user).apiKeys.create.mutate({ name: 'Audio script', scopes: ['speech', 'transcription'], ...input })

const tone = readFileSync(new URL('../../../tooling/fixtures/audio/tone.wav', import.meta.url))

async function speak(token: string, characters: number): Promise<void> {
  const response = await openai(token).audio.speech.create({ model: 'voice', voice: 'alloy', input: 'k'.repeat(characters) })
  await response.arrayBuffer()
}
async function transcribe(token: string): Promise<void> {
  await openai(token).audio.transcriptions.create({ model: 'whisper', file: await toFile(tone, 'tone.wav', { type: 'audio/wav' }) })
}

/** Flux per minute of audio that makes one Flux `msPerFlux` milliseconds. */
const sttPrice = (msPerFlux: number) => server.api.services.config.set('FLUX_PER_MINUTE_STT', 60_000 / msPerFlux)

/** The meter's ledger rows of `user` (oldest first): amount and key. */
async function meterRows(user: TestUser, meter: 'tts' | 'stt') {
  return server.database.db.selectFrom('flux_transaction').select(['amount', 'api_key_id']).where('user_id', '=', user.id)
    .where('request_id', 'like', `meter:${meter}:%`).orderBy('seq').execute()
}
/** The usage rows of `user` (oldest first): Flux and key. */
async function usageRows(user: TestUser, kind: 'tts' | 'stt') {
  return server.database.db.selectFrom('metered_usage').select(['flux', 'api_key_id']).where('user_id', '=', user.id).where('kind', '=', kind)
    .orderBy('created_at').orderBy('id').execute()
}
/** What the ledger says `keyId` spent: its debits. */
async function ledgerSpent(keyId: string): Promise<number> {
  const rows = await server.database.db.selectFrom('flux_transaction').select('amount').where('api_key_id', '=', keyId).where('type', '=', 'debit').execute()
  return rows.reduce((sum, row) => sum + row.amount, 0)
}
const held = (user: TestUser, meter: string, keyId?: string) =>
  server.api.adapters.counters.peekDebt(keyId ? keys.fluxMeterKeyHeld(user.id, meter, keyId) : keys.fluxMeterHeld(user.id, meter))

/** The status and error code of a call that was expected to be refused (OpenAI's error shape, as the official client reads it). */
const outcome = (call: Promise<void>) => call.then(() => ({ status: 200, code: null as string | null }), (error: unknown) => {
  if (!(error instanceof OpenAI.APIError))
    throw error
  return { status: error.status ?? 0, code: (error.error as { code?: string } | undefined)?.code ?? null }
})

/**
 * `count` calls at once, each answer held at the upstream until every call has reached
 * it (`reached`) or been refused, so all are in flight together; their outcomes.
 */
async function allAtOnce(count: number, call: () => Promise<void>, holdAnswers: (hold: Promise<void>) => void, reached: () => number) {
  let refused = 0
  let release!: () => void
  holdAnswers(new Promise<void>((resolve) => {
    release = resolve
  }))
  const calls = Array.from({ length: count }, () => outcome(call()).then((result) => {
    if (result.status === 402)
      refused++
    return result
  }))
  await until(() => refused + reached() === count, 'every call to be refused or at the upstream')
  release()
  return Promise.all(calls)
}

describe('a key\'s calls are billed to the key', () => {
  it('speech: the key\'s own debt, its id on every ledger and usage row, and usage.calls names it', async () => {
    const user = await createVerifiedUser(server)
    const key = await makeKey(user)
    const meter = server.api.services.speech.meter

    await speak(key.key, 250)
    expect(await meter.peekDebt(user.id, key.id)).toBe(50)
    // The session's call starts its own debt: the key's 50 characters are not settled by it.
    await speak(user.token, 130)
    expect(await meter.peekDebt(user.id)).toBe(30)
    expect(await meter.peekDebt(user.id, key.id)).toBe(50)
    // Nor does the key's next call settle the session's 30.
    await speak(key.key, 50)
    expect(await meter.peekDebt(user.id, key.id)).toBe(0)
    expect(await meter.peekDebt(user.id)).toBe(30)

    expect(await meterRows(user, 'tts')).toEqual([{ amount: 2, api_key_id: key.id }, { amount: 1, api_key_id: null }, { amount: 1, api_key_id: key.id }])
    expect((await usageRows(user, 'tts')).map(row => ({ flux: Number(row.flux), key: row.api_key_id })))
      .toEqual([{ flux: 2, key: key.id }, { flux: 1, key: null }, { flux: 1, key: key.id }])
    expect(await server.api.services.billing.getBalance(user.id)).toBe(96)

    const { items } = await sdk(user).usage.calls.query({ kind: 'tts' })
    expect(items.map(item => ({ characters: item.characters, flux: item.flux, apiKey: item.apiKey }))).toEqual([
      { characters: 50, flux: 1, apiKey: { id: key.id, name: 'Audio script', prefix: key.prefix } },
      { characters: 130, flux: 1, apiKey: undefined },
      { characters: 250, flux: 2, apiKey: { id: key.id, name: 'Audio script', prefix: key.prefix } },
    ])
    expect((await sdk(user).apiKeys.list.query()).find(item => item.id === key.id)?.spent).toBe(3)
  })

  it('transcription: the key\'s own debt, its id on the usage row of a call that settled nothing and on the one that settled', async () => {
    const user = await createVerifiedUser(server)
    const key = await makeKey(user)
    const meter = server.api.services.transcription.meter
    // One Flux per 4 000 ms: a 2 500 ms file settles nothing alone, two of them one Flux.
    await sttPrice(4000)

    await transcribe(key.key)
    await transcribe(user.token)
    expect(await meter.peekDebt(user.id, key.id)).toBe(TONE_MS)
    expect(await meter.peekDebt(user.id)).toBe(TONE_MS)
    await transcribe(key.key)
    expect(await meter.peekDebt(user.id, key.id)).toBe(2 * TONE_MS - 4000)
    expect(await meter.peekDebt(user.id)).toBe(TONE_MS)

    expect(await meterRows(user, 'stt')).toEqual([{ amount: 1, api_key_id: key.id }])
    expect((await usageRows(user, 'stt')).map(row => ({ flux: Number(row.flux), key: row.api_key_id })))
      .toEqual([{ flux: 0, key: key.id }, { flux: 0, key: null }, { flux: 1, key: key.id }])
    const { items } = await sdk(user).usage.calls.query({ kind: 'stt' })
    expect(items.map(item => item.apiKey?.id ?? null)).toEqual([key.id, null, key.id])
  })
})

describe('a key\'s budget holds on speech and transcription', () => {
  it('speech: of 20 parallel calls, exactly those the budget covers reach the upstream; the rest get 402 KEY_BUDGET_EXCEEDED', async () => {
    const user = await createVerifiedUser(server)
    // 200 characters are 2 Flux: a budget of 10 covers five calls.
    const key = await makeKey(user, { scopes: ['llm', 'speech'], budget: { flux: 10, period: 'total' } })
    tts.reset()
    const upstream = () => tts.requests.filter(request => request.method === 'POST')
    const results = await allAtOnce(20, () => speak(key.key, 200), hold => tts.behave(() => ({ kind: 'normal', hold })), () => upstream().length)

    expect(results.filter(result => result.status === 200)).toHaveLength(5)
    expect(results.filter(result => result.status !== 200)).toEqual(Array.from({ length: 15 }, () => ({ status: 402, code: 'KEY_BUDGET_EXCEEDED' })))
    expect(upstream()).toHaveLength(5)

    const listed = (await sdk(user).apiKeys.list.query()).find(item => item.id === key.id)!
    expect(listed.spent).toBe(10)
    expect(await ledgerSpent(key.id)).toBe(10)
    expect(await server.api.services.speech.meter.peekDebt(user.id, key.id)).toBe(0)
    expect(await held(user, 'tts', key.id)).toBe(0)
    expect(await held(user, 'tts')).toBe(0)

    // Spent: the next call is refused before the upstream, and the balance and ledger stay as they are.
    const balance = await server.api.services.billing.getBalance(user.id)
    expect(await outcome(speak(key.key, 1))).toEqual({ status: 402, code: 'KEY_BUDGET_EXCEEDED' })
    expect(upstream()).toHaveLength(5)
    expect(await server.api.services.billing.getBalance(user.id)).toBe(balance)
  })

  it('transcription: 20 parallel calls, only what the budget covers is served', async () => {
    const user = await createVerifiedUser(server)
    await server.api.services.billing.credit({ userId: user.id, amount: 1000, requestId: `test:${randomUUID()}`, description: 'test setup' })
    // One Flux per 100 ms: a 2 500 ms file is 25 Flux, and a budget of 60 covers two.
    await sttPrice(100)
    const key = await makeKey(user, { budget: { flux: 60, period: 'day' } })
    stt.reset()
    const results = await allAtOnce(20, () => transcribe(key.key), hold => stt.behave(() => ({ kind: 'normal', hold })), () => stt.requests.length)

    expect(results.filter(result => result.status === 200)).toHaveLength(2)
    expect(results.filter(result => result.status !== 200)).toEqual(Array.from({ length: 18 }, () => ({ status: 402, code: 'KEY_BUDGET_EXCEEDED' })))
    expect(stt.requests).toHaveLength(2)
    expect((await sdk(user).apiKeys.list.query()).find(item => item.id === key.id)!.spent).toBe(50)
    expect(await ledgerSpent(key.id)).toBe(50)
    expect(await held(user, 'stt', key.id)).toBe(0)
    expect(await held(user, 'stt')).toBe(0)
  })

  it('transcription: a file longer than the budget allows is refused before the upstream, holding and billing nothing', async () => {
    const user = await createVerifiedUser(server)
    await sttPrice(100)
    // 24 Flux: one Flux short of the file, though the balance (100) would pay for it.
    const key = await makeKey(user, { scopes: ['transcription'], budget: { flux: 24, period: 'month' } })
    stt.reset()

    expect(await outcome(transcribe(key.key))).toEqual({ status: 402, code: 'KEY_BUDGET_EXCEEDED' })
    expect(stt.requests).toEqual([])
    expect(await server.api.services.billing.getBalance(user.id)).toBe(100)
    expect(await meterRows(user, 'stt')).toEqual([])
    expect(await held(user, 'stt', key.id)).toBe(0)
    expect(await held(user, 'stt')).toBe(0)
    // The session is not bound by the key's budget.
    await transcribe(user.token)
    expect(stt.requests).toHaveLength(1)
  })
})
