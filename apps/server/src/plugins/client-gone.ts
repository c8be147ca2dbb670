import type { FastifyReply } from 'fastify'

/**
 * A signal that aborts when the client goes away before the answer is written, so
 * the upstream call it was waiting for stops (and is billed as it stands).
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished)
      controller.abort(new Error('client closed the connection'))
  })
  return controller.signal
}
