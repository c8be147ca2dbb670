import type { FastifyPluginAsync } from 'fastify'
import type { RawData } from 'ws'

import type { Api } from '@airi/api'

import { SocketCounts, withDefaults } from './socket-limits.ts'

type StreamingTranscription = Api['services']['streamingTranscription']
type TranscriptionSink = Parameters<StreamingTranscription['startSession']>[1]
type TranscriptionTicketHolder = Parameters<StreamingTranscription['startSession']>[0]

/** What one client may hold open on the transcription socket. */
export interface TranscriptionSocketLimits {
  /** Concurrent transcription sockets per user, on this instance. */
  socketsPerUser: number
  /**
   * A session with no frame from the client for this long ends with
   * `idle_timeout` (or `upstream_timeout` while it waits for the upstream).
   */
  idleTimeoutMs: number
  /** Largest client frame, in bytes (an audio or control frame). */
  maxFrameBytes: number
  /** Bytes queued for one client past which the upstream is no longer read, until half of it has drained. */
  maxBufferedBytes: number
  /** How long the queue may stay over `maxBufferedBytes` before the session ends with `drain_timeout`. */
  drainTimeoutMs: number
  /** After the server closes a socket, how long the client has to complete the close before the connection is cut. */
  closeGraceMs: number
}

const defaultTranscriptionSocketLimits: TranscriptionSocketLimits = {
  socketsPerUser: 4,
  idleTimeoutMs: 30_000,
  maxFrameBytes: 64 * 1024,
  maxBufferedBytes: 1024 * 1024,
  drainTimeoutMs: 30_000,
  closeGraceMs: 10_000,
}

export interface StreamingTranscriptionPluginOptions {
  api: Api
  limits?: Partial<TranscriptionSocketLimits>
}

declare module 'fastify' {
  interface FastifyRequest {
    transcriptionTicketHolder?: TranscriptionTicketHolder | null
  }
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data))
    return data
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
}

/**
 * The streaming transcription socket at `{prefix}/transcriptions/ws?ticket=…`
 * (SPEC §4.13). The ticket is the only credential: it is consumed before the
 * upgrade, and a socket without a valid one is told `unauthorized` and closed
 * with 4001. Everything else (frames, billing, the upstream) is the
 * streaming-transcription service's.
 */
export const streamingTranscriptionPlugin: FastifyPluginAsync<StreamingTranscriptionPluginOptions> = async (app, { api, limits: overrides }) => {
  const limits = withDefaults(defaultTranscriptionSocketLimits, overrides)
  const service = api.services.streamingTranscription
  const socketsByUser = new SocketCounts(limits.socketsPerUser)

  app.get('/transcriptions/ws', {
    websocket: true,
    preValidation: async (request) => {
      const { ticket } = request.query as { ticket?: unknown }
      request.transcriptionTicketHolder = await service.redeemTicket(typeof ticket === 'string' ? ticket : undefined)
    },
  }, (socket, request) => {
    api.metrics.wsConnections.add(1, { 'airi.ws.endpoint': 'transcription' })
    let graceTimer: NodeJS.Timeout | undefined
    socket.once('close', () => {
      clearTimeout(graceTimer)
      api.metrics.wsConnections.add(-1, { 'airi.ws.endpoint': 'transcription' })
    })
    // The close frame waits behind whatever the client has not read, and a client
    // that stops reading never answers it: past the grace the connection is cut.
    const closeSocket = (code: number, reason: string) => {
      // A socket paused for a slow upstream would never read the client's close.
      socket.resume()
      socket.close(code, reason)
      graceTimer ??= setTimeout(() => socket.terminate(), limits.closeGraceMs)
    }
    const refuse = (code: string, message: string) => {
      socket.send(JSON.stringify({ event: 'error', code, message }))
      closeSocket(service.closeCodeFor(code), code)
    }
    const holder = request.transcriptionTicketHolder
    if (!holder)
      return refuse('unauthorized', 'A valid transcription ticket is required (audio.createTranscriptionTicket)')
    const { userId } = holder
    if (socketsByUser.full(userId))
      return refuse('too_many_connections', `At most ${limits.socketsPerUser} transcription sockets per user`)
    const release = socketsByUser.add(userId)

    let closing = false
    const idleTimer = setTimeout(() => void session.timedOut(limits.idleTimeoutMs), limits.idleTimeoutMs)
    // Client frames only: our own transcripts do not keep a silent client's session open.
    const touch = () => {
      if (!closing)
        idleTimer.refresh()
    }
    // Over the bound, the session stops reading the upstream (sendJson answers
    // false) until half of it has drained, or ends at the drain deadline.
    let drainTimer: NodeJS.Timeout | undefined
    const written = (error?: Error) => {
      if (!error && drainTimer && socket.bufferedAmount <= limits.maxBufferedBytes / 2) {
        clearTimeout(drainTimer)
        drainTimer = undefined
        session.drained()
      }
    }
    const sink: TranscriptionSink = {
      sendJson(frame) {
        if (socket.readyState !== socket.OPEN)
          return false
        // The callback runs once the connection has taken the frame (written to the kernel).
        socket.send(JSON.stringify(frame), written)
        if (!drainTimer && !closing && socket.bufferedAmount > limits.maxBufferedBytes)
          drainTimer = setTimeout(() => void session.abort('drain_timeout', `The client did not read its transcripts within ${limits.drainTimeoutMs} ms`), limits.drainTimeoutMs)
        return drainTimer === undefined
      },
      pauseInput: () => socket.pause(),
      resumeInput() {
        socket.resume()
        // The client was not idle while we were not reading it.
        touch()
      },
      close(code, reason) {
        closing = true
        clearTimeout(idleTimer)
        clearTimeout(drainTimer)
        closeSocket(code, reason)
      },
    }
    const session = service.startSession(holder, sink)

    socket.on('message', (data, isBinary) => {
      touch()
      const frame = toBuffer(data)
      if (frame.length > limits.maxFrameBytes)
        return session.refuse('invalid_frame', `A frame may carry at most ${limits.maxFrameBytes} bytes`)
      session.receive(frame, isBinary)
    })
    socket.on('error', (error) => {
      request.log.debug({ err: error }, 'transcription socket error')
    })
    socket.once('close', () => {
      closing = true
      clearTimeout(idleTimer)
      clearTimeout(drainTimer)
      release()
      void session.disconnected()
    })
  })
}
