// The fan-out baseline: a bare `ws` server that broadcasts what is POSTed to
// /broadcast to every connected socket. Reports its URL over IPC.
import { createServer } from 'node:http'

import { WebSocketServer } from 'ws'

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/broadcast') {
    res.writeHead(404).end()
    return
  }
  const chunks: Buffer[] = []
  req.on('data', chunk => chunks.push(chunk as Buffer))
  req.on('end', () => {
    const payload = Buffer.concat(chunks).toString('utf8')
    for (const client of wss.clients)
      client.send(payload)
    res.writeHead(204).end()
  })
})
const wss = new WebSocketServer({ server })
server.listen(0, '127.0.0.1', () => {
  const address = server.address() as { port: number }
  process.send!({ url: `http://127.0.0.1:${address.port}` })
})
process.on('SIGTERM', () => {
  for (const client of wss.clients)
    client.terminate()
  server.close(() => process.exit(0))
})
