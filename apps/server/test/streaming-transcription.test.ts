import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { manualClock } from '@airi/api'
import { createAiriClient } from '@airi/sdk'
import { startFakeRealtimeSttUpstream, transcriptDeltas, utteranceTranscript, type FakeRealtimeSttUpstream } from '@airi/tooling/fakes/realtime-stt-upstream'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, authPost, createVerifiedUser, failure, startTestServer, type TestServer, type TestServerOptions, type TestUser } from './harness.ts'

const MODEL = 'gpt-4o-transcribe'
const API_KEY = 'sk-stt'
/** 60 Flux a minute: one Flux is 1 000 ms, so a session's bill is exact in milliseconds. */
const MS_PER_FLUX = 1000

const clock = manualClock()
let server: TestServer
let fake: FakeRealtimeSttUpstream

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer({ clock }), startFakeRealtimeSttUpstream()])
})
afterAll(async () => {
  await server.close()
  await fake.close()
})

const operators = new Map<TestServer, TestUser>()

/** Points `target` at the fake with one key (`apiKey`, sealed as `keyId`) and prices a Flux at `MS_PER_FLUX`. */
async function configure(target: TestServer, { apiKey = API_KEY, keyId: id = 'k0' } = {}): Promise<void> {
  if (!operators.has(target))
    operators.set(target, await createVerifiedUser(target, ADMIN_EMAIL))
  const operator = operators.get(target)!
  const admin = createAiriClient({ baseUrl: target.baseUrl, getToken: () => operator.token })
  const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: 'streaming-stt', keyId: id, apiKey })
  await admin.admin.config.set.mutate({ key: 'STREAMING_STT_UPSTREAM', value: { url: fake.url, model: MODEL, keys: [{ id: keyId, ciphertext }] } })
  await admin.admin.config.set.mutate({ key: 'FLUX_PER_MINUTE_STT', value: 60_000 / MS_PER_FLUX })
}

const clientOf = (user: TestUser, target = server) => createAiriClient({ baseUrl: target.baseUrl, getToken: () => user.token })

/** What the user has, in milliseconds of audio: balance × ms per Flux − meter debt. */
async function worth(user: TestUser, target = server): Promise<number> {
  const [balance, debt] = await Promise.all([target.api.services.billing.getBalance(user.id), target.api.services.transcription.meter.peekDebt(user.id)])
  return balance * MS_PER_FLUX - debt
}

async function setBalance(user: TestUser, flux: number): Promise<void> {
  const current = await server.api.services.billing.getBalance(user.id)
  if (current > flux)
    await server.api.services.billing.debit({ userId: user.id, amount: current - flux, requestId: `test:${randomUUID()}`, description: 'test setup' })
  if (current < flux)
    await server.api.services.billing.credit({ userId: user.id, amount: flux - current, requestId: `test:${randomUUID()}` })
}

/** `ms` of a 440 Hz tone, PCM16LE mono at `rate`. */
function tone(ms: number, rate: number): Buffer {
  const samples = (rate * ms) / 1000
  const pcm = Buffer.alloc(samples * 2)
  for (let n = 0; n < samples; n++)
    pcm.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * n) / rate)), n * 2)
  return pcm
}

/** `pcm` in frames of `ms` each. */
function framesOf(pcm: Buffer, rate: number, ms: number): Buffer[] {
  const size = (rate * ms * 2) / 1000
  const frames: Buffer[] = []
  for (let at = 0; at < pcm.length; at += size)
    frames.push(pcm.subarray(at, at + size))
  return frames
}

interface ServerFrame {
  event: string
  itemId?: string
  text?: string
  code?: string
  message?: string
  usage?: { seconds: number, flux: number }
  cancelled?: boolean
}

/** A raw socket (the `ws` package), recording frames and its close. */
function rawSocket(url: string) {
  const ws = new WebSocket(url)
  const frames: ServerFrame[] = []
  let closeCode: number | undefined
  ws.on('message', data => frames.push(JSON.parse(String(data)) as ServerFrame))
  ws.on('close', (code) => {
    closeCode = code
  })
  ws.on('error', () => {})
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  const of = (event: string) => frames.filter(frame => frame.event === event)
  return {
    ws,
    frames,
    opened,
    closeCode: () => closeCode,
    finals: () => of('transcript.final').map(frame => frame.text),
    closed: (timeoutMs?: number) => until(() => closeCode !== undefined, 'the socket to close', timeoutMs),
    sendJson: (frame: object) => ws.send(JSON.stringify(frame)),
  }
}
type RawSocket = ReturnType<typeof rawSocket>

