import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

import type { FastifyPluginAsync } from 'fastify'
import { fastifyTRPCPlugin, type FastifyTRPCPluginOptions } from '@trpc/server/adapters/fastify'

import type { Api, AppRouter } from '@airi/api'

export interface TrpcPluginOptions {
  api: Api
}

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

/** tRPC over HTTP (batching) and WebSocket (subscriptions) at this plugin's prefix. */
export const trpcPlugin: FastifyPluginAsync<TrpcPluginOptions> = async (app, { api }) => {
  await app.register(fastifyTRPCPlugin, {
    useWSS: true,
    keepAlive: { enabled: true, pingMs: 30_000, pongWaitMs: 5_000 },
    trpcOptions: {
      router: api.router,
      createContext: ({ req, info }) => {
        // Over HTTP `req` is Fastify's request; over WebSocket it is the raw upgrade request.
        const fastifyRequest = 'log' in req ? req : undefined
        return api.createContext({
          headers: toHeaders(req.headers),
          connectionParams: info.connectionParams,
          requestId: fastifyRequest ? String(fastifyRequest.id) : randomUUID(),
          logger: fastifyRequest?.log ?? app.log,
        })
      },
      onError({ error, path, type }) {
        if (error.code === 'INTERNAL_SERVER_ERROR')
          app.log.error({ err: error.cause ?? error, path, type }, 'tRPC procedure failed')
      },
    } satisfies FastifyTRPCPluginOptions<AppRouter>['trpcOptions'],
  })
}
