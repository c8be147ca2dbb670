// Worker: opens WebSockets and records send→receive latency, on its own event loop
// so the clients do not compete with the server's. Plain JS (no transpile in a worker).
import { parentPort, workerData } from 'node:worker_threads'

import WebSocket from 'ws'

const now = () => performance.timeOrigin + performance.now()
const { mode, sockets } = workerData
const open = []
let latencies = []

function connectTrpc({ url, token }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}?connectionParams=1`)
    ws.on('error', reject)
    ws.on('open', () => {
      ws.send(JSON.stringify({ method: 'connectionParams', data: { token } }))
      ws.send(JSON.stringify({ id: 1, method: 'subscription', params: { path: 'chats.onMessages', input: { json: undefined } } }))
    })
    ws.on('message', (raw) => {
      const text = raw.toString()
      if (!text.includes('"data"'))
        return
      const msg = JSON.parse(text)
      const data = msg.result?.data?.json?.data
      if (!data)
        return
      if (data.type === 'ready')
        return resolve(ws)
      if (!Array.isArray(data.messages)) {
        console.error('unexpected', text.slice(0, 300))
        return
      }
      for (const m of data.messages) {
        const sent = Number(m.content.slice(2))
        latencies.push(now() - sent)
      }
    })
  })
}

function connectBare({ url }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.on('error', reject)
    ws.on('open', () => resolve(ws))
    ws.on('message', (raw) => {
      const data = JSON.parse(raw.toString())
      latencies.push(now() - data.sent)
    })
  })
}

parentPort.on('message', async (cmd) => {
  if (cmd.type === 'connect') {
    for (let i = 0; i < sockets.length; i += 50)
      open.push(...await Promise.all(sockets.slice(i, i + 50).map(s => mode === 'bare' ? connectBare(s) : connectTrpc(s))))
    parentPort.postMessage({ type: 'connected', count: open.length })
  }
  else if (cmd.type === 'send') {
    const sent = now()
    if (mode === 'bare') {
      open[0].send(JSON.stringify({ sent }))
    }
    else {
      await fetch(`${cmd.url}/trpc/chats.sendMessages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'authorization': `Bearer ${cmd.token}` },
        body: JSON.stringify({ json: { chatId: cmd.chatId, messages: [{ id: crypto.randomUUID(), role: 'user', content: `t:${sent}` }] } }),
      }).then(r => r.text())
    }
  }
  else if (cmd.type === 'count') {
    parentPort.postMessage({ type: 'count', count: latencies.length })
  }
  else if (cmd.type === 'take') {
    parentPort.postMessage({ type: 'latencies', latencies })
    latencies = []
  }
  else if (cmd.type === 'close') {
    for (const ws of open)
      ws.terminate()
    parentPort.postMessage({ type: 'closed' })
  }
})
