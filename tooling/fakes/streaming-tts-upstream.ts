import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

import { WebSocket, WebSocketServer, type RawData } from 'ws'

/** How the fake misbehaves, for the sessions that start after `behave` is called. */
export interface StreamingTtsMisbehaviour {
  /** Destroy the connection (no close frame, no `session.finished`) after this many audio chunks. */
  dropAfterAudioChunks?: number
  /** Send this error frame (code and message at the top level) after this many audio chunks, then close. */
  errorAfter?: { audioChunks: number, code: string, message: string }
  /** Wait this long after the start frame before `session.started`. */
  slowStartMs?: number
  /** `session.finished` without `usage`. */
  noUsage?: boolean
  /** Report this many `text_words` instead of the characters received. */
  reportTextWords?: number
  /** Refuse the handshake with this status (e.g. 401 for a key it does not like, 503). */
  refuseStatus?: number
  /**
   * After `session.started`, stream this much audio in chunks of `chunkBytes` as
   * fast as the connection takes it (the fake keeps its own buffer under 1 MiB, so
   * what it manages to send shows whether the server still reads). Chunk `i`
   * starts with `i` as a 32-bit big-endian integer; the chunks are counted in
   * `audioBytes`, not kept in `audio`. Frames are answered as usual meanwhile.
   */
  flood?: { chunkBytes: number, totalBytes: number }
}

/** One session as the fake saw it; the object stays live, so tests can poll it. */
export interface FakeStreamSession {
  /** The bearer key it was dialled with. */
  key: string
  start?: { model: string, voice: string, response_format?: string, extra_body?: Record<string, unknown> }
  /** Every `text` frame's text, verbatim and in order. */
  texts: string[]
  /** Every client frame's `event`, in order. */
  events: string[]
  /** The audio chunks sent, in order (a flood's are only counted in `audioBytes`). */
  audio: Buffer[]
  /** Audio bytes handed to the connection, a flood's included. */
  audioBytes: number
  /** A flood sent all its bytes. */
  floodDone: boolean
  finishReceived: boolean
  cancelled: boolean
  /** The fake sent `session.finished`. */
  finished: boolean
  closed: boolean
}

export interface FakeStreamingTtsUpstream {
  /** The WebSocket URL to put in `STREAMING_TTS_UPSTREAM.url`. */
  url: string
  sessions: FakeStreamSession[]
  /** Handshakes refused (by `refuseStatus`), with the key each carried. */
  refused: string[]
  behave: (misbehaviour: StreamingTtsMisbehaviour) => void
  /**
   * Holds every handshake until the returned function is called: the server's
   * dial stays pending while its client keeps sending.
   */
  holdHandshakes: () => () => void
  /** The audio the fake speaks for a sentence: deterministic bytes, split in two chunks. */
  audioFor: (sentence: string) => Buffer[]
  reset: () => void
  close: () => Promise<void>
}

/** Characters as our billing counts them: code points. */
const characters = (text: string) => [...text].length

/** A sentence ends at . ! ? (or their CJK forms) followed by whitespace; the rest is spoken at finish. */
const SENTENCE_END = /[.!?。！？]+\s+/

function audioFor(sentence: string): Buffer[] {
  const digest = createHash('sha256').update(sentence).digest()
  const body = Buffer.concat([Buffer.from([0, 1, 2, 255]), digest, Buffer.from(sentence, 'utf8')])
  const middle = Math.ceil(body.length / 2)
  return [body.subarray(0, middle), body.subarray(middle)]
}

function rawText(data: RawData): string {
  return (Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)).toString('utf8')
}

/**
 * A streaming TTS upstream speaking the unspeech stream protocol: after `start` it
 * sends `session.started`; as text arrives it splits sentences and, for each,
 * sends `sentence.start` (`payload.text`), the sentence's audio as binary frames
 * and `sentence.end`; on `finish` it speaks what is left and sends
 * `session.finished` with `usage.text_words`. `behave` switches on the
 * misbehaviours a real upstream has: dropping mid-stream, an error frame, a slow
 * start, no usage, a refused handshake.
 */
