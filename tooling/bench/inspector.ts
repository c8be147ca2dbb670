// A full garbage collection of another Node process, asked over its inspector
// (started with `--inspect=127.0.0.1:<port>`): the server needs no route or flag of its own.
import WebSocket from 'ws'

import { REQUEST_DEADLINE_MS } from './context.ts'

/** Runs `HeapProfiler.collectGarbage` in the process whose inspector listens on `port`; resolves once it has answered. */
export async function collectGarbage(port: number): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
  const targets = await response.json() as Array<{ webSocketDebuggerUrl?: string }>
  const url = targets.find(target => target.webSocketDebuggerUrl)?.webSocketDebuggerUrl
  if (!url)
    throw new Error(`no inspector target on port ${port}: ${JSON.stringify(targets)}`)
  const socket = new WebSocket(url)
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the inspector at ${url} did not collect garbage within ${REQUEST_DEADLINE_MS} ms`)), REQUEST_DEADLINE_MS)
      socket.once('error', (error) => {
        clearTimeout(timer)
        reject(error)
      })
      socket.once('open', () => socket.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' })))
      socket.on('message', (data) => {
        const message = JSON.parse(String(data)) as { id?: number, error?: { message?: string } }
        if (message.id !== 1)
          return
        clearTimeout(timer)
        if (message.error)
          reject(new Error(`HeapProfiler.collectGarbage failed: ${message.error.message}`))
        else
          resolve()
      })
    })
  }
  finally {
    socket.terminate()
  }
}
