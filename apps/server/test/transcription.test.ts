import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { keys, type ConfigValue } from '@airi/api'
import { createAiriClient } from '@airi/sdk'
import { startFakePosthog, type FakePosthog } from '@airi/tooling/fakes/posthog'
import { CLAIMED_DURATION_SECONDS, DEFAULT_TRANSCRIPT, startFakeSttUpstream, type FakeSttUpstream } from '@airi/tooling/fakes/stt-upstream'
import { createTestMeter } from '@airi/tooling/test/metrics'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

type SttModel = ConfigValue<'STT_UPSTREAMS'>['models'][string]

const MiB = 1024 * 1024
/** A price that makes one Flux 100 ms of audio, so a 2.5 s file costs whole Flux. */
const PRICE = 600
const MS_PER_FLUX = 60_000 / PRICE

let server: TestServer
let fake: FakeSttUpstream
let posthog: FakePosthog
let admin: ReturnType<typeof createAiriClient>
const { reader, meter } = createTestMeter()

const fixture = (name: string) => readFileSync(new URL(`../../../tooling/fixtures/audio/${name}`, import.meta.url))

/** Each fixture's duration as its README states it (ffprobe's reading), in milliseconds. */
const statedMs: Record<string, number> = { 'tone.wav': 2500, 'tone.mp3': 2533.878, 'tone.ogg': 2506.5, 'tone.webm': 2501, 'tone.flac': 2500, 'tone.m4a': 2500 }
/** How far a container's own length may lie from ffprobe's (codec priming and padding frames). */
const TOLERANCE_MS = 60

const types: Record<string, string> = { wav: 'audio/wav', mp3: 'audio/mpeg', ogg: 'audio/ogg', webm: 'audio/webm', flac: 'audio/flac', m4a: 'audio/mp4' }

beforeAll(async () => {
  ;[fake, posthog] = await Promise.all([startFakeSttUpstream(), startFakePosthog()])
  // An hour's window, so no rate-limit window rolls over mid-test.
  server = await startTestServer({ meter, posthog: posthog.settings, rateLimits: { windowSeconds: 3600 } })
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
})
afterAll(async () => {
  await server?.close()
  await Promise.all([fake?.close(), posthog?.close()])
})

/** Keys sealed the way an operator does it: by the server, under the alias and key id. */
async function seal(alias: string, apiKeys: string[]) {
  return Promise.all(apiKeys.map(async (apiKey, index) => {
    const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: alias, keyId: `k${index}`, apiKey })
    return { id: keyId, ciphertext }
  }))
}

interface ModelSpec extends Partial<Omit<SttModel, 'keys'>> {
  keys?: string[]
}

/** Points a fresh alias (so rotation and cooldowns start clean) at the fake, through admin.config.set. */
async function configure(spec: ModelSpec = {}): Promise<string> {
  fake.reset()
  const alias = `whisper-${randomUUID().slice(0, 8)}`
  const entry = { adapter: 'openai-compatible', baseUrl: fake.url, model: 'upstream-whisper', ...spec, keys: await seal(alias, spec.keys ?? ['sk-stt-1']) }
  await admin.admin.config.set.mutate({ key: 'STT_UPSTREAMS', value: { defaultModel: alias, models: { [alias]: entry } } })
  return alias
}

async function setPrice(fluxPerMinute: number): Promise<void> {
  await admin.admin.config.set.mutate({ key: 'FLUX_PER_MINUTE_STT', value: fluxPerMinute })
}

const openai = (token: string) => new OpenAI({ apiKey: token, baseURL: `${server.baseUrl}/api/v1`, maxRetries: 0 })

async function audioFile(name: string, bytes: Buffer = fixture(name)) {
  return toFile(bytes, name, { type: types[name.split('.').pop()!] ?? 'application/octet-stream' })
}