export async function startFakeStreamingTtsUpstream(): Promise<FakeStreamingTtsUpstream> {
  const sessions: FakeStreamSession[] = []
  const refused: string[] = []
  let misbehaviour: StreamingTtsMisbehaviour = {}
  let handshakeGate: Promise<void> | undefined
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
    const key = (req.headers.authorization ?? '').replace(/^Bearer /i, '')
    const behaviour = misbehaviour
    const accept = () => {
      if (behaviour.refuseStatus) {
        refused.push(key)
        socket.end(`HTTP/1.1 ${behaviour.refuseStatus} Refused\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
        return
      }
      wss.handleUpgrade(req, socket, head, ws => serve(ws, key, behaviour))
    }
    if (handshakeGate)
      void handshakeGate.then(accept)
    else
      accept()
  })

  function serve(ws: WebSocket, key: string, behaviour: StreamingTtsMisbehaviour): void {
    const session: FakeStreamSession = { key, texts: [], events: [], audio: [], audioBytes: 0, finishReceived: false, cancelled: false, finished: false, closed: false, floodDone: false }
    sessions.push(session)
    let pending = ''
    let received = 0
    let ended = false
    let started: Promise<void> = Promise.resolve()
    let flooding: Promise<void> = Promise.resolve()
    // Frames are answered one after another, after the (possibly slow) start.
    let chain = Promise.resolve()

    const sendJson = (frame: object) => {
      if (!ended && ws.readyState === WebSocket.OPEN)
        ws.send(JSON.stringify(frame))
    }
    function speak(sentence: string): void {
      if (ended)
        return
      sendJson({ event: 'sentence.start', payload: { text: sentence } })
      for (const chunk of audioFor(sentence)) {
        if (ended)
          return
        ws.send(chunk, { binary: true })
        session.audio.push(chunk)
        session.audioBytes += chunk.length
        const count = session.audio.length
        if (behaviour.dropAfterAudioChunks !== undefined && count >= behaviour.dropAfterAudioChunks) {
          ended = true
          return void ws.terminate()
        }
        if (behaviour.errorAfter && count >= behaviour.errorAfter.audioChunks) {
          sendJson({ event: 'error', code: behaviour.errorAfter.code, message: behaviour.errorAfter.message })
          ended = true
          return void ws.close(1011)
        }
      }
      sendJson({ event: 'sentence.end', payload: { text: sentence } })
    }
    function speakComplete(): void {
      let match = SENTENCE_END.exec(pending)
      while (match && !ended) {
        const end = match.index + match[0].length
        speak(pending.slice(0, end))
        pending = pending.slice(end)
        match = SENTENCE_END.exec(pending)
      }
    }

    async function flood({ chunkBytes, totalBytes }: { chunkBytes: number, totalBytes: number }): Promise<void> {
      for (let index = 0, sent = 0; sent < totalBytes; index++) {
        // Its own backpressure: wait for the connection to take what is queued.
        while (ws.bufferedAmount > 1024 * 1024 && !ended)
          await new Promise(resolve => setTimeout(resolve, 5))
        if (ended || ws.readyState !== WebSocket.OPEN)
          return
        const chunk = Buffer.alloc(Math.min(chunkBytes, totalBytes - sent), index % 251)
        chunk.writeUInt32BE(index, 0)
        ws.send(chunk, { binary: true })
        sent += chunk.length
        session.audioBytes += chunk.length
      }
      session.floodDone = true
    }

    async function onFrame(frame: { event?: string, text?: unknown, model?: string, voice?: string, response_format?: string, extra_body?: Record<string, unknown> }): Promise<void> {
      session.events.push(String(frame.event))
      switch (frame.event) {
        case 'start':
          session.start = { model: String(frame.model), voice: String(frame.voice), ...(frame.response_format ? { response_format: frame.response_format } : {}), ...(frame.extra_body ? { extra_body: frame.extra_body } : {}) }
          started = new Promise(resolve => setTimeout(resolve, behaviour.slowStartMs ?? 0))
          await started
          sendJson({ event: 'session.started' })
          // Not awaited: frames (cancel above all) are still answered while it floods.
          if (behaviour.flood)
            flooding = flood(behaviour.flood)
          return
        case 'text':
          session.texts.push(String(frame.text))
          pending += String(frame.text)
          received += characters(String(frame.text))
          return speakComplete()
        case 'finish':
          session.finishReceived = true
          // The flood is spoken before what finish asks for.
          await flooding
          speakComplete()
          if (pending.length > 0 && !ended)
            speak(pending)
          pending = ''
          if (ended)
            return
          sendJson({ event: 'session.finished', ...(behaviour.noUsage ? {} : { payload: { usage: { text_words: behaviour.reportTextWords ?? received } } }) })
          session.finished = true
          ended = true
          return void ws.close(1000)
        case 'cancel':
          session.cancelled = true
          ended = true
          return void ws.close(1000)
        default:
          sendJson({ event: 'error', code: 'invalid_event', message: `unknown event ${String(frame.event)}` })
      }
    }

    ws.on('message', (data, isBinary) => {
      if (isBinary)
        return
      let frame: Parameters<typeof onFrame>[0]
      try {
        frame = JSON.parse(rawText(data)) as Parameters<typeof onFrame>[0]
      }
      catch {
        return sendJson({ event: 'error', code: 'invalid_json', message: 'frames are JSON' })
      }
      chain = chain.then(() => onFrame(frame))
    })
    ws.on('error', () => {})
    ws.on('close', () => {
      session.closed = true
      ended = true
    })
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  return {
    url: `ws://127.0.0.1:${port}/api/v1/audio/speech/ws`,
    sessions,
    refused,
    behave(next) {
      misbehaviour = next
    },
    holdHandshakes() {
      let release!: () => void
      handshakeGate = new Promise(resolve => (release = resolve))
      return () => {
        handshakeGate = undefined
        release()
      }
    },
    audioFor,
    reset() {
      sessions.length = 0
      refused.length = 0
      misbehaviour = {}
    },
    async close() {
      for (const client of wss.clients)
        client.terminate()
      for (const socket of sockets)
        socket.destroy()
      await new Promise<void>(resolve => wss.close(() => resolve()))
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
}
