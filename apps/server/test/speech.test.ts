import { randomUUID } from 'node:crypto'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { keys, silentLogger, type ConfigValue, type Logger } from '@airi/api'
import { createAiriClient } from '@airi/sdk'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

type TtsModel = ConfigValue<'TTS_UPSTREAMS'>['models'][string]

let server: TestServer
let fake: FakeTtsUpstream
let admin: ReturnType<typeof createAiriClient>
/** What the services logged as warnings. */
const warnings: Array<{ obj: object, msg?: string }> = []
const logger: Logger = { ...silentLogger, warn: (obj, msg) => warnings.push({ obj, msg }) }

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer({ logger }), startFakeTtsUpstream()])
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
})
afterAll(async () => {
  await server.close()
  await fake.close()
})

/** Keys sealed the way an operator does it: by the server, under the alias and key id. */
async function seal(alias: string, apiKeys: string[]) {
  return Promise.all(apiKeys.map(async (apiKey, index) => {
    const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: alias, keyId: `k${index}`, apiKey })
    return { id: keyId, ciphertext }
  }))
}

interface ModelSpec extends Partial<Omit<TtsModel, 'keys'>> {
  keys?: string[]
}

/** Points a fresh alias (so caches, rotation and cooldowns start clean) at the fake, through admin.config.set. */
async function configure(spec: ModelSpec = {}, { defaultModel = true }: { defaultModel?: boolean } = {}): Promise<string> {
  fake.reset()
  const alias = `voice-${randomUUID().slice(0, 8)}`
  const adapter = spec.adapter ?? 'openai-compatible'
  const entry = {
    adapter,
    baseUrl: adapter === 'azure' ? fake.azureUrl : fake.url,
    model: adapter === 'azure' ? 'riff-8khz-16bit-mono-pcm' : 'upstream-tts',
    ...spec,
    keys: await seal(alias, spec.keys ?? ['sk-tts-1']),
  }
  await admin.admin.config.set.mutate({ key: 'TTS_UPSTREAMS', value: { ...(defaultModel ? { defaultModel: alias } : {}), models: { [alias]: entry } } })
  return alias
}

const openai = (token: string) => new OpenAI({ apiKey: token, baseURL: `${server.baseUrl}/api/v1`, maxRetries: 0 })

