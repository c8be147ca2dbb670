import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'

import { until } from '../test/until.ts'

import { startFakeRealtimeSttUpstream, transcriptDeltas, utteranceTranscript, type FakeRealtimeSttUpstream } from './realtime-stt-upstream.ts'

// The streaming transcription tests lean on this fake speaking OpenAI's Realtime
// transcription protocol as SPEC §4.13 spells it, and on its utterances telling
// how much audio arrived.

interface ServerEvent {
  type: string
  item_id?: string
  previous_item_id?: string | null
  delta?: string
  transcript?: string
  session?: { type?: string, audio?: { input?: { format?: { rate?: number }, transcription?: { model?: string } | null } } }
  error?: { type: string, code: string, message: string }
}

const SESSION_UPDATE = {
  type: 'session.update',
  session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: 24_000 }, transcription: { model: 'gpt-4o-transcribe', language: 'en' }, turn_detection: { type: 'server_vad' } } } },
}

/** `ms` of PCM16 mono at 24 kHz, as one append event. */
const append = (ms: number) => ({ type: 'input_audio_buffer.append', audio: Buffer.alloc(ms * 24 * 2, 1).toString('base64') })

interface Client {
  ws: WebSocket
  events: ServerEvent[]
  send: (event: object) => void
  /** Waits for the `count`th event of `type` (from 1) and returns it. */
  next: (type: string, count?: number) => Promise<ServerEvent>
}

async function connect(url: string, key = 'sk-rt'): Promise<Client> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${key}` } })
  const events: ServerEvent[] = []
  ws.on('message', data => events.push(JSON.parse(String(data)) as ServerEvent))
  await once(ws, 'open')
  const ofType = (type: string) => events.filter(event => event.type === type)
  return {
    ws,
    events,
    send: event => ws.send(JSON.stringify(event)),
    async next(type, count = 1) {
      await until(() => ofType(type).length >= count, `${type} #${count}`, 5000)
      return ofType(type)[count - 1]!
    },
  }
}

async function configured(url: string, key?: string): Promise<Client> {
  const client = await connect(url, key)
  client.send(SESSION_UPDATE)
  await client.next('session.updated')
  return client
}

