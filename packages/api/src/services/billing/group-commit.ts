import type { Db } from '@airi/db'

import { runWrites, type PlannedWrite, type WriteRow } from './write.ts'

/**
 * Statements of the ledger in flight at once. A write arriving while fewer run
 * goes out at once, alone (no added wait at low load); the others queue and go
 * out together when a statement ends, so under load one statement and one
 * commit carry many writes. Few: each holds a pooled connection and Postgres's
 * CPU is what they share.
 */
const IN_FLIGHT = 4
/** Writes per statement at most (each adds ~10 parameters; Postgres allows 65 535). */
const MAX_BATCH = 64

interface Queued extends PlannedWrite {
  resolve: (row: WriteRow | undefined) => void
  reject: (error: unknown) => void
}

/**
 * Group commit for the ledger: coalesces the writes that arrive while earlier
 * statements commit into one write statement (see `writeStatement`), each write
 * keeping its own replay check, refusal and result. A user's writes apply in
 * arrival order: several of them in one statement one after the other, and
 * while a statement with a write of a user is in flight, that user's next writes
 * wait in the queue (instead of holding a connection on the row lock) and go out
 * together in the next one. When a statement of
 * several writes fails, each of its writes runs again alone, so one write's
 * failure (a replay race on the unique index, a deadlock) is never another's.
 */
export function createGroupCommit(db: Db, { inFlight: maxInFlight = IN_FLIGHT, maxBatch = MAX_BATCH } = {}) {
  let queue: Queued[] = []
  let running = 0
  /** Users with a write in a statement now. */
  const busy = new Set<string>()

  /**
   * The next batch: queued writes in order, none of a busy user, a (user, request
   * id) once, a personal API key once (the statement moves a key's budget counter
   * by one write; the key's next write waits for the next statement).
   */
  function take(): Queued[] {
    const batch: Queued[] = []
    const rest: Queued[] = []
    const taken = new Set<string>()
    /** Users with a write left for later because of its key: their later writes wait too, so they stay in order. */
    const blocked = new Set<string>()
    for (const write of queue) {
      const { userId, requestId, apiKeyId } = write.input
      const key = `${userId}\n${requestId}`
      const apiKey = apiKeyId === undefined ? undefined : `key\n${apiKeyId}`
      const keyTaken = apiKey !== undefined && taken.has(apiKey)
      if (batch.length < maxBatch && !busy.has(userId) && !blocked.has(userId) && !taken.has(key) && !keyTaken) {
        taken.add(key)
        if (apiKey !== undefined)
          taken.add(apiKey)
        batch.push(write)
      }
      else {
        rest.push(write)
        if (keyTaken)
          blocked.add(userId)
      }
    }
    queue = rest
    return batch
  }

  async function run(batch: Queued[]): Promise<void> {
    try {
      const rows = await runWrites(db, batch)
      batch.forEach((write, index) => write.resolve(rows[index]))
    }
    catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error)
        return
      }
      // One by one, so a user's writes still apply in the order they arrived.
      for (const write of batch)
        await runWrites(db, [write]).then(([row]) => write.resolve(row), write.reject)
    }
  }

  function pump(): void {
    while (running < maxInFlight && queue.length > 0) {
      const batch = take()
      if (batch.length === 0)
        return
      running++
      for (const write of batch)
        busy.add(write.input.userId)
      void run(batch).finally(() => {
        running--
        for (const write of batch)
          busy.delete(write.input.userId)
        pump()
      })
    }
  }

  return {
    /** Writes through the next statement: the write's outcome row, undefined when the user has no open account. */
    write(write: PlannedWrite): Promise<WriteRow | undefined> {
      return new Promise((resolve, reject) => {
        queue.push({ ...write, resolve, reject })
        pump()
      })
    },
  }
}
