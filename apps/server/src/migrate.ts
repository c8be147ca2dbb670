import { migrateDatabase } from '@airi/api'
import { pino } from 'pino'

import { EnvError, parseEnv } from './env.ts'
import { openDatabase } from './runtime.ts'

// `pnpm db:migrate`: applies every pending migration to DATABASE_URL (or the
// embedded database) and exits. The server also migrates on start.
try {
  const env = parseEnv(process.env)
  const logger = pino({ level: env.LOG_LEVEL })
  const database = await openDatabase(env, logger)
  try {
    const report = await migrateDatabase(database.db)
    logger.info(report, report.applied.length ? 'migrations applied' : 'database is up to date')
  }
  finally {
    await database.close()
  }
}
catch (error) {
  console.error(error instanceof EnvError ? error.message : error)
  process.exit(1)
}
