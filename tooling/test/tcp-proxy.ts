import { createServer, connect, type Server, type Socket } from 'node:net'

export interface TcpProxy {
  port: number
  /** Drops every connection and stops accepting new ones, as if the target went away. */
  cut: () => Promise<void>
  /** Accepts connections again on the same port. */
  restore: () => Promise<void>
  /**
   * Stops forwarding bytes either way without closing anything, as a paused
   * (SIGSTOP) or partitioned server looks: connections stay open (new ones are
   * accepted) and nothing is answered. What was sent waits, as in the kernel's buffers.
   */
  silence: () => void
  /** Forwards again, delivering what waited during the silence. */
  resume: () => void
  close: () => Promise<void>
}

/** A loopback TCP proxy to `targetPort`, for tests that take a dependency away and bring it back. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  const pairs = new Set<[Socket, Socket]>()
  let server: Server | undefined
  let port = 0
  let silent = false

  const forward = ([client, upstream]: [Socket, Socket]) => {
    client.pipe(upstream)
    upstream.pipe(client)
  }
  // Unpiped and paused, a socket reads nothing more: bytes wait unread, nothing is lost.
  const hold = ([client, upstream]: [Socket, Socket]) => {
    client.unpipe(upstream)
    upstream.unpipe(client)
    client.pause()
    upstream.pause()
  }

  const listen = () => new Promise<void>((resolve, reject) => {
    server = createServer((client) => {
      const upstream = connect(targetPort, '127.0.0.1')
      const pair: [Socket, Socket] = [client, upstream]
      pairs.add(pair)
      for (const socket of pair) {
        sockets.add(socket)
        socket.on('close', () => {
          sockets.delete(socket)
          pairs.delete(pair)
        })
        socket.on('error', () => {
          client.destroy()
          upstream.destroy()
        })
      }
      if (silent)
        hold(pair)
      else
        forward(pair)
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

  const silence = () => {
    silent = true
    pairs.forEach(hold)
  }
  const resume = () => {
    silent = false
    pairs.forEach(forward)
  }

  await listen()
  return { port, cut, restore: listen, silence, resume, close: cut }
}
