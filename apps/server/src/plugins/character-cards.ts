import type { FastifyPluginAsync } from 'fastify'
import type { TRPCError } from '@trpc/server'
import { fastifyRequestHandler } from '@trpc/server/adapters/fastify'
import { z } from 'zod'

import type { Api } from '@airi/api'

import { requireBearerUser } from './bearer-user.ts'
import { trpcRetryAfter } from './errors.ts'
import { toHeaders } from './trpc.ts'
import { parseOrBadRequest } from './validation.ts'

export interface CharacterCardsPluginOptions {
  api: Api
}

/** The one procedure whose input may be a PNG card of up to 8 MiB (base64 inside JSON: about 11 MiB). */
const IMPORT_PATH = 'characters.importCard'
const IMPORT_BODY_LIMIT = 16 * 1024 * 1024

const params = z.object({ id: z.string().min(1).max(100) })

/**
 * Character Cards (SPEC §4.14): export as a V3 card, JSON or PNG, with bearer auth,
 * of any character the caller may read (as `characters.get`); and room for a PNG
 * card in `characters.importCard`, which every other tRPC call keeps at Fastify's 1 MiB.
 */
export const characterCardsPlugin: FastifyPluginAsync<CharacterCardsPluginOptions> = async (app, { api }) => {
  const characters = api.services.characters

  await app.register(async (cards) => {
    cards.addHook('preHandler', requireBearerUser(api))
    cards.get('/:id/card.json', async (request, reply) => {
      const { fileName, card } = await characters.exportCard(request.bearerUser!.id, parseOrBadRequest(params, request.params).id)
      return reply.header('content-disposition', `attachment; filename="${fileName}"`).type('application/json').send(JSON.stringify(card))
    })
    cards.get('/:id/card.png', async (request, reply) => {
      const { fileName, png } = await characters.exportCardPng(request.bearerUser!.id, parseOrBadRequest(params, request.params).id)
      return reply.header('content-disposition', `attachment; filename="${fileName}"`).type('image/png').send(Buffer.from(png))
    })
  }, { prefix: '/api/v1/characters' })

  // The exact path wins over the tRPC plugin's `/trpc/:path`; the call is then served as that plugin serves it.
  await app.register(async (trpc) => {
    // As tRPC's own plugin does: the body reaches it as text, parsed once by tRPC.
    trpc.removeContentTypeParser('application/json')
    trpc.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => done(null, body))
    trpc.post(`/${IMPORT_PATH}`, { bodyLimit: IMPORT_BODY_LIMIT }, async (request, reply) => {
      await fastifyRequestHandler({
        router: api.router,
        path: IMPORT_PATH,
        req: request,
        res: reply,
        createContext: () => api.createContext({ headers: toHeaders(request.headers), requestId: String(request.id), logger: request.log }),
        onError: ({ error }: { error: TRPCError }) => {
          if (error.code === 'INTERNAL_SERVER_ERROR')
            request.log.error({ err: error.cause ?? error, path: IMPORT_PATH }, 'tRPC procedure failed')
        },
        responseMeta: trpcRetryAfter,
      })
    })
  }, { prefix: '/trpc' })
}
