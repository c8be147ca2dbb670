import fp from 'fastify-plugin'

/**
 * Node's `requestTimeout` stops counting once the headers are in, so a body sent
 * a byte at a time would hold its connection (and a graceful shutdown) forever.
 * A body still incomplete after `timeoutMs` gets a 408 and the socket is closed.
 */
export const slowBodiesPlugin = fp<{ timeoutMs: number }>(async (app, { timeoutMs }) => {
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
}, { name: 'slow-bodies' })
