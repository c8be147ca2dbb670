import fp from 'fastify-plugin'

/** Echoes the request id (the caller's `x-request-id`, or a generated UUID) on every response, so a report can be matched to the logs. */
export const requestIdPlugin = fp(async (app) => {
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })
}, { name: 'request-id' })