function speak(token: string | undefined, body: unknown, path = '/api/v1/audio/speech'): Promise<Response> {
  return fetch(`${server.baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  })
}

function get(token: string | undefined, path: string): Promise<Response> {
  return fetch(`${server.baseUrl}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
}

interface OpenAiErrorBody {
  error: { message: string, type: string, code: string, param: string | null, details?: Record<string, unknown> }
}

async function errorOf(response: Response): Promise<{ status: number } & OpenAiErrorBody['error']> {
  const body = await response.json() as OpenAiErrorBody
  return { status: response.status, ...body.error }
}

const balance = (user: TestUser) => server.api.services.billing.getBalance(user.id)
const debt = (user: TestUser) => server.api.services.speech.meter.peekDebt(user.id)
const held = (user: TestUser) => server.api.adapters.counters.peekDebt(keys.fluxMeterHeld(user.id, 'tts'))
const speechRequests = () => fake.requests.filter(request => request.method === 'POST')

/** The Flux the `tts` meter debited from `user`, from the ledger. */
async function meterLedger(user: TestUser) {
  return server.database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', user.id).where('request_id', 'like', 'meter:tts:%').execute()
}

/** Leaves `user` with exactly `flux` Flux. */
async function setBalance(user: TestUser, flux: number): Promise<void> {
  const current = await balance(user)
  if (current > flux)
    await server.api.services.billing.debit({ userId: user.id, amount: current - flux, requestId: `test:${randomUUID()}`, description: 'test setup' })
}

describe('before TTS_UPSTREAMS is set', () => {
  it('answers 503 naming the entry, while the rest keeps working', async () => {
    const user = await createVerifiedUser(server)
    for (const response of [await speak(user.token, { model: 'x', input: 'hi', voice: 'alloy' }), await get(user.token, '/api/v1/audio/voices'), await get(user.token, '/api/v1/audio/models')]) {
      const error = await errorOf(response)
      expect(error).toMatchObject({ status: 503, code: 'CONFIG_NOT_SET', details: { key: 'TTS_UPSTREAMS' } })
      expect(error.message).toContain('TTS_UPSTREAMS')
    }
    expect(await balance(user)).toBe(100)
    expect((await fetch(`${server.baseUrl}/readyz`)).status).toBe(200)
  })

  it('answers 503 naming STREAMING_TTS_UPSTREAM on the streaming catalogue', async () => {
    const user = await createVerifiedUser(server)
    for (const path of ['/api/v1/audio/voices/streaming', '/api/v1/audio/models/streaming'])
      expect(await errorOf(await get(user.token, path))).toMatchObject({ status: 503, code: 'CONFIG_NOT_SET', details: { key: 'STREAMING_TTS_UPSTREAM' } })
  })
})

describe('POST /api/v1/audio/speech', () => {
  let user: TestUser
  beforeAll(async () => {
    user = await createVerifiedUser(server)
  })

  it('returns the OpenAI-compatible upstream\'s audio byte for byte with its content type, through the official openai client', async () => {
    const alias = await configure()
    const response = await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'Hello there, traveller.', response_format: 'wav' })
    const audio = Buffer.from(await response.arrayBuffer())

    expect(response.headers.get('content-type')).toBe('audio/wav')
    expect(speechRequests()).toHaveLength(1)
    const upstream = speechRequests()[0]!
    expect(audio.equals(upstream.audio!)).toBe(true)
    expect(audio.subarray(0, 4).toString('ascii')).toBe('RIFF')
    expect(upstream).toMatchObject({ key: 'sk-tts-1', path: '/v1/audio/speech', body: { model: 'upstream-tts', voice: 'alloy', input: 'Hello there, traveller.', response_format: 'wav' } })

    const pcm = await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'raw', response_format: 'pcm' })
    expect(pcm.headers.get('content-type')).toBe('audio/pcm')
    expect(Buffer.from(await pcm.arrayBuffer()).equals(speechRequests()[1]!.audio!)).toBe(true)
  })

  it('returns the Azure upstream\'s audio byte for byte, after sending it well-formed SSML with the text escaped', async () => {
    const alias = await configure({ adapter: 'azure', keys: ['az-key-1'] })
    const input = 'Tom & Jerry say "hi" <b>loud</b> and \'bye\' ]]> &amp;'
    const response = await speak(user.token, { model: alias, voice: 'en-US-JennyNeural', input, speed: 1.5 })
    expect(response.status).toBe(200)
    const audio = Buffer.from(await response.arrayBuffer())

    expect(response.headers.get('content-type')).toBe('audio/wav')
    const upstream = speechRequests()[0]!
    expect(audio.equals(upstream.audio!)).toBe(true)
    expect(upstream.path).toBe('/cognitiveservices/v1')
    expect(upstream.key).toBe('az-key-1')
    expect(upstream.headers['x-microsoft-outputformat']).toBe('riff-8khz-16bit-mono-pcm')
    // The fake parsed the SSML with an XML parser (malformed XML would have been a 400): the text came through unchanged.
    expect(upstream.ssml).toEqual({ voice: 'en-US-JennyNeural', lang: 'en-US', text: input, rate: '1.5' })
    expect(upstream.raw).toContain('Tom &amp; Jerry say &quot;hi&quot; &lt;b&gt;loud&lt;/b&gt; and &apos;bye&apos; ]]&gt; &amp;amp;')
  })

  it('refuses a malicious Azure voice id with 400 before any upstream call or billing', async () => {
    const alias = await configure({ adapter: 'azure' })
    const before = await balance(user)
    for (const voice of ['en-US-JennyNeural"><voice name="x', 'en-US-Jenny Neural', '../../etc/passwd', '<script>', 'en-US-JennyNeural\' xml:lang=\'x', 'alloy']) {
      const error = await errorOf(await speak(user.token, { model: alias, voice, input: 'hello' }))
      expect(error).toMatchObject({ status: 400, code: 'INVALID_VOICE', param: 'voice' })
    }
    expect(fake.requests).toHaveLength(0)
    expect(await balance(user)).toBe(before)
  })

  it('rotates over the keys and skips a key that answered 429 while it cools down', async () => {
    const alias = await configure({ keys: ['sk-a', 'sk-b'] })
    await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'one' })
    await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'two' })
    expect(speechRequests().map(request => request.key)).toEqual(['sk-a', 'sk-b'])

    fake.behave(request => request.key === 'sk-a' ? { kind: 'status', status: 429 } : { kind: 'normal' })
    await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'three' })
    await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'four' })
    await openai(user.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'five' })
    // Call three started at sk-a (429) and fell back to sk-b; sk-a then cooled down and was skipped.
    expect(speechRequests().map(request => request.key)).toEqual(['sk-a', 'sk-b', 'sk-a', 'sk-b', 'sk-b', 'sk-b'])
  })

  it('bills nothing when the upstream fails, and answers 502', async () => {
    const unlucky = await createVerifiedUser(server)
    const alias = await configure({ keys: ['sk-a', 'sk-b'] })
    fake.behave(() => ({ kind: 'status', status: 500 }))
    const error = await openai(unlucky.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'a'.repeat(1500) }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect(error.status).toBe(502)
    expect(error.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(speechRequests()).toHaveLength(2)

    fake.behave(() => ({ kind: 'drop' }))
    expect((await speak(unlucky.token, { model: alias, voice: 'alloy', input: 'b'.repeat(1500) })).status).toBe(502)

    expect(await balance(unlucky)).toBe(100)
    expect(await debt(unlucky)).toBe(0)
    expect(await held(unlucky)).toBe(0)
    expect(await meterLedger(unlucky)).toEqual([])
  })

  it('passes an upstream\'s refusal of the request through without trying other keys', async () => {
    const alias = await configure({ keys: ['sk-a', 'sk-b'] })
    fake.behave(() => ({ kind: 'status', status: 400, body: { error: { message: 'Unknown voice nobody' } } }))
    const error = await errorOf(await speak(user.token, { model: alias, voice: 'nobody', input: 'hi' }))
    expect(error).toMatchObject({ status: 400, code: 'UPSTREAM_REJECTED', message: 'Unknown voice nobody' })
    expect(speechRequests()).toHaveLength(1)
  })

  it('answers 402 INSUFFICIENT_FLUX without an upstream call when the user cannot afford the input', async () => {
    const poor = await createVerifiedUser(server)
    await setBalance(poor, 1)
    const alias = await configure()
    // 1 Flux buys 1 000 characters (FLUX_PER_1K_CHARS_TTS = 1).
    const error = await openai(poor.token).audio.speech.create({ model: alias, voice: 'alloy', input: 'x'.repeat(1001) }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(error.status).toBe(402)
    expect(error.code).toBe('INSUFFICIENT_FLUX')
    await setBalance(poor, 0)
    expect((await errorOf(await speak(poor.token, { model: alias, voice: 'alloy', input: 'x' })))).toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })
    expect(fake.requests).toHaveLength(0)
    expect(await held(poor)).toBe(0)
  })
})

