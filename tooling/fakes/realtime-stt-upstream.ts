import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

import { WebSocket, WebSocketServer, type RawData } from 'ws'

/** The only input rate the protocol's `audio/pcm` format takes. */
export const REALTIME_SAMPLE_RATE = 24_000

export interface RealtimeSttOptions {
  /** Audio that closes an utterance (the fake's voice-activity detection): 1000 ms by default. */
  utteranceMs?: number
}

/** How the fake misbehaves, for the sessions that start after `behave` is called. */
export interface RealtimeSttMisbehaviour {
  /** Destroy the connection (no close frame, no answer to it) on this append. */
  closeAfterAppends?: number
  /** Send this `error` event on this append (and close with 1011 if `close`). */
  errorAfterAppends?: { appends: number, code: string, message: string, close?: boolean }
  /** Every `…transcription.completed` waits for this (later events queue behind it). */
  hold?: Promise<unknown>
  /** Count `input_audio_buffer.commit` and answer nothing. */
  ignoreCommit?: boolean
}

/** The part of a `session.update` the fake reads; anything else is kept as sent. */
export interface RealtimeSessionConfig {
  type?: string
  audio?: {
    input?: {
      format?: { type?: string, rate?: number }
      transcription?: { model?: string, language?: string, prompt?: string }
      turn_detection?: { type?: string } | null
    }
  }
}

/** One item the fake committed and transcribed. */
export interface RealtimeSttItem {
  id: string
  previousId: string | null
  /** What closed it: the simulated voice-activity detection, or the client's commit. */
  by: 'vad' | 'commit'
  samples: number
  ms: number
  transcript: string
  /** Its `…transcription.completed` was sent. */
  completed: boolean
}

/** One session as the fake saw it; the object stays live, so tests can poll it. */
export interface FakeRealtimeSttSession {
  /** The bearer key it was dialled with. */
  key: string
  /** The path and query it was dialled at. */
  url: string
  /** Every client event's `type`, in order. */
  events: string[]
  /** The last `session.update`'s `session`, as sent. */
  update?: RealtimeSessionConfig
  /** A `session.update` was accepted (answered with `session.updated`). */
  configured: boolean
  appends: number
  /** Audio bytes received, and the 16-bit samples they make. */
  bytes: number
  samples: number
  commits: number
  /** Items committed, in order (pushed when `input_audio_buffer.committed` is sent). */
  items: RealtimeSttItem[]
  /** `error` events sent. */
  errors: Array<{ code: string, message: string }>
  closedByClient: boolean
  closed: boolean
}

export interface FakeRealtimeSttUpstream {
  /** The URL to put in `STREAMING_STT_UPSTREAM.url`. */
  url: string
  sessions: FakeRealtimeSttSession[]
  /** Keys whose upgrade is refused with 401, as a revoked key is; a test fills it. */
  rejectKeys: Set<string>
  /** Upgrades refused with 401, with the key each carried ('' for none). */
  refused: string[]
  /** Misbehave in every session from now on (`'all'`), or in the next one only (`'next'`). */
  behave: (misbehaviour: RealtimeSttMisbehaviour, scope?: 'all' | 'next') => void
  reset: () => void
  close: () => Promise<void>
}

/** The transcript of the fake's `index`th utterance (from 1) of `ms` milliseconds. */
export const utteranceTranscript = (index: number, ms: number) => `utterance ${index} (${ms} ms)`

/** The deltas a transcript streams as: its words, each with the space after it. */
export const transcriptDeltas = (transcript: string) => transcript.split(/(?<= )/)

function rawText(data: RawData): string {
  return (Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)).toString('utf8')
}

/** Why OpenAI would refuse this `session.update`, or undefined when it is what the spec sends. */
function refusal(config: RealtimeSessionConfig | undefined): { param: string, message: string } | undefined {
  const input = config?.audio?.input
  if (config?.type !== 'transcription')
    return { param: 'session.type', message: `Invalid value: '${String(config?.type)}'. This session only serves 'transcription'.` }
  if (input?.format?.type !== 'audio/pcm')
    return { param: 'session.audio.input.format.type', message: `Invalid value: '${String(input?.format?.type)}'. Supported values are: 'audio/pcm'.` }
  if (input.format.rate !== REALTIME_SAMPLE_RATE)
    return { param: 'session.audio.input.format.rate', message: `Invalid value: ${String(input.format.rate)}. Supported values are: ${REALTIME_SAMPLE_RATE}.` }
  if (typeof input.transcription?.model !== 'string')
    return { param: 'session.audio.input.transcription.model', message: 'A transcription model is required.' }
  // The fake's utterances stand for the server's voice-activity detection, so it must be on.
  if (input.turn_detection?.type !== 'server_vad')
    return { param: 'session.audio.input.turn_detection', message: 'This fake only simulates server_vad turn detection.' }
  return undefined
}