const socketUrl = (ticket?: string, target = server, path = 'transcriptions') => `${target.baseUrl.replace('http', 'ws')}/api/v1/audio/${path}/ws${ticket === undefined ? '' : `?ticket=${encodeURIComponent(ticket)}`}`

async function connect(user: TestUser, target = server): Promise<RawSocket> {
  const { ticket } = await clientOf(user, target).audio.createTranscriptionTicket.mutate()
  const socket = rawSocket(socketUrl(ticket, target))
  await socket.opened
  return socket
}

/** A socket whose start frame the server accepted (`session.started` arrived). */
async function started(user: TestUser, start: object = {}, target = server): Promise<RawSocket> {
  const socket = await connect(user, target)
  socket.sendJson({ event: 'start', ...start })
  await until(() => socket.frames.some(frame => frame.event === 'session.started') || socket.closeCode() !== undefined, 'session.started')
  expect(socket.frames[0]).toEqual({ event: 'session.started' })
  return socket
}

/** The error frame a socket ended with, and its close code. */
async function endedWith(socket: RawSocket, timeoutMs?: number): Promise<[string | undefined, number | undefined]> {
  await socket.closed(timeoutMs)
  return [socket.frames.at(-1)?.code, socket.closeCode()]
}

describe('before STREAMING_STT_UPSTREAM is set', () => {
  it('ends the session with streaming_stt_not_configured and dials nothing', async () => {
    const socket = await connect(await createVerifiedUser(server))
    socket.sendJson({ event: 'start' })
    expect(await endedWith(socket)).toEqual(['streaming_stt_not_configured', 4503])
    expect(fake.sessions).toHaveLength(0)
  })
})