describe('billing', () => {
  it('debits floor((debt + C) / 1000) Flux for calls totalling C characters and keeps the rest as meter debt', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure()
    // Characters are code points: each kana and each emoji counts once.
    const inputs = ['a'.repeat(400), 'あ'.repeat(650), '🎤'.repeat(250), 'b'.repeat(900), 'c'.repeat(383)]
    for (const input of inputs)
      expect((await speak(user.token, { model: alias, voice: 'alloy', input })).status).toBe(200)
    // C = 2 583.
    expect(await balance(user)).toBe(98)
    expect(await debt(user)).toBe(583)

    // The debt carries over: 583 + 1 500 = 2 083.
    for (const input of ['d'.repeat(700), 'e'.repeat(800)])
      expect((await speak(user.token, { model: alias, voice: 'alloy', input })).status).toBe(200)
    expect(await balance(user)).toBe(96)
    expect(await debt(user)).toBe(83)
    const rows = await meterLedger(user)
    expect(rows.reduce((sum, row) => sum + row.amount, 0)).toBe(4)
    expect(rows.every(row => row.type === 'debit' && (row.metadata as { unbilled?: unknown } | null)?.unbilled === undefined)).toBe(true)
    expect(await held(user)).toBe(0)
  })

  it('follows FLUX_PER_1K_CHARS_TTS', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure()
    await admin.admin.config.set.mutate({ key: 'FLUX_PER_1K_CHARS_TTS', value: 10 })
    try {
      // 10 Flux per 1 000 characters: one Flux per 100.
      expect((await speak(user.token, { model: alias, voice: 'alloy', input: 'x'.repeat(250) })).status).toBe(200)
      expect(await balance(user)).toBe(98)
      expect(await debt(user)).toBe(50)
    }
    finally {
      await admin.admin.config.set.mutate({ key: 'FLUX_PER_1K_CHARS_TTS', value: 1 })
    }
  })

  it('20 concurrent calls by one user never overdraw: only what the balance covers reaches the upstream', async () => {
    const user = await createVerifiedUser(server)
    await setBalance(user, 2)
    const alias = await configure()
    // Every answer waits until all 20 calls have either reached the upstream or been refused, so all are in flight at once.
    let refused = 0
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    fake.behave(() => ({ kind: 'normal', hold }))
    const calls = Array.from({ length: 20 }, () => speak(user.token, { model: alias, voice: 'alloy', input: 'z'.repeat(300) }).then((response) => {
      if (response.status === 402)
        refused++
      return response
    }))
    await until(() => refused + speechRequests().length === 20, 'every call to be refused or at the upstream')
    release()
    const responses = await Promise.all(calls)

    const statuses = responses.map(response => response.status)
    // 2 Flux cover 2 000 characters: six calls of 300 at once, and not a seventh.
    expect(statuses.filter(status => status === 200)).toHaveLength(6)
    expect(statuses.filter(status => status === 402)).toHaveLength(14)
    expect(speechRequests()).toHaveLength(6)
    for (const response of responses.filter(response => response.status === 402))
      expect((await response.json() as OpenAiErrorBody).error.code).toBe('INSUFFICIENT_FLUX')

    // 1 800 characters: 1 Flux debited, 800 owed, nothing drained or left unbilled.
    expect(await balance(user)).toBe(1)
    expect(await debt(user)).toBe(800)
    expect(await held(user)).toBe(0)
    const rows = await meterLedger(user)
    expect(rows.map(row => row.amount)).toEqual([1])
    expect(rows[0]!.balance_after).toBe(1)
  })
})

