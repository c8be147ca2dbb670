import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TRPCError } from '@trpc/server'
import { fastifyTRPCPlugin, type FastifyTRPCPluginOptions } from '@trpc/server/adapters/fastify'
import { getWSConnectionHandler, type WSSHandlerOptions } from '@trpc/server/adapters/ws'
import type { WebSocket } from 'ws'

import { ApiError, type Api, type AppRouter, type LiveConnection } from '@airi/api'

import { refuseApiKeys } from './refuse-api-keys.ts'
import { trpcRetryAfter } from './errors.ts'
import { KeepAlive, SocketCounts, withDefaults, type KeptAlive } from './socket-limits.ts'
import { boundSends, createSharingEncoder } from './ws-outbound.ts'

/** Limits on what one client may hold open (docs/operations.md lists them with their env names). */
export interface TrpcLimits {
  /** Procedures in one batched call, over HTTP or WebSocket. */
  maxBatchSize: number
  /** Concurrent WebSockets per signed-in user, on this instance. */
  socketsPerUser: number
  /** Concurrent WebSockets per client address, on this instance. */
  socketsPerIp: number
  /** Concurrent subscriptions on one WebSocket. */
  subscriptionsPerSocket: number
  /** How long a WebSocket may stay open without a valid session (before its first call, or after sign-out). */
  authGraceMs: number
  /** Bytes that may wait for a client to read them; past this the socket is closed as a slow consumer. */
  maxBufferedBytes: number
  /** How long a slow consumer's socket may take to read up to its close frame before it is cut. */
  slowConsumerCloseMs: number
}

const defaultTrpcLimits: TrpcLimits = {
  maxBatchSize: 50,
  socketsPerUser: 16,
  socketsPerIp: 64,
  subscriptionsPerSocket: 16,
  authGraceMs: 10_000,
  maxBufferedBytes: 1024 * 1024,
  slowConsumerCloseMs: 10_000,
}

export interface TrpcPluginOptions {
  api: Api
  limits?: Partial<TrpcLimits>
}

/** Close codes the client sees (4000–4999 are the application's). */
const WS_CLOSE = {
  unauthorized: 4001,
  tooManyConnections: 4029,
  /** More than `maxBufferedBytes` waited for the client to read: it reconnects and resumes from its last event id. */
  slowConsumer: 4008,
} as const

export function toHeaders(raw: IncomingHttpHeaders): Headers {
  const headers = new Headers()
  for (const [name, value] of Object.entries(raw)) {
    if (Array.isArray(value))
      value.forEach(item => headers.append(name, item))
    else if (value !== undefined)
      headers.set(name, value)
  }
  return headers
}

/** tRPC's keep-alive: a client quiet this long is sent `PING`, and cut if it stays quiet `KEEP_ALIVE_PONG_WAIT_MS` more. */
const KEEP_ALIVE_PING_MS = 30_000
const KEEP_ALIVE_PONG_WAIT_MS = 5_000

function closeUnauthenticated(socket: WebSocket): void {
  socket.close(WS_CLOSE.unauthorized, 'Authentication required')
}

/**
 * What the plugin keeps for one socket. A class, so its methods live once on the
 * prototype: an idle socket costs this object, not a closure per method.
 */
class SocketState implements KeptAlive {
  readonly connection: LiveConnection
  lastSeen = Date.now()
  pingedAt = 0
  private graceTimer: NodeJS.Timeout | undefined
  private closed = false
  private readonly cleanups: Array<() => void> = []

  constructor(readonly socket: WebSocket, readonly request: FastifyRequest, private readonly limits: TrpcLimits) {
    this.connection = { subscriptions: 0, maxSubscriptions: limits.subscriptionsPerSocket }
  }

  /** Closes the socket unless a valid session arrives first. */
  armGrace(): void {
    this.graceTimer ??= setTimeout(closeUnauthenticated, this.limits.authGraceMs, this.socket)
  }

  disarmGrace(): void {
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
  }

  /** Runs `cleanup` once the socket closes; at once if it has (it can close while its context is still being made). */
  onClose(cleanup: () => void): void {
    if (this.closed)
      cleanup()
    else
      this.cleanups.push(cleanup)
  }

  close(): void {
    this.closed = true
    this.disarmGrace()
    for (const cleanup of this.cleanups)
      cleanup()
  }
}

/**
 * tRPC over HTTP (batching) and WebSocket (subscriptions) at this plugin's prefix.
 * Sockets are capped per user and per address, must authenticate within a grace
 * period, lose their session when it is revoked (see the session guard), and are
 * closed when their client stops reading (see ws-outbound.ts).
 */
