import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { createAdapters, createApi, type Api, type Logger } from '@airi/api'
import { createDb, migrateToLatest, startEmbeddedPostgres, type Db, type EmbeddedPostgresHandle } from '@airi/db'

import packageJson from '../package.json' with { type: 'json' }
import type { Env } from './env.ts'

export const service = { name: 'airi-server', version: packageJson.version }

/** The workspace root's `.data/`, whatever directory the process was started from. */
export const defaultDataDir = fileURLToPath(new URL('../../../.data', import.meta.url))

export interface Database {
  db: Db
  url: string
  close: () => Promise<void>
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL under DATA_DIR. */
export async function openDatabase(env: Env, logger: Logger): Promise<Database> {
  let url = env.DATABASE_URL
  let embedded: EmbeddedPostgresHandle | undefined
  if (!url) {
    const dataDir = resolve(env.DATA_DIR ?? defaultDataDir, 'postgres')
    logger.info({ dataDir }, 'DATABASE_URL is not set; starting embedded PostgreSQL')
    embedded = await startEmbeddedPostgres({ dataDir, database: 'airi', onLog: message => logger.debug({ postgres: message.trim() }) })
    url = embedded.url
  }
  const db = createDb({ connectionString: url })
  return {
    db,
    url,
    async close() {
      await db.destroy()
      await embedded?.stop()
    },
  }
}

export interface Runtime {
  api: Api
  close: () => Promise<void>
}

/** Opens Postgres (migrated) and the adapters, and composes the API on them. */
export async function startRuntime(env: Env, logger: Logger): Promise<Runtime> {
  const database = await openDatabase(env, logger)
  try {
    const applied = await migrateToLatest(database.db)
    if (applied.length > 0)
      logger.info({ migrations: applied.map(result => result.migrationName) }, 'applied migrations')

    const adapters = await createAdapters({ redisUrl: env.REDIS_URL, prefix: env.REDIS_KEY_PREFIX })
    logger.info({ adapters: adapters.kind }, env.REDIS_URL ? 'using Redis adapters' : 'REDIS_URL is not set; using in-process adapters')
    const api = await createApi({ db: database.db, adapters, logger, adminEmails: env.ADMIN_EMAILS, service })
    return {
      api,
      async close() {
        await api.close()
        await adapters.close()
        await database.close()
      },
    }
  }
  catch (error) {
    await database.close()
    throw error
  }
}

