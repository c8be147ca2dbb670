import type { FastifyPluginAsync } from 'fastify'
import type { RawData } from 'ws'

import { closeCodeFor, type Api, type ServerFrame, type SpeechSink, type SpeechTicketHolder } from '@airi/api'

import { SocketCounts, withDefaults } from './socket-limits.ts'

/** What one client may hold open on the speech socket (docs/operations.md lists them with their env names). */
export interface SpeechSocketLimits {
  /** Concurrent speech sockets per user, on this instance. */
  socketsPerUser: number
  /**
   * A session with no frame from the client and nothing of ours taken by its
   * connection for this long ends with `idle_timeout` (our own sends do not count).
   */
  idleTimeoutMs: number
  /** Largest client frame, in bytes (a start or text frame). */
  maxFrameBytes: number
  /** Bytes queued for one client past which the upstream is no longer read, until half of it has drained. */
  maxBufferedBytes: number
  /** How long the queue may stay over `maxBufferedBytes` before the session ends with `drain_timeout`. */
  drainTimeoutMs: number
  /** After the server closes a socket, how long the client has to complete the close before the connection is cut. */
  closeGraceMs: number
}

const defaultSpeechSocketLimits: SpeechSocketLimits = {
  socketsPerUser: 4,
  idleTimeoutMs: 30_000,
  maxFrameBytes: 64 * 1024,
  maxBufferedBytes: 1024 * 1024,
  drainTimeoutMs: 30_000,
  closeGraceMs: 10_000,
}

export interface StreamingSpeechPluginOptions {
  api: Api
  limits?: Partial<SpeechSocketLimits>
}

declare module 'fastify' {
  interface FastifyRequest {
    speechTicketHolder?: SpeechTicketHolder | null
  }
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data))
    return data
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
}

/**
 * The streaming speech socket at `{prefix}/speech/ws?ticket=…` (SPEC §4.7). The
 * ticket is the only credential: it is consumed before the upgrade, and a socket
 * without a valid one is told `unauthorized` and closed with 4001. Everything
 * else (frames, billing, the upstream) is the streaming-speech service's.
 */
export const streamingSpeechPlugin: FastifyPluginAsync<StreamingSpeechPluginOptions> = async (app, { api, limits: overrides }) => {
  const limits = withDefaults(defaultSpeechSocketLimits, overrides)
  const service = api.services.streamingSpeech
  const socketsByUser = new SocketCounts(limits.socketsPerUser)

  app.get('/speech/ws', {
    websocket: true,
    preValidation: async (request) => {
      const { ticket } = request.query as { ticket?: unknown }
      request.speechTicketHolder = await service.redeemTicket(typeof ticket === 'string' ? ticket : undefined)
    },
  }, (socket, request) => {
    api.metrics.wsConnections.add(1, { 'airi.ws.endpoint': 'speech' })
    let graceTimer: NodeJS.Timeout | undefined
    socket.once('close', () => {
      clearTimeout(graceTimer)
      api.metrics.wsConnections.add(-1, { 'airi.ws.endpoint': 'speech' })
    })
    // The close frame waits behind whatever the client has not read, and a client
    // that stops reading never answers it: past the grace the connection is cut.
    const closeSocket = (code: number, reason: string) => {
      socket.close(code, reason)
      graceTimer ??= setTimeout(() => socket.terminate(), limits.closeGraceMs)
    }
    const refuse = (code: string, message: string) => {
      socket.send(JSON.stringify({ event: 'error', code, message } satisfies ServerFrame))
      closeSocket(closeCodeFor(code), code)
    }
    const holder = request.speechTicketHolder
    if (!holder)
      return refuse('unauthorized', 'A valid speech ticket is required (audio.createSpeechTicket)')
    const { userId } = holder
    if (socketsByUser.full(userId))
      return refuse('too_many_connections', `At most ${limits.socketsPerUser} speech sockets per user`)
    const release = socketsByUser.add(userId)

    let closing = false
    const idleTimer = setTimeout(() => void session.abort('idle_timeout', `No frame from the client and nothing read for ${limits.idleTimeoutMs} ms`), limits.idleTimeoutMs)
    // Client activity only: a frame from it, or a frame of ours its connection took.
    const touch = () => {
      if (!closing)
        idleTimer.refresh()
    }
    // Over the bound, the session stops reading the upstream (sendAudio answers
    // false) until half of it has drained, or ends at the drain deadline.
    let drainTimer: NodeJS.Timeout | undefined
    const written = (error?: Error) => {
      if (error)
        return
      touch()
      if (drainTimer && socket.bufferedAmount <= limits.maxBufferedBytes / 2) {
        clearTimeout(drainTimer)
        drainTimer = undefined
        session.drained()
      }
    }
    const send = (data: string | Buffer, binary: boolean): boolean => {
      if (socket.readyState !== socket.OPEN)
        return false
      // The callback runs once the connection has taken the frame (written to the kernel).
      socket.send(data, { binary }, written)
      if (!drainTimer && !closing && socket.bufferedAmount > limits.maxBufferedBytes) {
        drainTimer = setTimeout(() => void session.abort('drain_timeout', `The client did not read its audio within ${limits.drainTimeoutMs} ms`), limits.drainTimeoutMs)
      }
      return drainTimer === undefined
    }
    const sink: SpeechSink = {
      sendJson: frame => void send(JSON.stringify(frame), false),
      sendAudio: chunk => send(chunk, true),
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
        return void session.abort('frame_too_large', `A frame may carry at most ${limits.maxFrameBytes} bytes`)
      session.receive(frame, isBinary)
    })
    socket.on('error', (error) => {
      request.log.debug({ err: error }, 'speech socket error')
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