const baseSession = (id: string) => ({
  type: 'transcription',
  object: 'realtime.transcription_session',
  id,
  audio: { input: { format: { type: 'audio/pcm', rate: REALTIME_SAMPLE_RATE }, transcription: null, noise_reduction: null, turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 } } },
})

interface ClientEvent {
  type?: unknown
  event_id?: unknown
  session?: RealtimeSessionConfig
  audio?: unknown
}

/** One socket's side of the protocol; the session record it fills is shared with the test. */
class Connection {
  readonly id: string
  closedByFake = false
  /** Bytes appended since the last item, and samples before them (for the VAD events' offsets). */
  private buffered = 0
  private offset = 0
  private itemCount = 0
  private lastItemId: string | null = null
  // Events leave in order, even while a held `completed` keeps later ones waiting.
  private queue: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly ws: WebSocket,
    private readonly session: FakeRealtimeSttSession,
    private readonly behaviour: RealtimeSttMisbehaviour,
    private readonly utteranceBytes: number,
    private readonly nextId: () => number,
  ) {
    this.id = `sess_fake_${nextId()}`
    this.send({ type: 'session.created', session: baseSession(this.id) })
  }

  receive(data: RawData, isBinary: boolean): void {
    let event: ClientEvent | null
    try {
      event = isBinary ? null : JSON.parse(rawText(data)) as ClientEvent | null
    }
    catch {
      event = null
    }
    if (typeof event !== 'object' || event === null)
      return this.later(() => this.fail('invalid_json', 'Events must be JSON objects in text frames.'))
    const { type, event_id: eventId } = event
    this.session.events.push(String(type))
    switch (type) {
      case 'session.update':
        return this.update(event.session, eventId)
      case 'input_audio_buffer.append':
        return this.append(event.audio, eventId)
      case 'input_audio_buffer.commit':
        return this.commit(eventId)
      case 'input_audio_buffer.clear':
        this.offset += Math.floor(this.buffered / 2)
        this.buffered = 0
        return this.later(() => this.send({ type: 'input_audio_buffer.cleared' }))
      default:
        return this.later(() => this.fail('invalid_value', `Invalid value: '${String(type)}'.`, 'type', eventId))
    }
  }

  private update(config: RealtimeSessionConfig | undefined, eventId: unknown): void {
    this.session.update = config
    const refused = refusal(config)
    if (refused)
      return this.later(() => this.fail('invalid_value', refused.message, refused.param, eventId))
    this.session.configured = true
    const base = baseSession(this.id)
    this.later(() => this.send({ type: 'session.updated', session: { ...base, ...config, audio: { input: { ...base.audio.input, ...config?.audio?.input } } } }))
  }

  private append(audio: unknown, eventId: unknown): void {
    if (typeof audio !== 'string')
      return this.later(() => this.fail('invalid_value', 'audio must be a base64 string', 'audio', eventId))
    const bytes = Buffer.from(audio, 'base64').length
    const session = this.session
    session.appends++
    session.bytes += bytes
    session.samples = Math.floor(session.bytes / 2)
    this.buffered += bytes
    if (this.behaviour.closeAfterAppends !== undefined && session.appends >= this.behaviour.closeAfterAppends) {
      this.closedByFake = true
      return void this.ws.terminate()
    }
    while (this.buffered >= this.utteranceBytes) {
      this.buffered -= this.utteranceBytes
      this.commitItem(this.utteranceBytes, 'vad')
    }
    const error = this.behaviour.errorAfterAppends
    if (error && session.appends === error.appends) {
      this.later(() => {
        this.fail(error.code, error.message)
        if (error.close) {
          this.closedByFake = true
          this.ws.close(1011)
        }
      })
    }
  }

  private commit(eventId: unknown): void {
    this.session.commits++
    if (this.behaviour.ignoreCommit)
      return
    if (this.buffered < 2)
      return this.later(() => this.fail('input_audio_buffer_commit_empty', 'Error committing input audio buffer: the buffer is empty.', null, eventId))
    this.commitItem(this.buffered, 'commit')
    this.buffered = 0
  }

  private commitItem(bytes: number, by: RealtimeSttItem['by']): void {
    const samples = Math.floor(bytes / 2)
    const ms = Math.round((samples * 1000) / REALTIME_SAMPLE_RATE)
    const startMs = Math.round((this.offset * 1000) / REALTIME_SAMPLE_RATE)
    this.offset += samples
    const index = ++this.itemCount
    const item: RealtimeSttItem = { id: `item_${this.id.slice('sess_'.length)}_${index}`, previousId: this.lastItemId, by, samples, ms, transcript: utteranceTranscript(index, ms), completed: false }
    this.lastItemId = item.id
    this.later(async () => {
      this.session.items.push(item)
      if (by === 'vad') {
        this.send({ type: 'input_audio_buffer.speech_started', audio_start_ms: startMs, item_id: item.id })
        this.send({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: startMs + ms, item_id: item.id })
      }
      this.send({ type: 'input_audio_buffer.committed', previous_item_id: item.previousId, item_id: item.id })
      for (const delta of transcriptDeltas(item.transcript))
        this.send({ type: 'conversation.item.input_audio_transcription.delta', item_id: item.id, content_index: 0, delta })
      await this.behaviour.hold
      this.send({ type: 'conversation.item.input_audio_transcription.completed', item_id: item.id, content_index: 0, transcript: item.transcript })
      item.completed = true
    })
  }

  private later(step: () => unknown): void {
    this.queue = this.queue.then(step).catch(() => {})
  }

  private send(event: object): void {
    if (this.ws.readyState === WebSocket.OPEN)
      this.ws.send(JSON.stringify({ event_id: `event_${this.nextId()}`, ...event }))
  }

  private fail(code: string, message: string, param: string | null = null, eventId?: unknown): void {
    this.session.errors.push({ code, message })
    this.send({ type: 'error', error: { type: 'invalid_request_error', code, message, param, event_id: typeof eventId === 'string' ? eventId : null } })
  }
}

