import { createServer, type Socket } from 'node:net'

import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'

import { createDb } from '@airi/db'

import { outageError } from './errors.ts'

describe('the Postgres pool', () => {
  it('answers 503 when Postgres silently stops answering, instead of hanging', async () => {
    // A peer that accepts connections and never says a word: a network that dropped packets.
    const sockets = new Set<Socket>()
    const silent = createServer(socket => sockets.add(socket))
    await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
    const port = (silent.address() as { port: number }).port
    const db = createDb({ connectionString: `postgres://nobody@127.0.0.1:${port}/nothing`, connectionTimeoutMs: 300 })
    try {
      const error = await sql`select 1`.execute(db).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(Error)
      expect(outageError(error)).toMatchObject({ status: 503, code: 'SERVICE_UNAVAILABLE' })
    }
    finally {
      await db.destroy()
      for (const socket of sockets)
        socket.destroy()
      await new Promise(resolve => silent.close(resolve))
    }
  })
})