describe('input checks', () => {
  let user: TestUser
  let alias: string
  beforeAll(async () => {
    user = await createVerifiedUser(server)
    alias = await configure()
  })

  it('401 without a valid token, on every route', async () => {
    for (const response of [
      await speak(undefined, { model: alias, input: 'hi', voice: 'alloy' }),
      await speak('not-a-token', { model: alias, input: 'hi', voice: 'alloy' }),
      await get(undefined, '/api/v1/audio/voices'),
      await get(undefined, '/api/v1/audio/models'),
      await get(undefined, '/api/v1/audio/voices/streaming'),
      await get(undefined, '/api/v1/audio/models/streaming'),
    ])
      expect(await errorOf(response)).toMatchObject({ status: 401, code: 'UNAUTHORIZED' })
    expect(fake.requests).toHaveLength(0)
  })

  it.each([
    ['voice', { model: 'M', input: 'hi' }],
    ['input', { model: 'M', input: '', voice: 'alloy' }],
    ['input', { model: 'M', input: 'a\u0000b', voice: 'alloy' }],
    ['model', { input: 'hi', voice: 'alloy' }],
    ['speed', { model: 'M', input: 'hi', voice: 'alloy', speed: 10 }],
    ['response_format', { model: 'M', input: 'hi', voice: 'alloy', response_format: 'ogg' }],
  ])('400 naming %s for a bad body', async (field, body) => {
    const error = await errorOf(await speak(user.token, JSON.parse(JSON.stringify(body).replace('"M"', JSON.stringify(alias)))))
    expect(error).toMatchObject({ status: 400, code: 'BAD_REQUEST', param: field })
    expect(Object.keys(error.details!.fieldErrors as object)).toContain(field)
    expect(fake.requests).toHaveLength(0)
  })

  it('400 for input longer than TTS_MAX_INPUT_CHARS (4 096 by default), counted in characters', async () => {
    const before = await balance(user)
    expect(await errorOf(await speak(user.token, { model: alias, voice: 'alloy', input: 'a'.repeat(4097) }))).toMatchObject({ status: 400, code: 'INPUT_TOO_LONG', param: 'input' })
    await admin.admin.config.set.mutate({ key: 'TTS_MAX_INPUT_CHARS', value: 10 })
    try {
      expect((await speak(user.token, { model: alias, voice: 'alloy', input: '🎤'.repeat(10) })).status).toBe(200)
      expect(await errorOf(await speak(user.token, { model: alias, voice: 'alloy', input: 'a'.repeat(11) }))).toMatchObject({ status: 400, code: 'INPUT_TOO_LONG' })
    }
    finally {
      await admin.admin.config.set.mutate({ key: 'TTS_MAX_INPUT_CHARS', value: 4096 })
    }
    expect(speechRequests()).toHaveLength(1)
    expect(await balance(user)).toBe(before)
    expect(await debt(user)).toBe(10)
  })

  it('404 for a model that is not configured, including object property names', async () => {
    fake.reset()
    for (const model of ['nope', 'constructor', '__proto__', 'toString'])
      expect(await errorOf(await speak(user.token, { model, voice: 'alloy', input: 'hi' }))).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND', param: 'model' })
    expect(await errorOf(await get(user.token, '/api/v1/audio/voices?model=constructor'))).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
    expect(fake.requests).toHaveLength(0)
  })

  it('the old /api/v1/openai/audio/* paths answer 404', async () => {
    fake.reset()
    expect((await speak(user.token, { model: alias, voice: 'alloy', input: 'hi' }, '/api/v1/openai/audio/speech')).status).toBe(404)
    for (const path of ['voices', 'models', 'voices/streaming', 'models/streaming'])
      expect((await get(user.token, `/api/v1/openai/audio/${path}`)).status).toBe(404)
    expect(fake.requests).toHaveLength(0)
  })
})

