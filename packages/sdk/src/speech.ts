import type { AiriClient, TokenGetter, WebSocketConstructor } from './client.ts'

/** Where the streaming speech socket is served (the server's streaming-speech plugin under /api/v1/audio). */
const SPEECH_SOCKET_PATH = '/api/v1/audio/speech/ws'
const SPEECH_REST_PATH = '/api/v1/audio/speech'

/** A speech session's failure: the server's `code` (`insufficient_flux`, `upstream_closed`, …) and message. */
export class SpeechStreamError extends Error {
  override readonly name = 'SpeechStreamError'
  constructor(readonly code: string, message: string) {
    super(message)
  }
}

/** What a finished session cost: characters billed and the whole Flux that settled (null when the transport does not say). */
export interface SpeechUsage {
  characters: number
  flux: number | null
}

export interface SpeechCallbacks {
  /** Audio bytes, in order, as the upstream produced them. */
  onAudio: (chunk: Uint8Array) => void
  /** A sentence the upstream started speaking. */
  onSentence?: (text: string) => void
  /** The upstream accepted the session. */
  onStarted?: () => void
  /** Once, when the session fails; nothing else is reported after it. */
  onError?: (error: SpeechStreamError) => void
  /** Once, when the session finished (or was cancelled) and was billed. */
  onDone?: (usage: SpeechUsage & { cancelled: boolean }) => void
}

export interface SpeechStreamOptions extends SpeechCallbacks {
  /** The server's origin, as for `createAiriClient`. */
  baseUrl: string
  /** A signed-in client: it fetches the socket's single-use ticket. */
  client: AiriClient
  model: string
  voice: string
  format?: 'mp3' | 'opus' | 'aac' | 'flac' | 'wav' | 'pcm'
  extraBody?: Record<string, unknown>
  /** Defaults to the global WebSocket; pass `ws` on Node versions without one. */
  WebSocket?: WebSocketConstructor
}

export interface SpeechStream {
  /** Queues text (an LLM token, verbatim); sent in order once the socket is open. */
  appendText: (text: string) => void
  /** No more text: the rest is spoken, then `onDone`. */
  finish: () => void
  /** Stops speaking; `onDone` reports what was billed (nothing if no audio was heard). */
  cancel: () => void
  /** Settles when the session is over, whichever way. */
  closed: Promise<void>
}