/** A raw multipart POST, for what the official client would never send. */
function post(token: string | undefined, form: FormData | string, contentType?: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.baseUrl}/api/v1/audio/transcriptions`, {
    method: 'POST',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(contentType ? { 'content-type': contentType } : {}) },
    body: form,
    signal,
  })
}

/** OpenAI's form with `fields`, and `file` (the WAV fixture by default; null for none). */
function form(fields: Record<string, string>, file: { name: string, bytes: Buffer, type?: string } | null = { name: 'tone.wav', bytes: fixture('tone.wav') }): FormData {
  const body = new FormData()
  if (file)
    body.append('file', new Blob([file.bytes], { type: file.type ?? 'audio/wav' }), file.name)
  for (const [name, value] of Object.entries(fields))
    body.append(name, value)
  return body
}

interface OpenAiErrorBody {
  error: { message: string, type: string, code: string, param: string | null, details?: Record<string, unknown> }
}

async function errorOf(response: Response): Promise<{ status: number } & OpenAiErrorBody['error']> {
  const body = await response.json() as OpenAiErrorBody
  return { status: response.status, ...body.error }
}

/** The error the official client rejected with. */
async function clientError(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const error = await promise.then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(OpenAI.APIError)
  return error as InstanceType<typeof OpenAI.APIError>
}

const balance = (user: TestUser) => server.api.services.billing.getBalance(user.id)
const debt = (user: TestUser) => server.api.services.transcription.meter.peekDebt(user.id)
const held = (user: TestUser) => server.api.adapters.counters.peekDebt(keys.fluxMeterHeld(user.id, 'stt'))
const upstreamCalls = () => fake.requests.filter(request => request.method === 'POST')

/** The Flux the `stt` meter debited from `user`, from the ledger. */
async function meterLedger(user: TestUser) {
  return server.database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', user.id).where('request_id', 'like', 'meter:stt:%').execute()
}

/** Leaves `user` with exactly `flux` Flux. */
async function setBalance(user: TestUser, flux: number): Promise<void> {
  const current = await balance(user)
  if (current > flux)
    await server.api.services.billing.debit({ userId: user.id, amount: current - flux, requestId: `test:${randomUUID()}`, description: 'test setup' })
}

/** Expects `user` to have paid nothing at all: full balance, no debt, no hold, no ledger row. */
async function expectNothingBilled(user: TestUser, startBalance = 100): Promise<void> {
  expect(await balance(user)).toBe(startBalance)
  expect(await debt(user)).toBe(0)
  expect(await held(user)).toBe(0)
  expect(await meterLedger(user)).toEqual([])
}

describe('before STT_UPSTREAMS is set', () => {
  it('answers 503 STT_NOT_CONFIGURED saying transcription is not set up, while the rest keeps working', async () => {
    const user = await createVerifiedUser(server)
    const error = await clientError(openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: 'whisper-1' }))
    expect(error.status).toBe(503)
    expect(error.code).toBe('STT_NOT_CONFIGURED')
    expect(error.message).toContain('has not set up a speech-to-text upstream')
    expect(fake.requests).toHaveLength(0)
    await expectNothingBilled(user)
    expect((await fetch(`${server.baseUrl}/readyz`)).status).toBe(200)
  })
})

describe('POST /api/v1/audio/transcriptions through the official openai client', () => {
  let user: TestUser
  let alias: string
  beforeAll(async () => {
    user = await createVerifiedUser(server)
    alias = await configure()
  })

  it('json: answers { text } and sends the upstream the file as uploaded, under the upstream model', async () => {
    fake.reset()
    const answer = await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias, response_format: 'json', language: 'en', prompt: 'A tone.', temperature: 0.2 })
    expect({ ...answer }).toEqual({ text: DEFAULT_TRANSCRIPT })

    expect(upstreamCalls()).toHaveLength(1)
    const call = upstreamCalls()[0]!
    expect(call).toMatchObject({ path: '/v1/audio/transcriptions', key: 'sk-stt-1', model: 'upstream-whisper' })
    expect(call.fields).toEqual({ model: 'upstream-whisper', response_format: 'json', language: 'en', prompt: 'A tone.', temperature: '0.2' })
    expect(call.file!.name).toBe('tone.wav')
    expect(call.file!.type).toBe('audio/wav')
    expect(call.file!.bytes.equals(fixture('tone.wav'))).toBe(true)
  })

  it('text: answers the transcript as text/plain, which the client returns as a string', async () => {
    fake.reset()
    fake.behave(() => ({ kind: 'normal', text: 'plain words' }))
    const answer = await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.mp3'), model: alias, response_format: 'text' })
    expect(answer).toBe('plain words')
    // The upstream is asked for JSON whatever the client wants; we shape the answer.
    expect(upstreamCalls()[0]!.fields.response_format).toBe('json')

    const raw = await post(user.token, form({ model: alias, response_format: 'text' }))
    expect(raw.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(await raw.text()).toBe('plain words')
  })

  it('verbose_json: answers { text, language, duration } with the duration we read from the file, not the upstream\'s claim', async () => {
    fake.reset()
    const answer = await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias, response_format: 'verbose_json' })
    expect(answer).toMatchObject({ text: DEFAULT_TRANSCRIPT, language: 'english', duration: 2.5 })
    expect(answer.duration).not.toBe(CLAIMED_DURATION_SECONDS)
    expect(answer.segments?.[0]).toEqual({ id: 0, start: 0, end: CLAIMED_DURATION_SECONDS, text: DEFAULT_TRANSCRIPT })
    expect(upstreamCalls()[0]!.fields.response_format).toBe('verbose_json')
  })

  it('404 for a model that is not configured, including object property names', async () => {
    fake.reset()
    for (const model of ['whisper-1', 'constructor', '__proto__']) {
      const error = await clientError(openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model }))
      expect(error.status).toBe(404)
      expect(error.code).toBe('MODEL_NOT_FOUND')
      expect(error.param).toBe('model')
    }
    expect(fake.requests).toHaveLength(0)
  })
})

describe('billing on the stt meter', () => {
  let alias: string
  beforeAll(async () => {
    alias = await configure()
    await setPrice(PRICE)
  })
  afterAll(async () => {
    await setPrice(1)
  })

  it.each(['tone.wav', 'tone.mp3', 'tone.ogg', 'tone.webm', 'tone.flac', 'tone.m4a'])('bills %s by the milliseconds read from the file: floor(ms / 100) Flux debited, the rest owed', async (name) => {
    const user = await createVerifiedUser(server)
    const answer = await openai(user.token).audio.transcriptions.create({ file: await audioFile(name), model: alias, response_format: 'verbose_json' })
    const ms = Math.round(answer.duration * 1000)
    // Our reading is the file's (ffprobe's within codec padding), never the upstream's 42.5 s.
    expect(Math.abs(ms - statedMs[name]!)).toBeLessThanOrEqual(TOLERANCE_MS)

    const flux = Math.floor(ms / MS_PER_FLUX)
    expect(await balance(user)).toBe(100 - flux)
    expect(await debt(user)).toBe(ms % MS_PER_FLUX)
    expect(await held(user)).toBe(0)
    const rows = await meterLedger(user)
    expect(rows.map(row => [row.type, row.amount, row.balance_after])).toEqual([['debit', flux, 100 - flux]])
    expect(rows[0]!.metadata).toMatchObject({ meter: 'stt', units: flux * MS_PER_FLUX })
  })

  it('carries the debt over between calls, and follows FLUX_PER_MINUTE_STT (default 1: 60 000 ms per Flux)', async () => {
    const user = await createVerifiedUser(server)
    // Two 2 534 ms calls at 100 ms per Flux: 25 Flux each, 34 + 34 = 68 ms owed.
    await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.mp3'), model: alias })
    await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.mp3'), model: alias })
    expect(await balance(user)).toBe(50)
    expect(await debt(user)).toBe(68)
    await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.mp3'), model: alias })
    // 68 + 2 534 = 2 602: 26 Flux, 2 owed.
    expect(await balance(user)).toBe(24)
    expect(await debt(user)).toBe(2)

    await setPrice(1)
    try {
      const other = await createVerifiedUser(server)
      await openai(other.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias })
      expect(await balance(other)).toBe(100)
      expect(await debt(other)).toBe(2500)
    }
    finally {
      await setPrice(PRICE)
    }
  })

  it('20 parallel calls on a balance that covers 3: exactly 3 reach the upstream and are billed, 17 get 402', async () => {
    const user = await createVerifiedUser(server)
    // Three 2 500 ms files at 25 Flux each.
    await setBalance(user, 75)
    fake.reset()
    const rejectionsBefore = await reader.counter('airi.billing.stt.preflight_rejections')
    let refused = 0
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    // Every answer waits until all 20 calls have either reached the upstream or been refused, so all are in flight at once.
    fake.behave(() => ({ kind: 'normal', hold }))
    const calls = Array.from({ length: 20 }, () => post(user.token, form({ model: alias })).then((response) => {
      if (response.status === 402)
        refused++
      return response
    }))
    await until(() => refused + upstreamCalls().length === 20, 'every call to be refused or at the upstream')
    release()
    const responses = await Promise.all(calls)

    const statuses = responses.map(response => response.status)
    expect(statuses.filter(status => status === 200)).toHaveLength(3)
    expect(statuses.filter(status => status === 402)).toHaveLength(17)
    expect(upstreamCalls()).toHaveLength(3)
    for (const response of responses.filter(response => response.status === 402))
      expect((await errorOf(response)).code).toBe('INSUFFICIENT_FLUX')
    expect(await reader.counter('airi.billing.stt.preflight_rejections')).toBe(rejectionsBefore + 17)

    expect(await balance(user)).toBe(0)
    expect(await debt(user)).toBe(0)
    expect(await held(user)).toBe(0)
    expect((await meterLedger(user)).map(row => row.amount)).toEqual([25, 25, 25])
  })

  it('counts airi.billing.stt.seconds and sends voice_input_used once per user', async () => {
    const user = await createVerifiedUser(server)
    const before = await reader.counter('airi.billing.stt.seconds')
    await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias })
    await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias })
    expect(await reader.counter('airi.billing.stt.seconds')).toBeCloseTo(before + 5, 6)

    const event = await posthog.waitForEvent(candidate => candidate.distinctId === user.id && candidate.event === 'voice_input_used')
    expect(event.properties).toMatchObject({ transport: 'rest' })
    const milestones = await server.database.db.selectFrom('user_milestones').select('milestone').where('user_id', '=', user.id).execute()
    expect(milestones.map(row => row.milestone)).toEqual(['voice_input_used'])
    // Events leave in the order they were captured: once a later user's has arrived, a second one of the first user's would have too.
    const later = await createVerifiedUser(server)
    await openai(later.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias })
    await posthog.waitForEvent(candidate => candidate.distinctId === later.id && candidate.event === 'voice_input_used')
    expect(posthog.events.filter(candidate => candidate.distinctId === user.id && candidate.event === 'voice_input_used')).toHaveLength(1)
  })
})

describe('upstream failures bill nothing', () => {
  it('rotates keys: a key the upstream refuses (401) is skipped for the next, and while it cools down', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure({ keys: ['sk-a', 'sk-b'] })
    fake.behave(request => request.key === 'sk-a' ? { kind: 'status', status: 401 } : { kind: 'normal' })
    const first = await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias })
    expect(first.text).toBe(DEFAULT_TRANSCRIPT)
    const second = await openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias })
    expect(second.text).toBe(DEFAULT_TRANSCRIPT)
    expect(upstreamCalls().map(request => request.key)).toEqual(['sk-a', 'sk-b', 'sk-b'])
    // Both transcripts were billed once each: 2 × 2 500 ms at the default price.
    expect(await debt(user)).toBe(5000)
  })

  it('answers 502 when every key fails (500, a dropped connection), with nothing billed', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure({ keys: ['sk-a', 'sk-b'] })
    fake.behave(() => ({ kind: 'status', status: 500 }))
    const error = await clientError(openai(user.token).audio.transcriptions.create({ file: await audioFile('tone.wav'), model: alias }))
    expect(error.status).toBe(502)
    expect(error.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(upstreamCalls()).toHaveLength(2)

    fake.behave(() => ({ kind: 'drop' }))
    expect(await errorOf(await post(user.token, form({ model: alias })))).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    await expectNothingBilled(user)
  })

  it('passes the upstream\'s refusal of the request (400) through without trying another key', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure({ keys: ['sk-a', 'sk-b'] })
    fake.behave(() => ({ kind: 'status', status: 400, body: { error: { message: 'Audio file might be corrupted' } } }))
    expect(await errorOf(await post(user.token, form({ model: alias })))).toMatchObject({ status: 400, code: 'UPSTREAM_REJECTED', message: 'Audio file might be corrupted' })
    expect(upstreamCalls()).toHaveLength(1)
    await expectNothingBilled(user)
  })

  it('answers 504 when the upstream does not answer within the entry\'s timeoutMs, and stops the call', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure({ timeoutMs: 300 })
    fake.behave(() => ({ kind: 'hang' }))
    expect(await errorOf(await post(user.token, form({ model: alias })))).toMatchObject({ status: 504, code: 'DEADLINE_EXCEEDED' })
    await until(() => upstreamCalls()[0]?.aborted === true, 'the upstream call to be cut')
    await expectNothingBilled(user)
  })

  it('stops the upstream call when the client goes away, and bills nothing', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure()
    fake.behave(() => ({ kind: 'hang' }))
    const controller = new AbortController()
    const call = post(user.token, form({ model: alias }), undefined, controller.signal).catch((e: unknown) => e)
    await until(() => upstreamCalls().length === 1 && upstreamCalls()[0]!.file !== undefined, 'the call to reach the upstream')
    controller.abort()
    expect(await call).toBeInstanceOf(Error)
    await until(() => upstreamCalls()[0]!.aborted, 'the upstream call to be cut')
    await until(async () => await held(user) === 0, 'the hold to be released')
    await expectNothingBilled(user)
  })
})

describe('input checks', () => {
  let user: TestUser
  let alias: string
  beforeAll(async () => {
    user = await createVerifiedUser(server)
    alias = await configure()
  })

  it('400 UNSUPPORTED_AUDIO for a file whose length cannot be read, before any upstream call', async () => {
    for (const bytes of [fixture('not-audio.bin'), Buffer.alloc(0), fixture('tone.wav').subarray(0, 30)]) {
      const error = await clientError(openai(user.token).audio.transcriptions.create({ file: await toFile(bytes, 'speech.wav', { type: 'audio/wav' }), model: alias }))
      expect(error.status).toBe(400)
      expect(error.code).toBe('UNSUPPORTED_AUDIO')
    }
    expect(fake.requests).toHaveLength(0)
    await expectNothingBilled(user)
  })

  it('413 for a file over 25 MiB, without an upstream call; exactly 25 MiB is read (and refused as not audio)', async () => {
    const tooLarge = await clientError(openai(user.token).audio.transcriptions.create({ file: await toFile(Buffer.alloc(25 * MiB + 1, 1), 'big.wav'), model: alias }))
    expect(tooLarge.status).toBe(413)
    expect(tooLarge.code).toBe('FILE_TOO_LARGE')
    expect(tooLarge.param).toBe('file')

    const atLimit = await errorOf(await post(user.token, form({ model: alias }, { name: 'big.wav', bytes: Buffer.alloc(25 * MiB, 1) })))
    expect(atLimit).toMatchObject({ status: 400, code: 'UNSUPPORTED_AUDIO' })
    expect(fake.requests).toHaveLength(0)
  })

  it('401 without a valid token', async () => {
    for (const token of [undefined, 'not-a-token']) {
      const error = await errorOf(await post(token, form({ model: alias })))
      expect(error).toMatchObject({ status: 401, code: 'UNAUTHORIZED' })
    }
    expect(fake.requests).toHaveLength(0)
  })

  it.each([
    ['file', form({ model: 'M' }, null)],
    ['file', (() => {
      const body = form({ model: 'M' })
      body.append('file', new Blob([fixture('tone.wav')]), 'second.wav')
      return body
    })()],
    ['file', (() => {
      const body = form({ model: 'M' }, null)
      body.append('file', 'not a file')
      return body
    })()],
    ['model', (() => {
      const body = form({})
      body.append('model', new Blob(['M']), 'model.txt')
      return body
    })()],
    ['model', form({})],
    ['response_format', form({ model: 'M', response_format: 'srt' })],
    ['temperature', form({ model: 'M', temperature: 'warm' })],
    ['temperature', form({ model: 'M', temperature: '1.5' })],
    ['language', form({ model: 'M', language: 'English; DROP' })],
    ['prompt', form({ model: 'M', prompt: 'a\u0000b' })],
    ['prompt', form({ model: 'M', prompt: 'p'.repeat(65 * 1024) })],
  ])('400 naming %s for a bad form', async (param, body) => {
    if (body.get('model') === 'M') {
      body.delete('model')
      body.append('model', alias)
    }
    const error = await errorOf(await post(user.token, body))
    expect(error).toMatchObject({ status: 400, code: 'BAD_REQUEST', param })
    expect(fake.requests).toHaveLength(0)
  })

  it('400 for a body that is not multipart or not well-formed multipart', async () => {
    for (const [body, type] of [
      [JSON.stringify({ model: alias, file: 'abc' }), 'application/json'],
      ['--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper', 'multipart/form-data; boundary=x'],
      ['no boundary here', 'multipart/form-data'],
    ] as const) {
      const response = await post(user.token, body, type)
      expect(response.status).toBe(400)
      expect((await errorOf(response)).type).toBe('invalid_request_error')
    }
    expect(fake.requests).toHaveLength(0)
    await expectNothingBilled(user)
  })
})

describe('rate limit', () => {
  it('answers the 61st call in a window with 429 (STT_RATE_LIMIT_PER_MINUTE, 60)', async () => {
    const user = await createVerifiedUser(server)
    const alias = await configure()
    // Refused calls count too: the limit protects the route, not only the upstream.
    for (let call = 0; call < 60; call++)
      expect((await post(user.token, form({ model: alias }, null))).status).toBe(400)
    const response = await post(user.token, form({ model: alias }))
    const error = await errorOf(response)
    expect(error).toMatchObject({ status: 429, code: 'RATE_LIMITED', type: 'rate_limit_error' })
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(fake.requests).toHaveLength(0)
  })
})
