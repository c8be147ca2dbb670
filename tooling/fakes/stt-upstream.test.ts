import { readFileSync } from 'node:fs'

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { until } from '../test/until.ts'

import { CLAIMED_DURATION_SECONDS, DEFAULT_TRANSCRIPT, startFakeSttUpstream, type FakeSttUpstream } from './stt-upstream.ts'

// The transcription tests, the demo and the benchmarks lean on this fake: it must
// read the form the way OpenAI does and hand back what it received.

const fixture = (name: string) => readFileSync(new URL(`../fixtures/audio/${name}`, import.meta.url))

function form(fields: Record<string, string>, file?: { bytes: Buffer, name: string, type: string }): FormData {
  const body = new FormData()
  if (file)
    body.append('file', new Blob([file.bytes], { type: file.type }), file.name)
  for (const [name, value] of Object.entries(fields))
    body.append(name, value)
  return body
}

describe('the fake STT upstream', () => {
  let fake: FakeSttUpstream
  const wav = { bytes: fixture('tone.wav'), name: 'tone.wav', type: 'audio/wav' }
  const transcribe = (body: FormData, key = 'sk-stt', signal?: AbortSignal) =>
    fetch(`${fake.url}/audio/transcriptions`, { method: 'POST', headers: key ? { authorization: `Bearer ${key}` } : {}, body, signal })

  beforeAll(async () => {
    fake = await startFakeSttUpstream()
  })
  afterAll(async () => {
    await fake.close()
  })
  beforeEach(() => {
    fake.reset()
  })

  it('answers a multipart form with { text } and records the fields and the file bytes', async () => {
    const response = await transcribe(form({ model: 'whisper-1', language: 'en', prompt: 'a tone', temperature: '0.2' }, wav))
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ text: DEFAULT_TRANSCRIPT })
    const [request] = fake.requests
    expect(request).toMatchObject({ key: 'sk-stt', model: 'whisper-1', fields: { model: 'whisper-1', language: 'en', prompt: 'a tone', temperature: '0.2' }, completed: true, aborted: false })
    expect(request!.file).toMatchObject({ name: 'tone.wav', type: 'audio/wav' })
    expect(request!.file!.bytes.equals(wav.bytes)).toBe(true)
  })

  it('answers response_format text with a plain-text body', async () => {
    const response = await transcribe(form({ model: 'whisper-1', response_format: 'text' }, wav))
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/)
    expect(await response.text()).toBe(DEFAULT_TRANSCRIPT)
  })

  it('answers verbose_json with a duration of its own, not the file\'s', async () => {
    const response = await transcribe(form({ model: 'whisper-1', response_format: 'verbose_json', language: 'en' }, wav))
    const body = await response.json() as { segments: unknown[] }
    expect(body).toMatchObject({ task: 'transcribe', language: 'en', duration: CLAIMED_DURATION_SECONDS, text: DEFAULT_TRANSCRIPT })
    expect(body.segments).toEqual([expect.objectContaining({ id: 0, start: 0, end: CLAIMED_DURATION_SECONDS, text: DEFAULT_TRANSCRIPT })])
  })

  it('refuses a request without a bearer key with 401, recording it with an empty key', async () => {
    const response = await transcribe(form({ model: 'whisper-1' }, wav), '')
    expect(response.status).toBe(401)
    expect(await response.json()).toMatchObject({ error: { type: 'invalid_request_error' } })
    expect(fake.requests[0]!.key).toBe('')
  })

  it.each([
    ['the file', form({ model: 'whisper-1' }), 'file'],
    ['the model', form({}, { bytes: Buffer.from('RIFF'), name: 'a.wav', type: 'audio/wav' }), 'model'],
  ])('refuses a form without %s with an OpenAI-style 400', async (_, body, param) => {
    const response = await transcribe(body)
    expect(response.status).toBe(400)
    expect(await response.json()).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param, code: null } })
  })

  it('transcribes to a behaviour\'s text, once its hold settles', async () => {
    let release!: () => void
    const hold = new Promise<void>(resolve => (release = resolve))
    fake.behave(() => ({ kind: 'normal', hold, text: 'Held words.' }))
    const pending = transcribe(form({ model: 'whisper-1' }, wav))
    await until(() => fake.requests.length === 1 && fake.requests[0]!.file !== undefined, 'the request to arrive')
    expect(fake.requests[0]!.completed).toBe(false)
    release()
    expect(await (await pending).json()).toEqual({ text: 'Held words.' })
    expect(fake.requests[0]!.completed).toBe(true)
  })

  it('answers a status behaviour with its status and body', async () => {
    fake.behave(() => ({ kind: 'status', status: 503, body: { error: { message: 'overloaded' } } }))
    const response = await transcribe(form({ model: 'whisper-1' }, wav))
    expect(response.status).toBe(503)
    expect(await response.json()).toEqual({ error: { message: 'overloaded' } })
  })

  it('hangs until the client goes away, and records that it did', async () => {
    fake.behave(() => ({ kind: 'hang' }))
    const controller = new AbortController()
    const pending = transcribe(form({ model: 'whisper-1' }, wav), 'sk-stt', controller.signal)
    await until(() => fake.requests[0]?.file !== undefined, 'the request to arrive')
    controller.abort()
    await expect(pending).rejects.toThrow()
    await until(() => fake.requests[0]!.aborted, 'the abort to be recorded')
    expect(fake.requests[0]!.completed).toBe(false)
  })

  it('drops the connection, which the client sees as a network error and the fake not as an abort', async () => {
    fake.behave(() => ({ kind: 'drop' }))
    await expect(transcribe(form({ model: 'whisper-1' }, wav))).rejects.toThrow(TypeError)
    expect(fake.requests[0]).toMatchObject({ aborted: false, completed: false })
  })
})

