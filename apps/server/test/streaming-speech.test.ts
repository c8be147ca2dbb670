import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { keys, silentLogger, type Logger } from '@airi/api'
import { createAiriClient, createSpeechStream, createTtsSession, type SpeechStreamError, type SpeechUsage, type WebSocketConstructor } from '@airi/sdk'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, authPost, createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

const MODEL = 'seed-tts-2.0'
/** 10 Flux per 1 000 characters: one Flux is 100 characters, so a session's bill is exact in units. */
const UNITS_PER_FLUX = 100

let server: TestServer
let fake: FakeStreamingTtsUpstream
let admin: ReturnType<typeof createAiriClient>
/** What the services logged as warnings. */
const warnings: Array<{ obj: object, msg?: string }> = []
const logger: Logger = { ...silentLogger, warn: (obj, msg) => warnings.push({ obj, msg }) }

async function configure(target: TestServer = server): Promise<void> {
  const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: 'streaming-tts', keyId: 'k0', apiKey: 'sk-stream' })
  await admin.admin.config.set.mutate({ key: 'STREAMING_TTS_UPSTREAM', value: { url: fake.url, keys: [{ id: keyId, ciphertext }], models: [{ id: MODEL }] } })
  await admin.admin.config.set.mutate({ key: 'FLUX_PER_1K_CHARS_TTS', value: 1000 / UNITS_PER_FLUX })
  void target
}

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer({ logger, limits: { speechSocketLimits: { socketsPerUser: 4, maxFrameBytes: 16 * 1024 } } }), startFakeStreamingTtsUpstream()])
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
})
afterAll(async () => {
  await server.close()
  await fake.close()
})

const clientOf = (user: TestUser, target: TestServer = server) => createAiriClient({ baseUrl: target.baseUrl, getToken: () => user.token })
const chars = (text: string) => [...text].length

/** What the user has, in characters: balance × characters per Flux − meter debt. */
async function worth(user: TestUser, target: TestServer = server): Promise<number> {
  const [balance, debt] = await Promise.all([target.api.services.billing.getBalance(user.id), target.api.services.speech.meter.peekDebt(user.id)])
  return balance * UNITS_PER_FLUX - debt
}

async function setBalance(user: TestUser, flux: number): Promise<void> {
  const current = await server.api.services.billing.getBalance(user.id)
  if (current > flux)
    await server.api.services.billing.debit({ userId: user.id, amount: current - flux, requestId: `test:${randomUUID()}`, description: 'test setup' })
}

/** A session through the SDK, recording everything it reports. */
function speak(user: TestUser, { target = server, ticketFrom = target }: { target?: TestServer, ticketFrom?: TestServer } = {}) {
  const audio: Buffer[] = []
  const sentences: string[] = []
  const errors: SpeechStreamError[] = []
  const done: Array<SpeechUsage & { cancelled: boolean }> = []
  const stream = createSpeechStream({
    baseUrl: target.baseUrl,
    client: clientOf(user, ticketFrom),
    model: MODEL,
    voice: 'zh_female_vv',
    format: 'pcm',
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onAudio: chunk => audio.push(Buffer.from(chunk)),
    onSentence: text => sentences.push(text),
    onError: error => errors.push(error),
    onDone: usage => done.push(usage),
  })
  return { stream, audio, sentences, errors, done }
}

/** A raw socket (the `ws` package), recording frames and its close. */
function rawSocket(url: string) {
  const ws = new WebSocket(url)
  const frames: Array<Record<string, unknown>> = []
  const audio: Buffer[] = []
  let closeCode: number | undefined
  ws.on('message', (data, isBinary) => (isBinary ? audio.push(data as Buffer) : frames.push(JSON.parse(String(data)) as Record<string, unknown>)))
  ws.on('close', (code) => {
    closeCode = code
  })
  ws.on('error', () => {})
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  return { ws, frames, audio, opened, closeCode: () => closeCode }
}

const socketUrl = (ticket?: string, target: TestServer = server) => `${target.baseUrl.replace('http', 'ws')}/api/v1/audio/speech/ws${ticket === undefined ? '' : `?ticket=${encodeURIComponent(ticket)}`}`