export const trpcPlugin: FastifyPluginAsync<TrpcPluginOptions> = async (app, { api, limits: overrides }) => {
  const limits = withDefaults(defaultTrpcLimits, overrides)
  const socketsByIp = new SocketCounts(limits.socketsPerIp)
  const socketsByUser = new SocketCounts(limits.socketsPerUser)
  const sockets = new WeakMap<WebSocket, SocketState>()

  const onError = ({ error, path, type }: { error: TRPCError, path?: string, type: string }) => {
    if (error.code === 'INTERNAL_SERVER_ERROR')
      app.log.error({ err: error.cause ?? error, path, type }, 'tRPC procedure failed')
  }

  const trpcOptions = {
    router: api.router,
    maxBatchSize: limits.maxBatchSize,
    createContext: ({ req }) => api.createContext({
      headers: toHeaders(req.headers),
      requestId: String(req.id),
      logger: req.log,
    }),
    onError,
    responseMeta: trpcRetryAfter,
  } satisfies FastifyTRPCPluginOptions<AppRouter>['trpcOptions']
  // A personal API key is for the REST gateways only: every procedure, public ones too, answers it 401.
  app.addHook('onRequest', refuseApiKeys)
  await app.register(fastifyTRPCPlugin, { trpcOptions })

  const wsOptions: Omit<WSSHandlerOptions<AppRouter>, 'wss'> = {
    router: api.router,
    maxBatchSize: limits.maxBatchSize,
    // The keep-alive is the plugin's own (`KeepAlive`): one timer for every socket.
    // One serialization of a live event for all its subscriptions, its bytes shared by their frames.
    experimental_encoder: createSharingEncoder(),
    onError,
    createContext: async ({ req, res: socket, info }) => {
      const state = sockets.get(socket)
      // Credentials arrived: verifying them (slow under load) must not count against the grace period.
      state?.disarmGrace()
      const context = await api.createContext({
        headers: toHeaders(req.headers),
        connectionParams: info.connectionParams,
        requestId: state ? String(state.request.id) : randomUUID(),
        logger: app.log,
      })
      // A socket's caller is needed at once (caps, revocation); later calls reuse it.
      const auth = await context.getAuth()
      if (!state || !auth) {
        state?.armGrace()
        return { ...context, connection: state?.connection }
      }

      const { user, session } = auth
      if (socketsByUser.full(user.id)) {
        socket.close(WS_CLOSE.tooManyConnections, `Too many connections for this user (at most ${limits.socketsPerUser})`)
        throw new TRPCError({ code: 'TOO_MANY_REQUESTS', message: 'Too many connections for this user' })
      }
      state.onClose(socketsByUser.add(user.id))
      // A revoked session's calls and subscriptions already fail; the socket itself goes after the grace period.
      state.onClose(api.services.sessionGuard.watch(session, () => state.armGrace()))
      return { ...context, connection: state.connection }
    },
  }
  // The handler never reads `wss`; it only serves sockets handed to it.
  const onConnection = getWSConnectionHandler(wsOptions as WSSHandlerOptions<AppRouter>)

  const keepAlive = new KeepAlive(KEEP_ALIVE_PING_MS, KEEP_ALIVE_PONG_WAIT_MS)
  const connectionsGauge = { 'airi.ws.endpoint': 'trpc' }
  const countOut = () => api.metrics.wsConnections.add(-1, connectionsGauge)
  // Listeners shared by every socket (`this` is the socket), so a socket adds no closures of its own.
  function heard(this: WebSocket): void {
    const state = sockets.get(this)
    if (state)
      keepAlive.heard(state)
  }
  function closed(this: WebSocket): void {
    const state = sockets.get(this)
    if (state) {
      keepAlive.delete(state)
      state.close()
    }
  }
  function overflowed(socket: WebSocket): void {
    const state = sockets.get(socket)!
    state.request.log.warn({ bufferedBytes: socket.bufferedAmount, limit: limits.maxBufferedBytes }, 'closing a WebSocket whose client does not read (slow consumer)')
    socket.close(WS_CLOSE.slowConsumer, `Slow consumer: more than ${limits.maxBufferedBytes} bytes unread`)
    // The close frame waits behind what is unread; a client that never reads would hold it all until ws's own 30 s.
    const cut = setTimeout(() => socket.terminate(), limits.slowConsumerCloseMs)
    state.onClose(() => clearTimeout(cut))
  }

  app.get('/', {
    websocket: true,
    // Refused before the upgrade, so a flood from one address costs no socket.
    preValidation: async (request) => {
      if (socketsByIp.full(request.ip)) {
        request.log.warn({ ip: request.ip }, 'WebSocket refused: too many connections from this address')
        throw new ApiError(429, 'TOO_MANY_CONNECTIONS', `At most ${limits.socketsPerIp} WebSockets per address`, { retryAfterSeconds: 10 })
      }
    },
  }, (socket, request) => {
    const state = new SocketState(socket, request, limits)
    state.onClose(socketsByIp.add(request.ip))
    api.metrics.wsConnections.add(1, connectionsGauge)
    state.onClose(countOut)
    state.armGrace()
    sockets.set(socket, state)
    keepAlive.add(state)
    boundSends(socket, limits.maxBufferedBytes, overflowed)
    socket.on('message', heard)
    socket.once('close', closed)
    onConnection(socket, request.raw)
  })
}