// The durations in fixtures/audio/README.md are what the server's billing tests expect.
describe('the audio fixtures', () => {
  const wavFormat = (bytes: Buffer) => ({ channels: bytes.readUInt16LE(22), rate: bytes.readUInt32LE(24), bits: bytes.readUInt16LE(34), dataBytes: bytes.readUInt32LE(40) })

  it('holds a 2.5 s mono 16 kHz PCM16 tone.wav', () => {
    expect(wavFormat(fixture('tone.wav'))).toEqual({ channels: 1, rate: 16_000, bits: 16, dataBytes: 2.5 * 16_000 * 2 })
  })

  it('holds a 3 s mono 48 kHz speech-like.wav whose middle second is silent', () => {
    const wav = fixture('speech-like.wav')
    expect(wavFormat(wav)).toEqual({ channels: 1, rate: 48_000, bits: 16, dataBytes: 3 * 48_000 * 2 })
    const second = (index: number) => wav.subarray(44 + index * 96_000, 44 + (index + 1) * 96_000)
    const loudest = (pcm: Buffer) => Math.max(...Array.from({ length: pcm.length / 2 }, (_, i) => Math.abs(pcm.readInt16LE(i * 2))))
    expect(loudest(second(0))).toBeGreaterThan(5000)
    expect(loudest(second(1))).toBe(0)
    expect(loudest(second(2))).toBeGreaterThan(5000)
  })

  it('holds a tone.webm whose header states no duration, as MediaRecorder writes it', () => {
    const webm = fixture('tone.webm')
    const header = webm.subarray(0, webm.indexOf(Buffer.from('1f43b675', 'hex'))) // up to the first Cluster
    // Segment with an "unknown size", and no Info/Duration element (id 0x4489).
    expect(header.includes(Buffer.from('1853806701ffffffffffffff', 'hex'))).toBe(true)
    expect(header.includes(Buffer.from([0x44, 0x89]))).toBe(false)
  })

  it.each([
    ['tone.mp3', 'ID3'],
    ['tone.ogg', 'OggS'],
    ['tone.flac', 'fLaC'],
  ])('holds %s, starting with %s', (name, magic) => {
    expect(fixture(name).subarray(0, magic.length).toString('latin1')).toBe(magic)
  })

  it('holds an MP4 tone.m4a and a not-audio.bin that is none of these', () => {
    expect(fixture('tone.m4a').subarray(4, 8).toString('latin1')).toBe('ftyp')
    const junk = fixture('not-audio.bin').subarray(0, 4).toString('latin1')
    expect(['RIFF', 'OggS', 'fLaC', 'ID3', '\u001A\u0045\u00DF\u00A3']).not.toContain(junk)
  })
})
