import { randomUUID } from 'node:crypto'

import websocket from '@fastify/websocket'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'

import type { Api } from '@airi/api'

import { authPlugin } from './plugins/auth.ts'
import { registerErrorHandlers } from './plugins/errors.ts'
import { gatewayPlugin } from './plugins/gateway.ts'
import { refuseInvalidHosts } from './plugins/host-header.ts'
import { probesPlugin } from './plugins/probes.ts'
import { signInPlugin } from './plugins/sign-in.ts'
import { speechPlugin } from './plugins/speech.ts'
import { stageWebPlugin } from './plugins/stage-web.ts'
import { streamingSpeechPlugin, type SpeechSocketLimits } from './plugins/streaming-speech.ts'
import { stripeWebhookPlugin } from './plugins/stripe-webhook.ts'
import { registerTelemetry } from './plugins/telemetry.ts'
import { trpcPlugin, type TrpcLimits } from './plugins/trpc.ts'

export interface BuildServerOptions {
  api: Api
  service: { name: string, version: string }
  /** Requests per minute one IP may make to /api/auth/*. */
  authRateLimitPerMinute?: number
  /**
   * Fastify's `trustProxy`: the hop count or the proxy addresses/CIDRs whose
   * X-Forwarded-For/-Proto/-Host are believed (client IP for limits and logs).
   * Unset: none, the peer address is the client.
   */
  trustProxy?: number | string[]
  /** Social providers offered on the sign-in page (those that are configured). */
  socialProviders?: Array<'google' | 'github'>
  /** A pino logger, or Fastify logger options; false silences logs. */
  logger?: FastifyBaseLogger | { level: string } | false
  /** WebSocket and batch limits of /trpc (defaults in plugins/trpc.ts). */
  trpcLimits?: Partial<TrpcLimits>
  /** Limits of the streaming speech socket (defaults in plugins/streaming-speech.ts). */
  speechSocketLimits?: Partial<SpeechSocketLimits>
  /** How long a client may take to send a whole request (headers and body). */
  requestTimeoutMs?: number
  /** A socket with no traffic for this long is closed. */
  connectionTimeoutMs?: number
}

/** Largest WebSocket message: a tRPC call is at most a JSON body (Fastify's 1 MiB body limit). */
const WS_MAX_PAYLOAD_BYTES = 1024 * 1024

/**
 * Fastify 5.12 ignores a bare hop count, since the nearest hop may be a client that
 * reached us directly. We honour it as a function (the first `n` hops are proxies),
 * so a hop count is only safe where clients can reach the server only through them.
 */
function trustedHops(trustProxy: number | string[] | undefined) {
  return typeof trustProxy === 'number' ? (_address: string, hop: number) => hop < trustProxy : trustProxy
}

/**
 * Node's `requestTimeout` stops counting once the headers are in, so a body sent
 * a byte at a time would hold its connection (and a graceful shutdown) forever.
 * A body still incomplete after `timeoutMs` gets a 408 and the socket is closed.
 */
function cutSlowBodies(app: FastifyInstance, timeoutMs: number): void {
  app.addHook('onRequest', (request, reply, done) => {
    const { raw } = request
    if (!raw.complete && (raw.headers['content-length'] !== undefined || raw.headers['transfer-encoding'] !== undefined)) {
      const timer = setTimeout(() => {
        if (raw.complete)
          return
        request.log.warn({ timeoutMs }, 'request body not received in time; closing the connection')
        raw.socket.end('HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
        raw.socket.destroySoon()
      }, timeoutMs)
      const clear = () => clearTimeout(timer)
      raw.once('end', clear)
      reply.raw.once('close', clear)
    }
    done()
  })
}

/** Builds the host without listening, so tests can `inject()` or `listen({ port: 0 })`. */
export async function buildServer({ api, service, logger = false, authRateLimitPerMinute = 120, trustProxy, socialProviders = [], trpcLimits, speechSocketLimits, requestTimeoutMs = 30_000, connectionTimeoutMs = 300_000 }: BuildServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    ...(logger && 'child' in logger ? { loggerInstance: logger } : { logger }),
    requestIdHeader: 'x-request-id',
    trustProxy: trustedHops(trustProxy),
    genReqId: () => randomUUID(),
    // Batched tRPC calls put every procedure name in one path segment.
    routerOptions: { maxParamLength: 5_000 },
    forceCloseConnections: 'idle',
    // Headers trickled byte by byte are cut by Node (checked this often); bodies by `cutSlowBodies`.
    requestTimeout: requestTimeoutMs,
    http: { connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs) },
    connectionTimeout: connectionTimeoutMs,
  }) as unknown as FastifyInstance

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })
  registerErrorHandlers(app)
  registerTelemetry(app, api.metrics)
  cutSlowBodies(app, requestTimeoutMs)
  refuseInvalidHosts(app)

  await app.register(websocket, { options: { maxPayload: WS_MAX_PAYLOAD_BYTES } })
  await app.register(probesPlugin, { service, checks: api.checks })
  await app.register(authPlugin, { api, rateLimitPerMinute: authRateLimitPerMinute })
  await app.register(signInPlugin, { api, providers: socialProviders })
  await app.register(trpcPlugin, { prefix: '/trpc', api, limits: trpcLimits })
  await app.register(gatewayPlugin, { prefix: '/api/v1/openai', api })
  await app.register(speechPlugin, { prefix: '/api/v1/audio', api })
  await app.register(streamingSpeechPlugin, { prefix: '/api/v1/audio', api, limits: speechSocketLimits })
  await app.register(stripeWebhookPlugin, { prefix: '/api/v1/stripe', api })
  await app.register(stageWebPlugin)

  return app
}
