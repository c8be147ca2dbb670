import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

export interface DebitWorkerInput {
  serverRoot: string
  databaseUrl: string
  redisUrl: string
  redisPrefix: string
  userIds: string[]
  concurrency: number
  seconds: number
  amount?: number
}

export interface BenchBilling {
  debit: (input: { userId: string, amount: number, requestId: string, description?: string }) => Promise<unknown>
  close: () => Promise<void>
}

/**
 * The billing service as the server composes it (createApi of `serverRoot`'s own
 * packages/api), on a pool of the server's size: DATABASE_POOL_MAX when set, else
 * createDb's default, as the server would.
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