describe('the fake realtime STT upstream', () => {
  let fake: FakeRealtimeSttUpstream
  const clients: WebSocket[] = []
  const open = async (key?: string) => {
    const client = await configured(fake.url, key)
    clients.push(client.ws)
    return client
  }

  beforeAll(async () => {
    fake = await startFakeRealtimeSttUpstream()
  })
  afterAll(async () => {
    await fake.close()
  })
  beforeEach(() => {
    for (const ws of clients.splice(0))
      ws.terminate()
    fake.reset()
  })

  it.each([
    ['no key', {}, ''],
    ['a rejected key', { authorization: 'Bearer sk-revoked' }, 'sk-revoked'],
  ])('refuses an upgrade with %s with 401', async (_, headers, key) => {
    fake.rejectKeys.add('sk-revoked')
    const ws = new WebSocket(fake.url, { headers })
    const [request, response] = await once(ws, 'unexpected-response') as [{ destroy: () => void }, IncomingMessage]
    request.destroy()
    expect(response.statusCode).toBe(401)
    expect(fake.refused).toEqual([key])
    expect(fake.sessions).toHaveLength(0)
  })

  it('greets with session.created, then records and answers the session.update', async () => {
    const client = await connect(fake.url, 'sk-1')
    clients.push(client.ws)
    expect((await client.next('session.created')).session).toMatchObject({ type: 'transcription' })
    client.send(SESSION_UPDATE)
    const updated = await client.next('session.updated')
    expect(updated.session).toMatchObject({ type: 'transcription', audio: { input: { format: { rate: 24_000 }, transcription: { model: 'gpt-4o-transcribe' } } } })
    expect(fake.sessions[0]).toMatchObject({ key: 'sk-1', url: '/v1/realtime?intent=transcription', update: SESSION_UPDATE.session, configured: true, events: ['session.update'] })
  })

  it.each([
    ['a session that is not for transcription', { ...SESSION_UPDATE.session, type: 'realtime' }],
    ['a rate other than 24 kHz', { ...SESSION_UPDATE.session, audio: { input: { ...SESSION_UPDATE.session.audio.input, format: { type: 'audio/pcm', rate: 16_000 } } } }],
  ])('refuses %s with an invalid_value error', async (_, session) => {
    const client = await connect(fake.url)
    clients.push(client.ws)
    client.send({ type: 'session.update', session })
    expect((await client.next('error')).error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_value', message: expect.any(String) })
    expect(client.events.some(event => event.type === 'session.updated')).toBe(false)
    expect(fake.sessions[0]!.configured).toBe(false)
  })

  it('closes an utterance every second of audio, then commits the rest on input_audio_buffer.commit', async () => {
    const client = await open()
    for (let i = 0; i < 25; i++)
      client.send(append(100))
    const second = await client.next('conversation.item.input_audio_transcription.completed', 2)
    expect(second.transcript).toBe(utteranceTranscript(2, 1000))
    expect(fake.sessions[0]).toMatchObject({ appends: 25, samples: 60_000, bytes: 120_000, commits: 0 })
    expect(fake.sessions[0]!.items.map(item => item.transcript)).toEqual(['utterance 1 (1000 ms)', 'utterance 2 (1000 ms)'])

    client.send({ type: 'input_audio_buffer.commit' })
    const third = await client.next('conversation.item.input_audio_transcription.completed', 3)
    expect(third.transcript).toBe('utterance 3 (500 ms)')
    expect(fake.sessions[0]!.items.map(item => item.by)).toEqual(['vad', 'vad', 'commit'])

    // Per item: committed (chained to the one before), its deltas, then completed.
    const items = fake.sessions[0]!.items
    expect(new Set(items.map(item => item.id)).size).toBe(3)
    const forItem = client.events.filter(event => event.item_id === items[2]!.id).map(event => event.type)
    expect(forItem).toEqual(['input_audio_buffer.committed', ...transcriptDeltas(third.transcript!).map(() => 'conversation.item.input_audio_transcription.delta'), 'conversation.item.input_audio_transcription.completed'])
    const committed = client.events.filter(event => event.type === 'input_audio_buffer.committed')
    expect(committed.map(event => [event.previous_item_id, event.item_id])).toEqual([[null, items[0]!.id], [items[0]!.id, items[1]!.id], [items[1]!.id, items[2]!.id]])
    for (const item of items) {
      const deltas = client.events.filter(event => event.item_id === item.id && event.delta !== undefined)
      expect(deltas.map(event => event.delta).join('')).toBe(item.transcript)
    }
  })

  it('answers a commit of an empty buffer with input_audio_buffer_commit_empty', async () => {
    const client = await open()
    client.send(append(1000))
    await client.next('conversation.item.input_audio_transcription.completed')
    client.send({ type: 'input_audio_buffer.commit' })
    expect((await client.next('error')).error).toMatchObject({ type: 'invalid_request_error', code: 'input_audio_buffer_commit_empty' })
    expect(fake.sessions[0]).toMatchObject({ commits: 1 })
    expect(fake.sessions[0]!.items).toHaveLength(1)
  })

  it('splits utterances at the utteranceMs it was started with', async () => {
    const short = await startFakeRealtimeSttUpstream({ utteranceMs: 250 })
    try {
      const client = await configured(short.url)
      client.send(append(600))
      client.send({ type: 'input_audio_buffer.commit' })
      await client.next('conversation.item.input_audio_transcription.completed', 3)
      expect(short.sessions[0]!.items.map(item => item.transcript)).toEqual(['utterance 1 (250 ms)', 'utterance 2 (250 ms)', 'utterance 3 (100 ms)'])
      client.ws.close()
      await until(() => short.sessions[0]!.closedByClient, 'the close to be recorded')
    }
    finally {
      await short.close()
    }
  })

  it('closes the next session without answering after closeAfterAppends, and only that one', async () => {
    fake.behave({ closeAfterAppends: 2 }, 'next')
    const client = await open()
    client.send(append(600))
    client.send(append(600))
    await once(client.ws, 'close')
    expect(client.events.some(event => event.type === 'input_audio_buffer.committed')).toBe(false)
    expect(fake.sessions[0]).toMatchObject({ appends: 2, closed: true, closedByClient: false })

    const after = await open()
    after.send(append(600))
    after.send(append(600))
    await after.next('conversation.item.input_audio_transcription.completed')
  })

  it('sends an error event after errorAfterAppends, in every session', async () => {
    fake.behave({ errorAfterAppends: { appends: 1, code: 'server_error', message: 'upstream fell over' } })
    for (const client of [await open(), await open()]) {
      client.send(append(100))
      expect((await client.next('error')).error).toMatchObject({ code: 'server_error', message: 'upstream fell over' })
    }
    expect(fake.sessions.map(session => session.errors)).toEqual([[{ code: 'server_error', message: 'upstream fell over' }], [{ code: 'server_error', message: 'upstream fell over' }]])
  })

  it('holds each completed event until the hold settles', async () => {
    let release!: () => void
    fake.behave({ hold: new Promise<void>(resolve => (release = resolve)) })
    const client = await open()
    client.send(append(1000))
    const item = await client.next('input_audio_buffer.committed')
    const deltas = transcriptDeltas(utteranceTranscript(1, 1000))
    await client.next('conversation.item.input_audio_transcription.delta', deltas.length)
    expect(fake.sessions[0]!.items[0]!.completed).toBe(false)
    release()
    expect(await client.next('conversation.item.input_audio_transcription.completed')).toMatchObject({ item_id: item.item_id, transcript: 'utterance 1 (1000 ms)' })
    expect(fake.sessions[0]!.items[0]!.completed).toBe(true)
  })

  it('counts a commit it was told to ignore and answers nothing to it', async () => {
    fake.behave({ ignoreCommit: true })
    const client = await open()
    client.send(append(300))
    client.send({ type: 'input_audio_buffer.commit' })
    // Events leave in order, so once the clear is answered the commit's answer would have come.
    client.send({ type: 'input_audio_buffer.clear' })
    await client.next('input_audio_buffer.cleared')
    expect(client.events.map(event => event.type)).toEqual(['session.created', 'session.updated', 'input_audio_buffer.cleared'])
    expect(fake.sessions[0]).toMatchObject({ commits: 1, items: [] })
  })

  it('records a socket the client closed', async () => {
    const client = await open()
    client.ws.close()
    await until(() => fake.sessions[0]!.closed, 'the close to be recorded')
    expect(fake.sessions[0]!.closedByClient).toBe(true)
  })
})