/**
 * A local stand-in for the OpenAI Realtime transcription protocol (SPEC §4.13):
 * `session.created` on connect, `session.update` checked and answered, base64
 * PCM appended, and every `utteranceMs` of audio (or a commit of what is left)
 * made an item: `committed`, word deltas, then `completed` with a transcript
 * naming the utterance and its length, so a test can tell what was forwarded.
 */
export async function startFakeRealtimeSttUpstream(options: RealtimeSttOptions = {}): Promise<FakeRealtimeSttUpstream> {
  const utteranceBytes = Math.round(((options.utteranceMs ?? 1000) * REALTIME_SAMPLE_RATE) / 1000) * 2
  if (!(utteranceBytes > 0))
    throw new Error('utteranceMs must be at least 1/24 ms')
  const sessions: FakeRealtimeSttSession[] = []
  const rejectKeys = new Set<string>()
  const refused: string[] = []
  let always: RealtimeSttMisbehaviour = {}
  let next: RealtimeSttMisbehaviour | undefined
  let counter = 0
  let closing = false
  const sockets = new Set<Socket>()

  const server = createServer((_req, res) => {
    res.writeHead(404).end()
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  const wss = new WebSocketServer({ noServer: true })

  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const url = req.url ?? '/'
    const auth = req.headers.authorization ?? ''
    const key = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : ''
    if (new URL(url, 'http://fake').pathname !== '/v1/realtime')
      return void socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
    if (!key || rejectKeys.has(key)) {
      refused.push(key)
      const body = JSON.stringify({ error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key', param: null } })
      return void socket.end(`HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    }
    const behaviour = next ?? always
    next = undefined
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session: FakeRealtimeSttSession = { key, url, events: [], configured: false, appends: 0, bytes: 0, samples: 0, commits: 0, items: [], errors: [], closedByClient: false, closed: false }
      sessions.push(session)
      const connection = new Connection(ws, session, behaviour, utteranceBytes, () => ++counter)
      ws.on('message', (data, isBinary) => connection.receive(data, isBinary))
      ws.on('error', () => {})
      ws.on('close', () => {
        session.closed = true
        session.closedByClient = !connection.closedByFake && !closing
      })
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  return {
    url: `ws://127.0.0.1:${port}/v1/realtime?intent=transcription`,
    sessions,
    rejectKeys,
    refused,
    behave(misbehaviour, scope = 'all') {
      if (scope === 'next')
        next = misbehaviour
      else
        always = misbehaviour
    },
    reset() {
      sessions.length = 0
      refused.length = 0
      rejectKeys.clear()
      always = {}
      next = undefined
    },
    async close() {
      closing = true
      for (const client of wss.clients)
        client.terminate()
      for (const socket of sockets)
        socket.destroy()
      await new Promise<void>(resolve => wss.close(() => resolve()))
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
}
