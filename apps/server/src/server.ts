import { randomUUID } from 'node:crypto'

import websocket from '@fastify/websocket'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'

import type { Api } from '@airi/api'

import { accountExportPlugin } from './plugins/account-export.ts'
import { authPlugin } from './plugins/auth.ts'
import { characterCardsPlugin } from './plugins/character-cards.ts'
import { errorsPlugin } from './plugins/errors.ts'
import { gatewayPlugin } from './plugins/gateway.ts'
import { hostHeaderPlugin } from './plugins/host-header.ts'
import { operatorPlugin } from './plugins/operator.ts'
import { probesPlugin } from './plugins/probes.ts'
import { requestIdPlugin } from './plugins/request-id.ts'
import { signInPlugin } from './plugins/sign-in.ts'
import { slowBodiesPlugin } from './plugins/slow-bodies.ts'
import { speechPlugin } from './plugins/speech.ts'
import { stageWebPlugin } from './plugins/stage-web.ts'
import { streamingSpeechPlugin, type SpeechSocketLimits } from './plugins/streaming-speech.ts'
import { streamingTranscriptionPlugin, type TranscriptionSocketLimits } from './plugins/streaming-transcription.ts'
import { stripeWebhookPlugin } from './plugins/stripe-webhook.ts'
import { telemetryPlugin } from './plugins/telemetry.ts'
import { transcriptionPlugin } from './plugins/transcription.ts'
import { trpcPlugin, type TrpcLimits } from './plugins/trpc.ts'

export interface BuildServerOptions {
  api: Api
  service: { name: string, version: string }
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
  /** Limits of the streaming transcription socket (defaults in plugins/streaming-transcription.ts). */
  transcriptionSocketLimits?: Partial<TranscriptionSocketLimits>
  /** How long a client may take to send a whole request (headers and body). */
  requestTimeoutMs?: number
  /** A socket with no traffic for this long is closed. */
  connectionTimeoutMs?: number
  /** Serves POST /api/v1/operator for `pnpm airi` with this bearer token (the embedded default in development: cli/target.ts). */
  operatorToken?: string
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

/** Builds the host without listening, so tests can `inject()` or `listen({ port: 0 })`. */
export async function buildServer({ api, service, logger = false, trustProxy, socialProviders = [], trpcLimits, speechSocketLimits, transcriptionSocketLimits, requestTimeoutMs = 30_000, connectionTimeoutMs = 300_000, operatorToken }: BuildServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    ...(logger && 'child' in logger ? { loggerInstance: logger } : { logger }),
    requestIdHeader: 'x-request-id',
    trustProxy: trustedHops(trustProxy),
    genReqId: () => randomUUID(),
    // One line per request instead of two, written by the telemetry plugin (errors are logged by plugins/errors.ts).
    logController: new LogController({ disableRequestLogging: true }),
    // Batched tRPC calls put every procedure name in one path segment.
    routerOptions: { maxParamLength: 5_000 },
    forceCloseConnections: 'idle',
    // Headers trickled byte by byte are cut by Node (checked this often); bodies by plugins/slow-bodies.ts.
    requestTimeout: requestTimeoutMs,
    http: { connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs) },
    connectionTimeout: connectionTimeoutMs,
  })

  // Fields plugins set on a request (plugins/bearer-user.ts, plugins/streaming-speech.ts),
  // declared up front so every request has them, with one shape.
  app.decorateRequest('bearerUser', null)
  app.decorateRequest('bearerKey', null)
  app.decorateRequest('speechTicketHolder', null)
  app.decorateRequest('transcriptionTicketHolder', null)
  // Root hooks, before any route (telemetry's onRoute sees only routes declared after it).
  await app.register(requestIdPlugin)
  await app.register(errorsPlugin)
  await app.register(telemetryPlugin, { metrics: api.metrics })
  await app.register(slowBodiesPlugin, { timeoutMs: requestTimeoutMs })
  await app.register(hostHeaderPlugin)

  await app.register(websocket, { options: { maxPayload: WS_MAX_PAYLOAD_BYTES } })
  await app.register(probesPlugin, { service, checks: api.checks })
  await app.register(authPlugin, { api })
  await app.register(signInPlugin, { api, providers: socialProviders })
  await app.register(trpcPlugin, { prefix: '/trpc', api, limits: trpcLimits })
  await app.register(characterCardsPlugin, { api })
  await app.register(gatewayPlugin, { prefix: '/api/v1/openai', api })
  await app.register(speechPlugin, { prefix: '/api/v1/audio', api })
  await app.register(transcriptionPlugin, { prefix: '/api/v1/audio', api })
  await app.register(streamingSpeechPlugin, { prefix: '/api/v1/audio', api, limits: speechSocketLimits })
  await app.register(streamingTranscriptionPlugin, { prefix: '/api/v1/audio', api, limits: transcriptionSocketLimits })
  await app.register(stripeWebhookPlugin, { prefix: '/api/v1/stripe', api })
  await app.register(accountExportPlugin, { prefix: '/api/v1/account', api })
  if (operatorToken)
    await app.register(operatorPlugin, { prefix: '/api/v1', api, token: operatorToken })
  await app.register(stageWebPlugin)

  return app
}