describe('before STREAMING_TTS_UPSTREAM is set', () => {
  it('ends the session with streaming_tts_not_configured', async () => {
    const user = await createVerifiedUser(server)
    const session = speak(user)
    session.stream.appendText('Hello.')
    await session.stream.closed
    expect(session.errors.map(error => error.code)).toEqual(['streaming_tts_not_configured'])
    expect(fake.sessions).toHaveLength(0)
  })
})

describe('streaming speech', () => {
  beforeAll(async () => {
    await configure()
  })

  it('forwards tokens verbatim and in order (queued while the upstream dials), relays audio byte for byte before finish, and bills exactly the characters', async () => {
    fake.reset()
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const release = fake.holdHandshakes()
    const session = speak(user)
    const first = ['Hello', ' there', ',', '  friend', '.', ' ']
    const rest = ['How', ' are', '\tyou', '?', ' 元気', 'です。', ' Bye', '\n']
    for (const token of first)
      session.stream.appendText(token)
    await until(() => fake.sessions.length === 0, 'the dial to be held')
    release()
    await until(() => session.audio.length > 0, 'audio of the first sentence before finish')
    expect(fake.sessions[0]!.finishReceived).toBe(false)
    for (const token of rest)
      session.stream.appendText(token)
    session.stream.finish()
    await session.stream.closed

    const upstream = fake.sessions[0]!
    expect(upstream.key).toBe('sk-stream')
    expect(upstream.start).toEqual({ model: MODEL, voice: 'zh_female_vv', response_format: 'pcm' })
    expect(upstream.texts).toEqual([...first, ...rest])
    expect(Buffer.concat(session.audio).equals(Buffer.concat(upstream.audio))).toBe(true)
    expect(session.sentences[0]).toBe('Hello there,  friend. ')
    expect(session.errors).toEqual([])
    const billed = chars([...first, ...rest].join(''))
    expect(session.done).toEqual([{ characters: billed, flux: 0, cancelled: false }])
    expect(before - await worth(user)).toBe(billed)
  })

  it('bills the upstream\'s text_words when it reports them', async () => {
    fake.reset()
    fake.behave({ reportTextWords: 7 })
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const session = speak(user)
    session.stream.appendText('Twelve chars')
    session.stream.finish()
    await session.stream.closed
    expect(session.done[0]).toMatchObject({ characters: 7 })
    expect(before - await worth(user)).toBe(7)
  })

  it('bills at most the characters forwarded when the upstream reports more text_words', async () => {
    fake.reset()
    fake.behave({ reportTextWords: 5_000 })
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const session = speak(user)
    session.stream.appendText('Hello there. ')
    session.stream.finish()
    await session.stream.closed
    expect(session.audio.length).toBeGreaterThan(0)
    expect(session.done[0]).toMatchObject({ characters: chars('Hello there. ') })
    expect(before - await worth(user)).toBe(chars('Hello there. '))
  })

  it('bills the characters forwarded when the upstream reports 0 text_words after audio', async () => {
    fake.reset()
    fake.behave({ reportTextWords: 0 })
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const session = speak(user)
    session.stream.appendText('Free audio? No. ')
    session.stream.finish()
    await session.stream.closed
    expect(session.audio.length).toBeGreaterThan(0)
    expect(session.done[0]).toMatchObject({ characters: chars('Free audio? No. ') })
    expect(before - await worth(user)).toBe(chars('Free audio? No. '))
  })

  it('bills the characters forwarded when the upstream finishes without usage', async () => {
    fake.reset()
    fake.behave({ noUsage: true })
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const session = speak(user)
    session.stream.appendText('No usage here.')
    session.stream.finish()
    await session.stream.closed
    expect(before - await worth(user)).toBe(chars('No usage here.'))
  })

  describe('tickets', () => {
    it('refuses a used ticket, an expired one, another user\'s used one and none with 4001, and nothing reaches the upstream', async () => {
      fake.reset()
      const [owner, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
      const { ticket } = await clientOf(owner).audio.createSpeechTicket.mutate()
      const first = rawSocket(socketUrl(ticket))
      await first.opened
      first.ws.close()
      await until(() => first.closeCode() !== undefined, 'the first socket to close')

      const expired = (await clientOf(other).audio.createSpeechTicket.mutate()).ticket
      const stored = await server.api.adapters.cache.get(keys.speechTicket(expired))
      await server.api.adapters.cache.set(keys.speechTicket(expired), stored!, 1)
      await until(async () => (await server.api.adapters.cache.get(keys.speechTicket(expired))) === null, 'the ticket to expire')

      for (const url of [socketUrl(ticket), socketUrl(expired), socketUrl(undefined), socketUrl('not-a-ticket')]) {
        const socket = rawSocket(url)
        await socket.opened.catch(() => {})
        socket.ws.send(JSON.stringify({ event: 'start', model: MODEL, voice: 'v' }), () => {})
        await until(() => socket.closeCode() !== undefined, 'the refused socket to close')
        expect(socket.closeCode()).toBe(4001)
        expect(socket.frames[0]).toMatchObject({ event: 'error', code: 'unauthorized' })
      }
      expect(fake.sessions).toHaveLength(0)
    })

    it('answers 401 to createSpeechTicket without a session', async () => {
      const error = await failure(createAiriClient({ baseUrl: server.baseUrl }).audio.createSpeechTicket.mutate())
      expect(error.data?.httpStatus).toBe(401)
    })
  })

  describe('cancel and disconnect', () => {
    it('bills nothing when cancelled before any audio', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const session = speak(user)
      session.stream.appendText('No sentence end yet')
      await until(() => fake.sessions[0]?.texts.length === 1, 'the text to reach the upstream')
      session.stream.cancel()
      await session.stream.closed
      expect(session.done).toEqual([{ characters: 0, flux: 0, cancelled: true }])
      await until(() => fake.sessions[0]!.cancelled, 'the upstream to be cancelled')
      expect(await worth(user)).toBe(before)
    })

    it('bills the forwarded characters once when cancelled after audio', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const session = speak(user)
      session.stream.appendText('Hello there. ')
      await until(() => session.audio.length > 0, 'audio')
      session.stream.appendText('And more')
      await until(() => fake.sessions[0]?.texts.length === 2, 'the second text upstream')
      session.stream.cancel()
      await session.stream.closed
      const billed = chars('Hello there. And more')
      expect(session.done).toEqual([{ characters: billed, flux: 0, cancelled: true }])
      expect(before - await worth(user)).toBe(billed)
      const ledger = await server.database.db.selectFrom('flux_transaction').select('request_id').where('user_id', '=', user.id).where('request_id', 'like', 'meter:tts:%').execute()
      expect(ledger.length).toBeLessThanOrEqual(1)
    })

    it('bills the forwarded characters when the client socket is killed mid-stream', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const { ticket } = await clientOf(user).audio.createSpeechTicket.mutate()
      const socket = rawSocket(socketUrl(ticket))
      await socket.opened
      socket.ws.send(JSON.stringify({ event: 'start', model: MODEL, voice: 'v' }))
      socket.ws.send(JSON.stringify({ event: 'text', text: 'Killed after this. ' }))
      await until(() => socket.audio.length > 0, 'audio on the raw socket')
      socket.ws.terminate()
      await until(async () => before - await worth(user) === chars('Killed after this. '), 'the forwarded characters to be billed')
      await until(() => fake.sessions[0]!.closed, 'the upstream session to be closed')
      expect(before - await worth(user)).toBe(chars('Killed after this. '))
    })
  })

  describe('upstream failures', () => {
    it('reports upstream_closed when the upstream drops mid-stream, and bills the forwarded characters', async () => {
      fake.reset()
      fake.behave({ dropAfterAudioChunks: 1 })
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const session = speak(user)
      session.stream.appendText('Dropped here. ')
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['upstream_closed'])
      expect(session.audio).toHaveLength(1)
      expect(before - await worth(user)).toBe(chars('Dropped here. '))
    })

    it('forwards the upstream\'s error code', async () => {
      fake.reset()
      fake.behave({ errorAfter: { audioChunks: 2, code: 'quota_exceeded', message: 'out of quota' } })
      const user = await createVerifiedUser(server)
      const session = speak(user)
      session.stream.appendText('One sentence. ')
      await session.stream.closed
      expect(session.errors.map(error => [error.code, error.message])).toEqual([['quota_exceeded', 'out of quota']])
    })

    it('reports upstream_unavailable and bills nothing when the upstream refuses the dial', async () => {
      fake.reset()
      fake.behave({ refuseStatus: 503 })
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const session = speak(user)
      session.stream.appendText('Never spoken. ')
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['upstream_unavailable'])
      expect(fake.refused).toEqual(['sk-stream'])
      expect(await worth(user)).toBe(before)
    })

    it('leaves a key the dial saw refused out of the voice catalogue too while it cools down (one key pool)', async () => {
      // A key of its own, so its 5-minute cooldown leaves the other tests' key alone.
      const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: 'streaming-tts', keyId: 'k-refused', apiKey: 'sk-refused' })
      await admin.admin.config.set.mutate({ key: 'STREAMING_TTS_UPSTREAM', value: { url: fake.url, keys: [{ id: keyId, ciphertext }], models: [{ id: MODEL }] } })
      try {
        fake.reset()
        fake.behave({ refuseStatus: 401 })
        const user = await createVerifiedUser(server)
        const session = speak(user)
        session.stream.appendText('Never spoken. ')
        await session.stream.closed
        expect(fake.refused).toEqual(['sk-refused'])

        warnings.length = 0
        const response = await fetch(`${server.baseUrl}/api/v1/audio/voices/streaming`, { headers: { authorization: `Bearer ${user.token}` } })
        expect(await response.json()).toEqual({ voices: [] })
        // Without a usable key the catalogue never asks the bridge (which would answer 404 here).
        expect(warnings.map(warning => warning.obj)).toContainEqual(expect.objectContaining({ code: 'UPSTREAM_UNAVAILABLE', reason: expect.stringContaining('no usable key') }))
      }
      finally {
        fake.reset()
        await configure()
      }
    })
  })

  describe('Flux', () => {
    it('refuses with insufficient_flux before dialling', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      await setBalance(user, 19)
      const session = speak(user)
      session.stream.appendText('Hello.')
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['insufficient_flux'])
      expect(fake.sessions).toHaveLength(0)
      expect(await server.api.services.billing.getBalance(user.id)).toBe(19)
    })

    it('ends the session with insufficient_flux when the forwarded text outgrows the balance, never below zero', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      await setBalance(user, 25)
      const session = speak(user)
      const frame = `${'a'.repeat(398)}. `
      for (let i = 0; i < 5; i++)
        session.stream.appendText(frame)
      await until(() => session.audio.length > 0 && fake.sessions[0]?.texts.length === 5, 'audio and five frames upstream')
      session.stream.appendText(frame)
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['insufficient_flux'])
      expect(fake.sessions[0]!.texts).toHaveLength(5)
      expect(await server.api.services.billing.getBalance(user.id)).toBe(5)
    })
  })

  describe('limits and revocation', () => {
    it('ends the session with session_limit_exceeded past 512 text frames', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const session = speak(user)
      for (let i = 0; i < 513; i++)
        session.stream.appendText('x')
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['session_limit_exceeded'])
      expect(fake.sessions[0]?.texts.length ?? 0).toBeLessThanOrEqual(512)
    })

    it('refuses a bad start frame before dialling', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      for (const [start, code] of [[{ event: 'start', model: 'unknown', voice: 'v' }, 'streaming_tts_model_not_enabled'], [{ event: 'text', text: 'hi' }, 'invalid_start_frame'], [{ event: 'start', model: MODEL }, 'invalid_start_frame']] as const) {
        const socket = rawSocket(socketUrl((await clientOf(user).audio.createSpeechTicket.mutate()).ticket))
        await socket.opened
        socket.ws.send(JSON.stringify(start))
        await until(() => socket.closeCode() !== undefined, 'the socket to close')
        expect(socket.frames).toMatchObject([{ event: 'error', code }])
        expect(socket.closeCode()).toBe(4400)
      }
      expect(fake.sessions).toHaveLength(0)
    })

    it('refuses an oversized frame', async () => {
      const user = await createVerifiedUser(server)
      const socket = rawSocket(socketUrl((await clientOf(user).audio.createSpeechTicket.mutate()).ticket))
      await socket.opened
      socket.ws.send(JSON.stringify({ event: 'start', model: MODEL, voice: 'x'.repeat(20_000) }))
      await until(() => socket.closeCode() !== undefined, 'the socket to close')
      expect(socket.frames).toMatchObject([{ event: 'error', code: 'frame_too_large' }])
      expect(socket.closeCode()).toBe(4413)
    })

    it('caps concurrent speech sockets per user', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const sessions = Array.from({ length: 4 }, () => speak(user))
      for (const session of sessions)
        session.stream.appendText('Wait')
      await until(() => fake.sessions.length === 4, 'four upstream sessions')
      const fifth = speak(user)
      await fifth.stream.closed
      expect(fifth.errors.map(error => error.code)).toEqual(['too_many_connections'])
      for (const session of sessions)
        session.stream.cancel()
      await Promise.all(sessions.map(session => session.stream.closed))
    })

    it('ends the session with unauthorized when its session is signed out', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const session = speak(user)
      session.stream.appendText('Signed out after this. ')
      await until(() => session.audio.length > 0, 'audio')
      expect((await authPost(server, '/sign-out', {}, user.token)).ok).toBe(true)
      await session.stream.closed
      expect(session.errors.map(error => error.code)).toEqual(['unauthorized'])
      expect(before - await worth(user)).toBe(chars('Signed out after this. '))
    })
  })

  it('completes 50 concurrent sessions of different users with each billed for its own characters', async () => {
    fake.reset()
    const users: TestUser[] = []
    for (let batch = 0; batch < 5; batch++)
      users.push(...await Promise.all(Array.from({ length: 10 }, () => createVerifiedUser(server))))
    const before = await Promise.all(users.map(user => worth(user)))
    const runs = users.map((user, index) => {
      const session = speak(user)
      const text = `User ${index} says ${'la '.repeat(index)}hello. Bye.`
      session.stream.appendText(text)
      session.stream.finish()
      return { session, text }
    })
    await Promise.all(runs.map(run => run.session.stream.closed))
    for (const [index, { session, text }] of runs.entries()) {
      expect(session.errors).toEqual([])
      expect(session.done[0]?.characters).toBe(chars(text))
      expect(before[index]! - await worth(users[index]!)).toBe(chars(text))
    }
  }, 120_000)

  it('serves a session on instance B with a ticket issued by instance A (shared Redis)', async () => {
    fake.reset()
    const prefix = `b-${randomUUID().slice(0, 8)}:`
    const a = await startTestServer({ redisPrefix: prefix })
    const b = await startTestServer({ redisPrefix: prefix, database: a.database })
    try {
      const operator = await createVerifiedUser(a, ADMIN_EMAIL)
      const operatorClient = createAiriClient({ baseUrl: a.baseUrl, getToken: () => operator.token })
      const { keyId, ciphertext } = await operatorClient.admin.llm.encryptKey.mutate({ model: 'streaming-tts', keyId: 'k0', apiKey: 'sk-stream' })
      await operatorClient.admin.config.set.mutate({ key: 'STREAMING_TTS_UPSTREAM', value: { url: fake.url, keys: [{ id: keyId, ciphertext }], models: [{ id: MODEL }] } })
      const user = await createVerifiedUser(a)
      const session = speak(user, { target: b, ticketFrom: a })
      session.stream.appendText('Across instances.')
      session.stream.finish()
      await session.stream.closed
      expect(session.errors).toEqual([])
      expect(session.done[0]?.characters).toBe(chars('Across instances.'))
    }
    finally {
      await b.close()
      await a.close()
    }
  })

  it('createTtsSession picks the socket for a bidirectional-ws provider', async () => {
    fake.reset()
    const user = await createVerifiedUser(server)
    const audio: Buffer[] = []
    const done: SpeechUsage[] = []
    const session = createTtsSession({ capabilities: { speech: { transport: 'bidirectional-ws' } } }, {
      baseUrl: server.baseUrl,
      client: clientOf(user),
      model: MODEL,
      voice: 'v',
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      onAudio: chunk => audio.push(Buffer.from(chunk)),
      onDone: usage => done.push(usage),
    })
    session.appendText('Through the session. ')
    session.finish()
    await session.closed
    expect(fake.sessions).toHaveLength(1)
    expect(Buffer.concat(audio).equals(Buffer.concat(fake.sessions[0]!.audio))).toBe(true)
    expect(done[0]?.characters).toBe(chars('Through the session. '))
  })
})
