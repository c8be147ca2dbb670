import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

import { REQUEST_DEADLINE_MS } from './context.ts'
import { onCleanup, repoRoot, spawnTracked } from './infra.ts'

export interface DebitWorkerInput {
  serverRoot: string
  databaseUrl: string
  redisUrl: string
  redisPrefix: string
}

export type DebitWorkerRequest =
  | { type: 'debit', userId: string, requestId: string }
  | { type: 'run', seconds: number, concurrency: number, userIds: string[] }
  | { type: 'close' }

export interface BenchBilling {
  debit: (input: { userId: string, amount: number, requestId: string, description?: string }) => Promise<unknown>
  close: () => Promise<void>
}

/**
 * The billing service as the server composes it (createApi of `serverRoot`'s own
 * packages/api), on a pool of the server's size: DATABASE_POOL_MAX when set, else
 * createDb's default, as the server would. Only the arguments every checkout
 * since the bench's baseline (ef9cbb4) accepts are passed; newer optional ones
 * (analytics, rate limits, …) keep their defaults, as in a server without them set.
 */
export async function openBilling(serverRoot: string, databaseUrl: string, redisUrl: string, redisPrefix: string): Promise<BenchBilling> {
  /* eslint-disable @typescript-eslint/no-explicit-any -- modules loaded from another checkout at run time */
  const api: any = await import(pathToFileURL(join(serverRoot, 'packages/api/src/index.ts')).href)
  const dbModule: any = await import(pathToFileURL(join(serverRoot, 'packages/db/src/index.ts')).href)
  /* eslint-enable @typescript-eslint/no-explicit-any */
  const poolMax = process.env.DATABASE_POOL_MAX ? Number(process.env.DATABASE_POOL_MAX) : undefined
  const db = dbModule.createDb({ connectionString: databaseUrl, ...(poolMax ? { maxConnections: poolMax } : {}) })
  const adapters = await api.createRedisAdapters({ url: redisUrl, prefix: redisPrefix })
  const composed = await api.createApi({
    db,
    adapters,
    logger: api.silentLogger,
    emailTransport: api.createLogTransport(api.silentLogger),
    auth: { secret: 'bench-secret-0123456789abcdefghijklmnopqrstuvwxyz', baseUrl: 'http://127.0.0.1:1' },
    adminEmails: [],
    service: { name: 'airi-bench-debit', version: '0' },
    llmMasterKey: Buffer.alloc(32, 7),
  })
  return {
    debit: input => composed.services.billing.debit(input),
    async close() {
      await composed.close()
      await adapters.close()
      await db.destroy()
    },
  }
}

export interface DebitWorker {
  /** One debit of 1 Flux with this request id. */
  debit: (userId: string, requestId: string) => Promise<void>
  /** Debits of random users among `userIds` for `seconds` at `concurrency`. */
  run: (seconds: number, concurrency: number, userIds: string[]) => Promise<{ debits: number, seconds: number, errors: number }>
  close: () => Promise<void>
}

/** debit-worker.ts in a process of its own, kept for the whole scenario and driven over IPC. */
export async function startDebitWorker(input: DebitWorkerInput, root: string): Promise<DebitWorker> {
  const logFile = join(root, 'debit-worker.log')
  const { child, stop } = spawnTracked(process.execPath, ['--import', 'tsx', resolve(import.meta.dirname, 'debit-worker.ts')], {
    cwd: repoRoot(),
    env: { ...process.env, BENCH_DEBIT_INPUT: JSON.stringify(input) },
    ipc: true,
    logFile,
  })
  // Replies come in request order: one request at a time, each within a deadline.
  const reply = (deadlineMs = REQUEST_DEADLINE_MS) => new Promise<Record<string, unknown>>((resolveReply, reject) => {
    const onExit = (code: number | null) => reject(new Error(`debit-worker.ts exited (${code}); see ${logFile}`))
    const timer = setTimeout(() => {
      child.off('exit', onExit)
      reject(new Error(`debit-worker.ts did not answer within ${deadlineMs} ms; see ${logFile}`))
    }, deadlineMs)
    child.once('exit', onExit)
    child.once('message', (message) => {
      clearTimeout(timer)
      child.off('exit', onExit)
      const body = message as Record<string, unknown>
      if (body.ok === false)
        reject(new Error(`debit-worker.ts: ${String(body.error)}`))
      else
        resolveReply(body)
    })
  })
  const request = async (message: DebitWorkerRequest) => {
    const answer = reply(message.type === 'run' ? message.seconds * 1000 + REQUEST_DEADLINE_MS : REQUEST_DEADLINE_MS)
    child.send(message)
    return answer
  }
  onCleanup(() => stop())
  // Composing the API from sources is slow on a loaded machine: a start-up's deadline.
  await reply(180_000)
  return {
    debit: async (userId, requestId) => {
      await request({ type: 'debit', userId, requestId })
    },
    run: async (seconds, concurrency, userIds) => await request({ type: 'run', seconds, concurrency, userIds }) as unknown as { debits: number, seconds: number, errors: number },
    async close() {
      await request({ type: 'close' }).catch(() => {})
      await stop()
    },
  }
}
