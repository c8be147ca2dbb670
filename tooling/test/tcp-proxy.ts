import { createServer, connect, type Server, type Socket } from 'node:net'

export interface TcpProxy {
  port: number
  /** Drops every connection and stops accepting new ones, as if the target went away. */
  cut: () => Promise<void>
  /** Accepts connections again on the same port. */
  restore: () => Promise<void>
  close: () => Promise<void>
}

/** A loopback TCP proxy to `targetPort`, for tests that take a dependency away and bring it back. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let port = 0

  const listen = () => new Promise<void>((resolve, reject) => {
    server = createServer((client) => {
      const upstream = connect(targetPort, '127.0.0.1')
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on('close', () => sockets.delete(socket))
        socket.on('error', () => {
          client.destroy()
          upstream.destroy()
        })
      }
      client.pipe(upstream).pipe(client)
    })
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      const address = server!.address()
      port = typeof address === 'object' && address ? address.port : port
      resolve()
    })
  })

  const cut = () => new Promise<void>((resolve) => {
    for (const socket of sockets)
      socket.destroy()
    if (!server)
      return resolve()
    server.close(() => resolve())
    server = undefined
  })

  await listen()
  return { port, cut, restore: listen, close: cut }
}