describe('streaming transcription', () => {
  beforeAll(async () => {
    await configure(server)
  })

  it.each([16_000, 48_000])('transcribes %i Hz audio resampled to 24 kHz: deltas then a final per utterance, the last one flushed by stop, billed by the millisecond', async (rate) => {
    fake.reset()
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const socket = await started(user, { sample_rate: rate, language: 'en' })
    for (const frame of framesOf(tone(2500, rate), rate, 100))
      socket.ws.send(frame)
    // At once: the upstream's own utterances may still be on their way when the commit goes.
    socket.sendJson({ event: 'stop' })
    await socket.closed()

    // The fake names each utterance's length at 24 kHz: 2 500 ms in, 2 500 ms out.
    expect(socket.finals()).toEqual([utteranceTranscript(1, 1000), utteranceTranscript(2, 1000), utteranceTranscript(3, 500)])
    for (const final of socket.frames.filter(frame => frame.event === 'transcript.final')) {
      const deltas = socket.frames.filter(frame => frame.event === 'transcript.delta' && frame.itemId === final.itemId)
      expect(deltas.map(delta => delta.text)).toEqual(transcriptDeltas(final.text!))
      expect(socket.frames.indexOf(deltas.at(-1)!)).toBeLessThan(socket.frames.indexOf(final))
    }
    expect(socket.frames.at(-1)).toEqual({ event: 'session.finished', usage: { seconds: 2.5, flux: 2 } })
    expect(socket.closeCode()).toBe(1000)
    expect(before - await worth(user)).toBe(2500)

    const upstream = fake.sessions[0]!
    expect(upstream.key).toBe(API_KEY)
    expect(upstream.update).toEqual({ type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: 24_000 }, transcription: { model: MODEL, language: 'en' }, turn_detection: { type: 'server_vad' } } } })
    expect(upstream.samples).toBe(60_000)
    expect(upstream.items.map(item => item.by)).toEqual(['vad', 'vad', 'commit'])
    expect(upstream.commits).toBe(1)
  })

  it('takes 16 kHz without a sample_rate, and finishes when stop leaves nothing to flush', async () => {
    fake.reset()
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const socket = await started(user)
    for (const frame of framesOf(tone(2000, 16_000), 16_000, 250))
      socket.ws.send(frame)
    // The resampler's filter holds back a few samples, so the second second reaches the upstream with the flush on stop.
    await until(() => socket.finals().length === 1, 'the first utterance')
    socket.sendJson({ event: 'stop' })
    await socket.closed()
    expect(socket.finals()).toEqual([utteranceTranscript(1, 1000), utteranceTranscript(2, 1000)])
    expect(fake.sessions[0]!.errors.map(error => error.code)).toEqual(['input_audio_buffer_commit_empty'])
    expect(socket.frames.at(-1)).toEqual({ event: 'session.finished', usage: { seconds: 2, flux: 2 } })
    expect(before - await worth(user)).toBe(2000)
  })

  it('bills nothing for a session that received no audio', async () => {
    fake.reset()
    const user = await createVerifiedUser(server)
    const before = await worth(user)
    const stopped = await started(user)
    stopped.sendJson({ event: 'stop' })
    const cancelled = await started(user)
    cancelled.sendJson({ event: 'cancel' })
    await Promise.all([stopped.closed(), cancelled.closed()])
    expect(stopped.frames.at(-1)).toEqual({ event: 'session.finished', usage: { seconds: 0, flux: 0 } })
    expect(cancelled.frames.at(-1)).toEqual({ event: 'session.finished', usage: { seconds: 0, flux: 0 }, cancelled: true })
    expect(await worth(user)).toBe(before)
  })

  describe('cancel, drops and upstream failures bill the audio received', () => {
    it('on cancel', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      for (const frame of framesOf(tone(1500, 16_000), 16_000, 100))
        socket.ws.send(frame)
      await until(() => socket.finals().length === 1, 'the first utterance')
      socket.sendJson({ event: 'cancel' })
      await socket.closed()
      expect(socket.frames.at(-1)).toEqual({ event: 'session.finished', usage: { seconds: 1.5, flux: 1 }, cancelled: true })
      expect(socket.closeCode()).toBe(1000)
      expect(before - await worth(user)).toBe(1500)
      await until(() => fake.sessions[0]!.closedByClient, 'the upstream session to be closed')
    })

    it('when the client drops', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      for (const frame of framesOf(tone(1200, 16_000), 16_000, 100))
        socket.ws.send(frame)
      // Every frame handled: the resampler holds back only its filter's few samples.
      await until(() => (fake.sessions[0]?.samples ?? 0) > 28_700, 'the audio to reach the upstream')
      socket.ws.terminate()
      await until(async () => before - await worth(user) === 1200, 'the audio received to be billed')
      await until(() => fake.sessions[0]!.closedByClient, 'the upstream session to be closed')
    })

    it('when the upstream closes without finishing: upstream_closed, never a silent success', async () => {
      fake.reset()
      fake.behave({ closeAfterAppends: 10 }, 'next')
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      for (const frame of framesOf(tone(1000, 16_000), 16_000, 100))
        socket.ws.send(frame)
      expect(await endedWith(socket)).toEqual(['upstream_closed', 4502])
      expect(socket.frames.some(frame => frame.event === 'session.finished')).toBe(false)
      expect(before - await worth(user)).toBe(1000)
    })

    it('when the upstream sends an error: its code and message', async () => {
      fake.reset()
      fake.behave({ errorAfterAppends: { appends: 3, code: 'rate_limit_exceeded', message: 'slow down' } }, 'next')
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      for (const frame of framesOf(tone(300, 16_000), 16_000, 100))
        socket.ws.send(frame)
      expect(await endedWith(socket)).toEqual(['rate_limit_exceeded', 4502])
      expect(socket.frames.at(-1)?.message).toBe('slow down')
      expect(before - await worth(user)).toBe(300)
    })

    it('except when the upstream never accepted the session: a refused key is upstream_unavailable and bills nothing', async () => {
      // A key of its own, so its cooldown leaves the other tests' key alone.
      await configure(server, { apiKey: 'sk-refused', keyId: 'k-refused' })
      try {
        fake.reset()
        fake.rejectKeys.add('sk-refused')
        const user = await createVerifiedUser(server)
        const before = await worth(user)
        const socket = await connect(user)
        socket.sendJson({ event: 'start' })
        socket.ws.send(tone(500, 16_000))
        expect(await endedWith(socket)).toEqual(['upstream_unavailable', 4502])
        expect(fake.refused).toEqual(['sk-refused'])
        expect(await worth(user)).toBe(before)
      }
      finally {
        fake.reset()
        await configure(server)
      }
    })
  })

  describe('Flux', () => {
    it('refuses with insufficient_flux before dialling unless 60 s are affordable', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      await setBalance(user, 59)
      const socket = await connect(user)
      socket.sendJson({ event: 'start' })
      expect(await endedWith(socket)).toEqual(['insufficient_flux', 4402])
      expect(fake.sessions).toHaveLength(0)
      expect(await server.api.services.billing.getBalance(user.id)).toBe(59)
    })

    it('ends the session with insufficient_flux once the audio outgrows the balance, billing it to exactly zero', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      await setBalance(user, 61)
      const socket = await started(user)
      for (const frame of framesOf(tone(65_000, 16_000), 16_000, 500))
        socket.ws.send(frame)
      expect(await endedWith(socket)).toEqual(['insufficient_flux', 4402])
      expect(await server.api.services.billing.getBalance(user.id)).toBe(0)
      expect(await server.api.services.transcription.meter.peekDebt(user.id)).toBe(0)
    })
  })

  describe('tickets', () => {
    it('refuses a used ticket, an expired one, another user\'s used one, a signed-out one, a speech ticket and none with 4001, and dials nothing', async () => {
      fake.reset()
      const [owner, other, leaving] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server), createVerifiedUser(server)])
      const used = (await clientOf(owner).audio.createTranscriptionTicket.mutate()).ticket
      const othersUsed = (await clientOf(other).audio.createTranscriptionTicket.mutate()).ticket
      for (const ticket of [used, othersUsed]) {
        const first = rawSocket(socketUrl(ticket))
        await first.opened
        first.ws.close()
        await first.closed()
      }
      const expired = (await clientOf(owner).audio.createTranscriptionTicket.mutate()).ticket
      clock.advance(61_000)
      const signedOut = (await clientOf(leaving).audio.createTranscriptionTicket.mutate()).ticket
      expect((await authPost(server, '/sign-out', {}, leaving.token)).ok).toBe(true)
      const speechTicket = (await clientOf(owner).audio.createSpeechTicket.mutate()).ticket

      for (const ticket of [used, othersUsed, expired, signedOut, speechTicket, undefined, 'not-a-ticket']) {
        const socket = rawSocket(socketUrl(ticket))
        await socket.opened.catch(() => {})
        socket.sendJson({ event: 'start' })
        expect(await endedWith(socket)).toEqual(['unauthorized', 4001])
      }
      expect(fake.sessions).toHaveLength(0)
    })

    it('answers 401 to createTranscriptionTicket without a session', async () => {
      const error = await failure(createAiriClient({ baseUrl: server.baseUrl }).audio.createTranscriptionTicket.mutate())
      expect(error.data?.httpStatus).toBe(401)
    })
  })

  describe('bad frames', () => {
    it.each([
      ['a rate below 8 kHz', { event: 'start', sample_rate: 7999 }, 'invalid_start_frame'],
      ['a rate above 48 kHz', { event: 'start', sample_rate: 48_001 }, 'invalid_start_frame'],
      ['audio before start', Buffer.alloc(320), 'invalid_start_frame'],
      ['a model other than the configured one', { event: 'start', model: 'whisper-1' }, 'streaming_stt_model_not_enabled'],
    ])('refuses %s before dialling', async (_, frame, code) => {
      fake.reset()
      const socket = await connect(await createVerifiedUser(server))
      if (Buffer.isBuffer(frame))
        socket.ws.send(frame)
      else
        socket.sendJson(frame)
      expect(await endedWith(socket)).toEqual([code, 4400])
      expect(socket.frames).toHaveLength(1)
      expect(fake.sessions).toHaveLength(0)
    })

    it('ends with invalid_frame on a text frame where audio is expected, billing the audio before it', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      for (const frame of framesOf(tone(400, 16_000), 16_000, 100))
        socket.ws.send(frame)
      socket.ws.send('more audio')
      expect(await endedWith(socket)).toEqual(['invalid_frame', 4400])
      expect(before - await worth(user)).toBe(400)
    })

    it('takes a 64 KiB frame and ends with invalid_frame on one byte more', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      socket.ws.send(tone(2048, 16_000))
      socket.ws.send(Buffer.alloc(64 * 1024 + 1))
      expect(await endedWith(socket)).toEqual(['invalid_frame', 4400])
      // 65 536 bytes at 16 kHz are 2 048 ms, all of them billed; the oversized frame none.
      expect(before - await worth(user)).toBe(2048)
    })
  })

  describe('limits and revocation', () => {
    it('refuses a fifth socket of one user with too_many_connections', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      // Each session holds a minute before it starts.
      await setBalance(user, 1000)
      const open = await Promise.all(Array.from({ length: 4 }, () => started(user)))
      const fifth = await connect(user)
      expect(await endedWith(fifth)).toEqual(['too_many_connections', 4429])
      for (const socket of open)
        socket.sendJson({ event: 'cancel' })
      await Promise.all(open.map(socket => socket.closed()))
      expect(open.map(socket => socket.closeCode())).toEqual([1000, 1000, 1000, 1000])
    })

    it('ends the session with unauthorized when its session is signed out, billing the audio received', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      const before = await worth(user)
      const socket = await started(user)
      // A little past one utterance, since the resampler's filter holds back a few samples until stop.
      for (const frame of framesOf(tone(1100, 16_000), 16_000, 100))
        socket.ws.send(frame)
      await until(() => socket.finals().length === 1, 'the first utterance')
      expect((await authPost(server, '/sign-out', {}, user.token)).ok).toBe(true)
      expect(await endedWith(socket)).toEqual(['unauthorized', 4001])
      expect(before - await worth(user)).toBe(1100)
    })

    it('ends the session with session_limit_exceeded past 15 minutes of audio, billing the 15 minutes', async () => {
      fake.reset()
      const user = await createVerifiedUser(server)
      await setBalance(user, 1000)
      const before = await worth(user)
      // At the upstream's own rate, so no time goes into resampling: 900 frames of 1 s are exactly 15 minutes.
      const socket = await started(user, { sample_rate: 24_000 })
      const frame = tone(1000, 24_000)
      for (let i = 0; i < 900; i++)
        socket.ws.send(frame)
      socket.ws.send(Buffer.alloc(2))
      expect(await endedWith(socket, 90_000)).toEqual(['session_limit_exceeded', 4429])
      expect(before - await worth(user)).toBe(15 * 60_000)
    }, 120_000)
  })
})

