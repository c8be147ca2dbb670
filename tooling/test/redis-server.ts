import { spawn } from 'node:child_process'
import { createConnection } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface RedisServerHandle {
  url: string
  port: number
  stop: () => Promise<void>
}

/** Starts `redis-server` from PATH on a loopback port, without persistence. */
export async function startRedisServer(port: number): Promise<RedisServerHandle> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' })
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  const spawnError = new Promise<never>((_, reject) => child.once('error', error => reject(new Error(`cannot start redis-server (is it on PATH?): ${error.message}`))))

  await Promise.race([waitForPort(port), spawnError])
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        await exited
      }
    },
  }
}

async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ port, host: '127.0.0.1' })
      socket.once('connect', () => {
        socket.end()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (open)
      return
    await sleep(50)
  }
  throw new Error(`redis-server did not listen on ${port} within ${timeoutMs} ms`)
}