describe('GET /api/v1/audio/voices and /models', () => {
  let user: TestUser
  beforeAll(async () => {
    user = await createVerifiedUser(server)
  })

  it('caches a model\'s voices for 600 s: two calls, one upstream call', async () => {
    const alias = await configure({ recommendedVoices: ['alloy', 'gone'] })
    const first = await get(user.token, `/api/v1/audio/voices?model=${alias}`)
    expect(first.status).toBe(200)
    const body = await first.json()
    expect(body).toEqual({
      voices: [
        { id: 'alloy', name: 'Alloy', languages: ['en-US'], gender: 'female' },
        { id: 'en-US-JennyNeural', name: 'Jenny', languages: ['en-US'], gender: 'female' },
        { id: 'ja-JP-NanamiNeural', name: 'Nanami', languages: ['ja-JP'], gender: 'female' },
      ],
      // Only recommended voices the list has.
      recommended: ['alloy'],
    })
    // No model: the default one.
    expect(await (await get(user.token, '/api/v1/audio/voices')).json()).toEqual(body)
    expect(fake.requests.map(request => `${request.method} ${request.path} ${request.key}`)).toEqual(['GET /v1/voices sk-tts-1'])
    expect(await server.api.adapters.cache.get(keys.ttsVoices(alias))).not.toBeNull()
  })

  it('does not cache an upstream error', async () => {
    const alias = await configure()
    fake.behave(() => ({ kind: 'status', status: 503 }))
    expect(await errorOf(await get(user.token, `/api/v1/audio/voices?model=${alias}`))).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(await server.api.adapters.cache.get(keys.ttsVoices(alias))).toBeNull()

    fake.behave(() => ({ kind: 'normal' }))
    expect((await get(user.token, `/api/v1/audio/voices?model=${alias}`)).status).toBe(200)
    expect((await get(user.token, `/api/v1/audio/voices?model=${alias}`)).status).toBe(200)
    expect(fake.requests.filter(request => request.path === '/v1/voices')).toHaveLength(2)
  })

  it('lists Azure\'s voices, and serves a static list without asking the upstream', async () => {
    const azure = await configure({ adapter: 'azure' })
    const { voices } = await (await get(user.token, `/api/v1/audio/voices?model=${azure}`)).json() as { voices: Array<{ id: string }> }
    // Azure lists only neural voices by their short names.
    expect(voices).toEqual([
      { id: 'en-US-JennyNeural', name: 'Jenny', languages: ['en-US'], gender: 'female' },
      { id: 'ja-JP-NanamiNeural', name: 'Nanami', languages: ['ja-JP'], gender: 'female' },
    ])
    expect(fake.requests.map(request => `${request.path} ${request.key}`)).toEqual(['/cognitiveservices/voices/list sk-tts-1'])

    const fixed = await configure({ voices: [{ id: 'v1', name: 'Voice one' }, { id: 'v2' }], recommendedVoices: ['v2'] })
    expect(await (await get(user.token, `/api/v1/audio/voices?model=${fixed}`)).json()).toEqual({ voices: [{ id: 'v1', name: 'Voice one' }, { id: 'v2', name: 'v2' }], recommended: ['v2'] })
    expect(fake.requests).toHaveLength(0)
  })

  it('lists the aliases and the default one', async () => {
    const alias = await configure()
    expect(await (await get(user.token, '/api/v1/audio/models')).json()).toEqual({ models: [{ id: alias }], default: alias })
  })
})

