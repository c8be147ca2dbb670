import type { AiriClient, TokenGetter, WebSocketConstructor } from './client.ts'
import { AiriError } from './errors.ts'

/** Where the server's transcription plugins are served (docs/speech.md). */
const TRANSCRIPTION_REST_PATH = '/api/v1/audio/transcriptions'
const TRANSCRIPTION_SOCKET_PATH = '/api/v1/audio/transcriptions/ws'

/** The socket refuses binary frames over 64 KiB, so audio is cut to this size. */
export const MAX_AUDIO_FRAME_BYTES = 64 * 1024

/** About 10 s of 48 kHz PCM16: what may wait for the socket before the stream gives up. */
const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024

function endpoint(baseUrl: string, path: string): URL {
  return new URL(path.slice(1), baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`)
}

export type TranscriptionResponseFormat = 'json' | 'text' | 'verbose_json'

/** `verbose_json`: the text, the language the upstream heard (null when it does not say) and the audio's length in seconds, as the server measured it (plus e.g. segments). */
export interface VerboseTranscription {
  text: string
  language: string | null
  duration: number
  [field: string]: unknown
}

export interface TranscribeOptions {
  /** The server's origin, as for `createAiriClient`. */
  baseUrl: string
  /** The bearer token of the request. */
  getToken: TokenGetter
  /** The recording: WAV, MP3, OGG/Opus, WebM, FLAC or M4A, at most 25 MiB. */
  file: Blob
  /** A model alias of the server's `STT_UPSTREAMS` (required, as by OpenAI's endpoint). */
  model: string
  /** The spoken language (ISO-639-1), when known. */
  language?: string
  /** Text that guides the transcription (names, spelling, the previous sentence). */
  prompt?: string
  responseFormat?: TranscriptionResponseFormat
  temperature?: number
  signal?: AbortSignal
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
}

/** The part name the form gives the file: a File keeps its own, a bare Blob gets one (the server reads the format from the bytes). */
function fileName(file: Blob): string {
  const name = (file as Partial<File>).name
  return typeof name === 'string' && name !== '' ? name : 'audio'
}

/** The server's error body (`{ error: { code, message, details } }`, the OpenAI shape on /api/v1/audio) as an AiriError. */
async function responseError(response: Response): Promise<AiriError> {
  const body = await response.json().catch(() => undefined) as { error?: { code?: unknown, message?: unknown, details?: unknown } } | undefined
  const code = typeof body?.error?.code === 'string' ? body.error.code : `HTTP_${response.status}`
  const message = typeof body?.error?.message === 'string' ? body.error.message : `Transcription failed (${response.status})`
  return new AiriError(response.status, code, message, body?.error?.details)
}

/**
 * Transcribes one recording with `POST /api/v1/audio/transcriptions` (multipart,
 * OpenAI-compatible): `{ text }` for `json` (the default), the bare text for
 * `text`, and `{ text, language, duration }` for `verbose_json`. A failure is an
 * AiriError with the server's status and code (`UNSUPPORTED_AUDIO`,
 * `INSUFFICIENT_FLUX`, `STT_NOT_CONFIGURED`, …); an aborted call rejects with the
 * signal's own AbortError.
 */
export function transcribe(options: TranscribeOptions & { responseFormat: 'text' }): Promise<string>
export function transcribe(options: TranscribeOptions & { responseFormat: 'verbose_json' }): Promise<VerboseTranscription>
export function transcribe(options: TranscribeOptions & { responseFormat?: 'json' }): Promise<{ text: string }>
export function transcribe(options: TranscribeOptions): Promise<string | { text: string } | VerboseTranscription>
export async function transcribe(options: TranscribeOptions): Promise<string | { text: string } | VerboseTranscription> {
  const fetchImpl = options.fetch ?? globalThis.fetch
  const form = new FormData()
  form.append('file', options.file, fileName(options.file))
  const fields = { model: options.model, language: options.language, prompt: options.prompt, response_format: options.responseFormat, temperature: options.temperature }
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined)
      form.append(name, String(value))
  }
  const token = await options.getToken()
  let response: Response
  try {
    response = await fetchImpl(endpoint(options.baseUrl, TRANSCRIPTION_REST_PATH), {
      method: 'POST',
      headers: token ? { authorization: `Bearer ${token}` } : {},
      body: form,
      signal: options.signal,
    })
  }
  catch (error) {
    if (options.signal?.aborted)
      throw error
    throw new AiriError(503, 'NETWORK_ERROR', `Cannot reach the server: ${(error as Error).message}`)
  }
  if (!response.ok)
    throw await responseError(response)
  if (options.responseFormat === 'text')
    return await response.text()
  return await response.json() as { text: string } | VerboseTranscription
}

/** A transcription session's failure: the server's `code` (`insufficient_flux`, `upstream_closed`, …) and message. */
export class TranscriptionStreamError extends Error {
  override readonly name = 'TranscriptionStreamError'
  constructor(readonly code: string, message: string) {
    super(message)
  }
}

/** A piece of an utterance's transcript (`onDelta`: the new text only), or its whole text (`onFinal`). */
export interface TranscriptEvent {
  itemId: string
  text: string
}

/** What a finished session cost: the seconds of audio billed and the Flux that settled. */
export interface TranscriptionUsage {
  seconds: number
  flux: number
}

export interface TranscriptionCallbacks {
  /** New text of an utterance still being spoken, in order. */
  onDelta?: (delta: TranscriptEvent) => void
  /** An utterance the upstream closed (voice-activity detection, or `stop`), with its whole text. */
  onFinal?: (final: TranscriptEvent) => void
  /** The upstream accepted the session. */
  onStarted?: () => void
  /** Once, when the session fails; nothing else is reported after it. */
  onError?: (error: TranscriptionStreamError) => void
  /** Once, when the session finished (after `stop`, or `cancel`) and was billed. */
  onDone?: (usage: TranscriptionUsage & { cancelled: boolean }) => void
}

export interface TranscriptionStreamOptions extends TranscriptionCallbacks {
  /** The server's origin, as for `createAiriClient`. */
  baseUrl: string
  /** A signed-in client: it fetches the socket's single-use ticket. */
  client: AiriClient
  /** The streaming model; omitted, the server's `STREAMING_STT_UPSTREAM`'s. */
  model?: string
  language?: string
  /** The rate of the PCM16LE mono audio given to `sendAudio`, 8 000–48 000 Hz (the server's default is 16 000). */
  sampleRate?: number
  /** Audio waiting for the socket beyond this many bytes ends the session (`audio_backlog`); 1 MiB by default. */
  maxQueuedBytes?: number
  /** Defaults to the global WebSocket; pass `ws` on Node versions without one. */
  WebSocket?: WebSocketConstructor
}

export interface TranscriptionStream {
  /** PCM16LE mono at `sampleRate`; cut into frames of at most 64 KiB, queued until the socket is open. */
  sendAudio: (pcm16: ArrayBuffer | Int16Array) => void
  /** No more audio: the last transcript arrives, then `onDone`. */
  stop: () => void
  /** Ends the session at once; what was sent is billed, the rest is not transcribed. */
  cancel: () => void
  /** Settles when the session is over, whichever way. */
  closed: Promise<void>
}

function socketUrl(baseUrl: string, ticket: string): string {
  const url = endpoint(baseUrl, TRANSCRIPTION_SOCKET_PATH)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  url.searchParams.set('ticket', ticket)
  return url.toString()
}

/** The domain code of a failed tRPC call (`data.apiCode`), lower-cased like the socket's codes. */
function codeOf(error: unknown): string {
  const data = (error as { data?: { apiCode?: unknown } } | undefined)?.data
  return typeof data?.apiCode === 'string' ? data.apiCode.toLowerCase() : 'transcription_ticket_failed'
}

interface ServerFrame {
  event?: string
  itemId?: string
  text?: string
  code?: string
  message?: string
  usage?: { seconds?: number, flux?: number }
  cancelled?: boolean
}

/** The audio's bytes as whole 16-bit samples, with a byte left over from the last call put first. */
function createFramer() {
  let carry: number | null = null
  return (pcm16: ArrayBuffer | Int16Array): ArrayBuffer[] => {
    const view = pcm16 instanceof Int16Array ? new Uint8Array(pcm16.buffer, pcm16.byteOffset, pcm16.byteLength) : new Uint8Array(pcm16)
    let bytes = view
    if (carry !== null) {
      bytes = new Uint8Array(view.byteLength + 1)
      bytes[0] = carry
      bytes.set(view, 1)
    }
    const even = bytes.byteLength - (bytes.byteLength % 2)
    carry = even < bytes.byteLength ? bytes[even]! : null
    const frames: ArrayBuffer[] = []
    for (let start = 0; start < even; start += MAX_AUDIO_FRAME_BYTES)
      frames.push(bytes.slice(start, Math.min(start + MAX_AUDIO_FRAME_BYTES, even)).buffer)
    return frames
  }
}

/**
 * One streaming transcription session over the server's socket: takes a ticket,
 * opens the socket, sends `start`, then the audio as it is given, and reports
 * each utterance's text as it grows and when it is final. Audio given before the
 * socket opens is queued, up to `maxQueuedBytes`. A socket that closes without
 * `session.finished` is an error (`streaming_stt_closed`).
 */
export function createTranscriptionStream(options: TranscriptionStreamOptions): TranscriptionStream {
  const { onDelta, onFinal, onStarted, onError, onDone } = options
  const WebSocketImpl = options.WebSocket ?? (globalThis.WebSocket as WebSocketConstructor | undefined)
  const maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES
  const toFrames = createFramer()
  const outbox: Array<string | ArrayBuffer> = [JSON.stringify({
    event: 'start',
    ...(options.model ? { model: options.model } : {}),
    ...(options.language ? { language: options.language } : {}),
    ...(options.sampleRate ? { sample_rate: options.sampleRate } : {}),
  })]
  let queuedBytes = 0
  let socket: WebSocket | undefined
  let over = false
  // After stop or cancel no more audio is taken.
  let ended = false
  let cancelled = false
  let resolveClosed!: () => void
  const closed = new Promise<void>(resolve => (resolveClosed = resolve))

  function fail(error: TranscriptionStreamError): void {
    if (over)
      return
    over = true
    outbox.length = 0
    onError?.(error)
    socket?.close()
    resolveClosed()
  }

  function send(data: string | ArrayBuffer): void {
    if (over)
      return
    const size = typeof data === 'string' ? 0 : data.byteLength
    const open = socket?.readyState === 1
    // Audio the socket cannot take as fast as it is recorded is a failure, not memory that grows.
    if ((open ? socket!.bufferedAmount : queuedBytes) + size > maxQueuedBytes)
      return fail(new TranscriptionStreamError('audio_backlog', `More than ${maxQueuedBytes} bytes of audio waited for the transcription socket`))
    if (open)
      return socket!.send(data)
    queuedBytes += size
    outbox.push(data)
  }

  function onFrame(frame: ServerFrame): void {
    switch (frame.event) {
      case 'session.started':
        return onStarted?.()
      case 'transcript.delta':
        return onDelta?.({ itemId: frame.itemId ?? '', text: frame.text ?? '' })
      case 'transcript.final':
        return onFinal?.({ itemId: frame.itemId ?? '', text: frame.text ?? '' })
      case 'session.finished':
        over = true
        onDone?.({ seconds: frame.usage?.seconds ?? 0, flux: frame.usage?.flux ?? 0, cancelled: frame.cancelled === true })
        resolveClosed()
        return
      case 'error':
        return fail(new TranscriptionStreamError(frame.code ?? 'unknown_error', frame.message ?? 'The transcription session failed'))
    }
  }

  function connect(ticket: string): void {
    if (over)
      return
    if (!WebSocketImpl)
      return fail(new TranscriptionStreamError('websocket_unavailable', 'No WebSocket implementation: pass one as the WebSocket option'))
    const ws = new WebSocketImpl(socketUrl(options.baseUrl, ticket))
    socket = ws
    ws.binaryType = 'arraybuffer'
    ws.onopen = () => {
      for (const data of outbox.splice(0))
        ws.send(data)
      queuedBytes = 0
    }
    ws.onmessage = (event: MessageEvent) => {
      if (over || typeof event.data !== 'string')
        return
      let parsed: ServerFrame
      try {
        parsed = JSON.parse(event.data) as ServerFrame
      }
      catch {
        return fail(new TranscriptionStreamError('invalid_server_frame', 'The server sent a frame that is not JSON'))
      }
      onFrame(parsed)
    }
    ws.onclose = (event: { code: number }) => {
      fail(new TranscriptionStreamError('streaming_stt_closed', `The transcription socket closed before the session finished (${event.code})`))
    }
  }

  options.client.audio.createTranscriptionTicket.mutate().then(
    ({ ticket }) => connect(ticket),
    (error: unknown) => fail(new TranscriptionStreamError(codeOf(error), (error as Error).message)),
  )

  return {
    sendAudio(pcm16) {
      if (ended)
        return
      for (const data of toFrames(pcm16))
        send(data)
    },
    stop() {
      if (!ended) {
        ended = true
        send(JSON.stringify({ event: 'stop' }))
      }
    },
    cancel() {
      if (!cancelled) {
        ended = cancelled = true
        send(JSON.stringify({ event: 'cancel' }))
      }
    },
    closed,
  }
}
