import { pino } from 'pino'

import { EnvError, parseEnv } from './env.ts'
import { service, socialProviders, startRuntime } from './runtime.ts'
import { buildServer } from './server.ts'

let env
try {
  env = parseEnv(process.env)
}
catch (error) {
  if (!(error instanceof EnvError))
    throw error
  console.error(error.message)
  process.exit(1)
}

const logger = pino({ level: env.LOG_LEVEL, base: { service: service.name } })
const runtime = await startRuntime(env, logger)
const app = await buildServer({
  api: runtime.api,
  service,
  logger,
  authRateLimitPerMinute: env.AUTH_RATE_LIMIT_PER_MINUTE,
  trustProxy: env.TRUST_PROXY,
  socialProviders: socialProviders(env),
})

let shuttingDown = false
async function shutdown(signal: string): Promise<void> {
  if (shuttingDown)
    return
  shuttingDown = true
  logger.info({ signal }, 'shutting down: closing WebSockets, draining requests, closing pools')
  try {
    await app.close()
    await runtime.close()
    logger.info('shutdown complete')
    process.exit(0)
  }
  catch (error) {
    logger.error({ err: error }, 'shutdown failed')
    process.exit(1)
  }
}
process.on('SIGTERM', () => void shutdown('SIGTERM'))
process.on('SIGINT', () => void shutdown('SIGINT'))

try {
  await app.listen({ host: env.HOST, port: env.PORT })
}
catch (error) {
  logger.error({ err: error }, 'cannot listen')
  await runtime.close()
  process.exit(1)
}