describe('timeouts', () => {
  let quick: TestServer
  beforeAll(async () => {
    // The harness hands `limits` to buildServer as they are.
    const limits: TestServerOptions['limits'] = { transcriptionSocketLimits: { idleTimeoutMs: 1500 } }
    quick = await startTestServer({ limits })
    await configure(quick)
  })
  afterAll(async () => {
    await quick.close()
  })

  it('ends a session without a frame for the idle timeout with idle_timeout, billing the audio received', async () => {
    fake.reset()
    const user = await createVerifiedUser(quick)
    const before = await worth(user, quick)
    const socket = await started(user, {}, quick)
    socket.ws.send(tone(500, 16_000))
    expect(await endedWith(socket)).toEqual(['idle_timeout', 4408])
    expect(before - await worth(user, quick)).toBe(500)
  })

  it('ends with upstream_timeout when the upstream never answers the commit, billing the audio received', async () => {
    fake.reset()
    fake.behave({ ignoreCommit: true }, 'next')
    const user = await createVerifiedUser(quick)
    const before = await worth(user, quick)
    const socket = await started(user, {}, quick)
    socket.ws.send(tone(500, 16_000))
    socket.sendJson({ event: 'stop' })
    expect(await endedWith(socket)).toEqual(['upstream_timeout', 4504])
    expect(fake.sessions[0]!.commits).toBe(1)
    expect(before - await worth(user, quick)).toBe(500)
  })
})
