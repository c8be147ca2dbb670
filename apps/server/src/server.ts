import { randomUUID } from 'node:crypto'

import websocket from '@fastify/websocket'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'

import type { Api } from '@airi/api'

import { authPlugin } from './plugins/auth.ts'
import { registerErrorHandlers } from './plugins/errors.ts'
import { gatewayPlugin } from './plugins/gateway.ts'
import { probesPlugin } from './plugins/probes.ts'
import { signInPlugin } from './plugins/sign-in.ts'
import { trpcPlugin } from './plugins/trpc.ts'

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
}

/**
 * Fastify 5.12 ignores a bare hop count, since the nearest hop may be a client that
 * reached us directly. We honour it as a function (the first `n` hops are proxies),
 * so a hop count is only safe where clients can reach the server only through them.
 */
function trustedHops(trustProxy: number | string[] | undefined) {
  return typeof trustProxy === 'number' ? (_address: string, hop: number) => hop < trustProxy : trustProxy
}

/** Builds the host without listening, so tests can `inject()` or `listen({ port: 0 })`. */
export async function buildServer({ api, service, logger = false, authRateLimitPerMinute = 120, trustProxy, socialProviders = [] }: BuildServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    ...(logger && 'child' in logger ? { loggerInstance: logger } : { logger }),
    requestIdHeader: 'x-request-id',
    trustProxy: trustedHops(trustProxy),
    genReqId: () => randomUUID(),
    // Batched tRPC calls put every procedure name in one path segment.
    routerOptions: { maxParamLength: 5_000 },
    forceCloseConnections: 'idle',
  }) as unknown as FastifyInstance

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })
  registerErrorHandlers(app)

  await app.register(websocket)
  await app.register(probesPlugin, { service, checks: api.checks })
  await app.register(authPlugin, { api, rateLimitPerMinute: authRateLimitPerMinute })
  await app.register(signInPlugin, { api, providers: socialProviders })
  await app.register(trpcPlugin, { prefix: '/trpc', api })
  await app.register(gatewayPlugin, { prefix: '/api/v1/openai', api })

  return app
}