describe('the streaming catalogue', () => {
  let user: TestUser
  beforeAll(async () => {
    user = await createVerifiedUser(server)
  })

  async function configureStreaming(url = fake.streamingUrl): Promise<void> {
    fake.reset()
    await admin.admin.config.set.mutate({
      key: 'STREAMING_TTS_UPSTREAM',
      value: { url, keys: await seal('streaming-tts', ['sk-stream']), models: [{ id: 'seed-tts-2.0', name: 'Seed TTS 2.0' }, { id: 'seed-tts-1.0' }] },
    })
  }

  it('lists the bridge\'s voices and the configured models', async () => {
    await configureStreaming()
    const voices = await get(user.token, '/api/v1/audio/voices/streaming?model=seed-tts-2.0')
    expect(voices.status).toBe(200)
    expect((await voices.json() as { voices: Array<{ id: string }> }).voices.map(voice => voice.id)).toEqual(['alloy', 'en-US-JennyNeural', 'ja-JP-NanamiNeural'])
    expect(fake.requests).toHaveLength(1)
    expect(fake.requests[0]).toMatchObject({ path: '/api/voices', key: 'sk-stream' })
    expect(Object.fromEntries(fake.requests[0]!.query)).toEqual({ provider: 'volcengine', model: 'seed-tts-2.0' })

    expect(await (await get(user.token, '/api/v1/audio/models/streaming')).json()).toEqual({
      models: [{ id: 'seed-tts-2.0', name: 'Seed TTS 2.0' }, { id: 'seed-tts-1.0', name: 'seed-tts-1.0' }],
      default: 'seed-tts-2.0',
    })
  })

  it('degrades to an empty list when the bridge fails, is unreachable or answers nonsense', async () => {
    await configureStreaming()
    for (const behavior of [{ kind: 'status', status: 500 }, { kind: 'drop' }, { kind: 'status', status: 200, body: { nothing: true } }] as const) {
      fake.behave(() => behavior)
      warnings.length = 0
      const response = await get(user.token, '/api/v1/audio/voices/streaming')
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ voices: [] })
      expect(warnings.map(warning => warning.msg)).toContain('streaming TTS voice catalogue unavailable; answering an empty list')
      // Which key failed is logged by id, never by value.
      expect(JSON.stringify(warnings, (_, value: unknown) => value instanceof Error ? value.message : value)).not.toContain('sk-stream')
    }

    // A bridge nobody listens on.
    const closed = await startFakeTtsUpstream()
    await closed.close()
    await configureStreaming(closed.streamingUrl)
    const response = await get(user.token, '/api/v1/audio/voices/streaming')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ voices: [] })
  })
})
