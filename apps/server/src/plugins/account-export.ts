import { Readable } from 'node:stream'

import type { FastifyPluginAsync } from 'fastify'

import type { Api } from '@airi/api'

import { requireBearerUser } from './bearer-user.ts'

export interface AccountExportPluginOptions {
  api: Api
}

/** Bytes the response buffers before the document waits for the client to read on. */
const BUFFERED_BYTES = 256 * 1024

/**
 * `GET /export` (under /api/v1/account): everything the service holds about the
 * caller (bearer token or session cookie) as one JSON file, streamed: the document
 * is read a page of rows at a time, only as fast as the client takes it, so a user
 * with 100 000 messages costs a page of memory (SPEC §4.14). Past
 * EXPORT_RATE_LIMIT_PER_HOUR the answer is 429 with `retry-after`.
 */
export const accountExportPlugin: FastifyPluginAsync<AccountExportPluginOptions> = async (app, { api }) => {
  // No HEAD twin: it would count against the limit and start a document only to drop it.
  app.get('/export', { preHandler: requireBearerUser(api), exposeHeadRoute: false }, async (request, reply) => {
    const { filename, chunks } = await api.services.accountExport.open(request.bearerUser!.id)
    return reply
      .header('content-type', 'application/json; charset=utf-8')
      .header('content-disposition', `attachment; filename="${filename}"`)
      .header('cache-control', 'no-store')
      .send(Readable.from(chunks, { objectMode: false, highWaterMark: BUFFERED_BYTES }))
  })
}