function socketUrl(baseUrl: string, ticket: string): string {
  const url = new URL(SPEECH_SOCKET_PATH.slice(1), baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  url.searchParams.set('ticket', ticket)
  return url.toString()
}

/** The domain code of a failed tRPC call (`data.apiCode`), lower-cased like the socket's codes. */
function codeOf(error: unknown): string {
  const data = (error as { data?: { apiCode?: unknown } } | undefined)?.data
  return typeof data?.apiCode === 'string' ? data.apiCode.toLowerCase() : 'speech_ticket_failed'
}

/**
 * One streaming speech session (one LLM reply) over the server's speech socket:
 * takes a ticket, opens the socket, streams text in as it comes and audio out as
 * it is made. Frames given before the socket opens are queued. A socket that
 * closes without `session.finished` is an error (`streaming_tts_closed`).
 */
export function createSpeechStream(options: SpeechStreamOptions): SpeechStream {
  const { onAudio, onSentence, onStarted, onError, onDone } = options
  const WebSocketImpl = options.WebSocket ?? (globalThis.WebSocket as WebSocketConstructor | undefined)
  const outbox: string[] = [JSON.stringify({
    event: 'start',
    model: options.model,
    voice: options.voice,
    ...(options.format ? { response_format: options.format } : {}),
    ...(options.extraBody ? { extra_body: options.extraBody } : {}),
  })]
  let socket: WebSocket | undefined
  let over = false
  let resolveClosed!: () => void
  const closed = new Promise<void>(resolve => (resolveClosed = resolve))

  function fail(error: SpeechStreamError): void {
    if (over)
      return
    over = true
    onError?.(error)
    socket?.close()
    resolveClosed()
  }

  function send(frame: object): void {
    if (over)
      return
    const text = JSON.stringify(frame)
    if (socket?.readyState === 1)
      socket.send(text)
    else
      outbox.push(text)
  }

  function connect(ticket: string): void {
    if (over)
      return
    if (!WebSocketImpl)
      return fail(new SpeechStreamError('websocket_unavailable', 'No WebSocket implementation: pass one as the WebSocket option'))
    const ws = new WebSocketImpl(socketUrl(options.baseUrl, ticket))
    socket = ws
    ws.binaryType = 'arraybuffer'
    ws.onopen = () => {
      for (const frame of outbox.splice(0))
        ws.send(frame)
    }
    ws.onmessage = (event: MessageEvent) => {
      if (over)
        return
      if (typeof event.data !== 'string')
        return onAudio(new Uint8Array(event.data as ArrayBuffer))
      let frame: { event?: string, text?: string, code?: string, message?: string, usage?: { characters: number, flux: number }, cancelled?: boolean }
      try {
        frame = JSON.parse(event.data) as typeof frame
      }
      catch {
        return fail(new SpeechStreamError('invalid_server_frame', 'The server sent a frame that is not JSON'))
      }
      switch (frame.event) {
        case 'session.started':
          return onStarted?.()
        case 'sentence':
          return onSentence?.(frame.text ?? '')
        case 'session.finished':
          over = true
          onDone?.({ characters: frame.usage?.characters ?? 0, flux: frame.usage?.flux ?? null, cancelled: frame.cancelled === true })
          resolveClosed()
          return
        case 'error':
          return fail(new SpeechStreamError(frame.code ?? 'unknown_error', frame.message ?? 'The speech session failed'))
      }
    }
    ws.onclose = (event: { code: number }) => {
      fail(new SpeechStreamError('streaming_tts_closed', `The speech socket closed before the session finished (${event.code})`))
    }
  }

  options.client.audio.createSpeechTicket.mutate().then(
    ({ ticket }) => connect(ticket),
    (error: unknown) => fail(new SpeechStreamError(codeOf(error), (error as Error).message)),
  )

  return {
    appendText: text => send({ event: 'text', text }),
    finish: () => send({ event: 'finish' }),
    cancel: () => send({ event: 'cancel' }),
    closed,
  }
}

/** How a provider says its speech is served (`capabilities.speech.transport` of its config). */
export interface TtsProvider {
  capabilities?: { speech?: { transport?: 'bidirectional-ws' | 'http' } }
}

export interface TtsSessionOptions extends SpeechStreamOptions {
  /** For the REST adapter: the bearer token of each request. */
  getToken?: TokenGetter
  /** For the REST adapter; defaults to the global fetch. */
  fetch?: typeof fetch
}

/** A sentence ends at . ! ? (or their CJK forms) followed by whitespace. */
const SENTENCE_END = /[.!?。！？]+\s+/

/**
 * The REST adapter: text is cut into sentences as it arrives and each is spoken
 * by `POST /api/v1/audio/speech`, one after another, so audio still starts before
 * the reply is complete (one sentence later than the socket).
 */
function createRestSpeechSession(options: TtsSessionOptions): SpeechStream {
  const fetchImpl = options.fetch ?? globalThis.fetch
  let pending = ''
  let characters = 0
  let over = false
  let resolveClosed!: () => void
  const closed = new Promise<void>(resolve => (resolveClosed = resolve))
  let chain = Promise.resolve()
  let controller = new AbortController()

  function end(report: () => void): void {
    if (over)
      return
    over = true
    report()
    resolveClosed()
  }

  async function speak(segment: string): Promise<void> {
    if (over || segment.trim() === '')
      return
    const token = await options.getToken?.()
    const response = await fetchImpl(new URL(SPEECH_REST_PATH.slice(1), options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`), {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ model: options.model, voice: options.voice, input: segment, ...(options.format ? { response_format: options.format } : {}), ...(options.extraBody ? { extra_body: options.extraBody } : {}) }),
      signal: controller.signal,
    })
    if (!response.ok) {
      const body = await response.json().catch(() => undefined) as { error?: { code?: string, message?: string } } | undefined
      throw new SpeechStreamError(body?.error?.code?.toLowerCase() ?? `http_${response.status}`, body?.error?.message ?? `Speech request failed (${response.status})`)
    }
    const audio = new Uint8Array(await response.arrayBuffer())
    if (over)
      return
    characters += [...segment].length
    options.onSentence?.(segment)
    options.onAudio(audio)
  }

  function enqueue(segment: string): void {
    chain = chain.then(() => speak(segment)).catch((error: unknown) => {
      if (!over)
        end(() => options.onError?.(error instanceof SpeechStreamError ? error : new SpeechStreamError('speech_request_failed', (error as Error).message)))
    })
  }

  options.onStarted?.()
  return {
    appendText(text) {
      if (over)
        return
      pending += text
      let match = SENTENCE_END.exec(pending)
      while (match) {
        const cut = match.index + match[0].length
        enqueue(pending.slice(0, cut))
        pending = pending.slice(cut)
        match = SENTENCE_END.exec(pending)
      }
    },
    finish() {
      if (over)
        return
      enqueue(pending)
      pending = ''
      chain = chain.then(() => end(() => options.onDone?.({ characters, flux: null, cancelled: false })))
    },
    cancel() {
      controller.abort()
      controller = new AbortController()
      end(() => options.onDone?.({ characters, flux: null, cancelled: true }))
    },
    closed,
  }
}

/**
 * A speech session for `provider`: the streaming socket when it declares
 * `capabilities.speech.transport: 'bidirectional-ws'`, else sentence-by-sentence
 * REST. Both take the same calls and report through the same callbacks.
 */
export function createTtsSession(provider: TtsProvider, options: TtsSessionOptions): SpeechStream {
  return provider.capabilities?.speech?.transport === 'bidirectional-ws'
    ? createSpeechStream(options)
    : createRestSpeechSession(options)
}
