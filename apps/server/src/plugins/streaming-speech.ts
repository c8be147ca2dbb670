import type { FastifyPluginAsync } from 'fastify'
import type { RawData } from 'ws'

import { closeCodeFor, type Api, type ServerFrame, type SpeechSink, type SpeechTicketHolder } from '@airi/api'

/** What one client may hold open on the speech socket (docs/operations.md lists them with their env names). */
export interface SpeechSocketLimits {
  /** Concurrent speech sockets per user, on this instance. */
  socketsPerUser: number
  /** A session with no frame either way for this long ends with `idle_timeout`. */
  idleTimeoutMs: number
  /** Largest client frame, in bytes (a start or text frame). */
  maxFrameBytes: number
}

export const defaultSpeechSocketLimits: SpeechSocketLimits = {
  socketsPerUser: 4,
  idleTimeoutMs: 30_000,
  maxFrameBytes: 64 * 1024,
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
  const limits = { ...defaultSpeechSocketLimits, ...Object.fromEntries(Object.entries(overrides ?? {}).filter(([, value]) => value !== undefined)) }
  const service = api.services.streamingSpeech
  const openByUser = new Map<string, number>()

  app.get('/speech/ws', {
    websocket: true,
    preValidation: async (request) => {
      const { ticket } = request.query as { ticket?: unknown }
      request.speechTicketHolder = await service.redeemTicket(typeof ticket === 'string' ? ticket : undefined)
    },
  }, (socket, request) => {
    api.metrics.wsConnections.add(1, { 'airi.ws.endpoint': 'speech' })
    socket.once('close', () => api.metrics.wsConnections.add(-1, { 'airi.ws.endpoint': 'speech' }))
    const refuse = (code: string, message: string) => {
      socket.send(JSON.stringify({ event: 'error', code, message } satisfies ServerFrame))
      socket.close(closeCodeFor(code), code)
    }
    const holder = request.speechTicketHolder
    if (!holder)
      return refuse('unauthorized', 'A valid speech ticket is required (audio.createSpeechTicket)')
    const { userId } = holder
    const open = openByUser.get(userId) ?? 0
    if (open >= limits.socketsPerUser)
      return refuse('too_many_connections', `At most ${limits.socketsPerUser} speech sockets per user`)
    openByUser.set(userId, open + 1)

    let idleTimer: NodeJS.Timeout | undefined
    const touch = () => {
      clearTimeout(idleTimer)
      idleTimer = setTimeout(() => void session.abort('idle_timeout', `No frame for ${limits.idleTimeoutMs} ms`), limits.idleTimeoutMs)
    }
    const sink: SpeechSink = {
      sendJson(frame) {
        if (socket.readyState === socket.OPEN) {
          socket.send(JSON.stringify(frame))
          touch()
        }
      },
      sendAudio(chunk) {
        if (socket.readyState === socket.OPEN) {
          socket.send(chunk, { binary: true })
          touch()
        }
      },
      close(code, reason) {
        clearTimeout(idleTimer)
        socket.close(code, reason)
      },
    }
    const session = service.startSession(holder, sink)
    touch()

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
      clearTimeout(idleTimer)
      const left = (openByUser.get(userId) ?? 1) - 1
      if (left > 0)
        openByUser.set(userId, left)
      else
        openByUser.delete(userId)
      void session.disconnected()
    })
  })
}
