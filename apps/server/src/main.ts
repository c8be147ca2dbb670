import { pino } from 'pino'

import { serverHandoff } from './cli/target.ts'
import { EnvError, parseEnv, type Env } from './env.ts'
import { applyQuickStart } from './quick-start.ts'
import { service, socialProviders, startRuntime } from './runtime.ts'
import { buildServer } from './server.ts'
import { startTelemetry } from './telemetry.ts'

let env: Env
try {
  env = parseEnv(process.env)
}
catch (error) {
  if (!(error instanceof EnvError))
    throw error
  console.error(error.message)
  process.exit(1)
}

// A person at a terminal in development reads lines; everything else (files, pipes,
// log shippers, production) gets JSON lines; the pretty printer is loaded only for it.
const humanReadable = env.NODE_ENV === 'development' && process.stdout.isTTY
const logger = pino(
  { level: env.LOG_LEVEL, base: { service: service.name } },
  humanReadable ? (await import('pino-pretty')).PinoPretty({ colorize: true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' }) : undefined,
)
// First: the API takes its meters when it is composed.
const telemetry = startTelemetry(env, service, logger)
const runtime = await startRuntime(env, logger)
// A failed quick start leaves the model unconfigured, which the operator can still fix while the server runs.
await applyQuickStart(runtime.api.services, env, logger).catch((error: unknown) => {
  logger.error({ err: error }, 'could not configure a model from OPENAI_API_KEY')
})
// On the embedded default, `pnpm airi` cannot open the database this process holds: it sends its commands here.
const handoff = serverHandoff(env)
const app = await buildServer({
  api: runtime.api,
  service,
  logger,
  trustProxy: env.TRUST_PROXY,
  socialProviders: socialProviders(env),
  trpcLimits: {
    socketsPerUser: env.WS_MAX_CONNECTIONS_PER_USER,
    socketsPerIp: env.WS_MAX_CONNECTIONS_PER_IP,
    subscriptionsPerSocket: env.WS_MAX_SUBSCRIPTIONS_PER_CONNECTION,
    authGraceMs: env.WS_AUTH_GRACE_MS,
    maxBatchSize: env.TRPC_MAX_BATCH_SIZE,
    maxBufferedBytes: env.WS_MAX_BUFFERED_BYTES,
    slowConsumerCloseMs: env.WS_SLOW_CONSUMER_CLOSE_MS,
  },
  speechSocketLimits: {
    socketsPerUser: env.SPEECH_WS_MAX_CONNECTIONS_PER_USER,
    idleTimeoutMs: env.SPEECH_WS_IDLE_TIMEOUT_MS,
    maxFrameBytes: env.SPEECH_WS_MAX_FRAME_BYTES,
    maxBufferedBytes: env.SPEECH_WS_MAX_BUFFERED_BYTES,
    drainTimeoutMs: env.SPEECH_WS_DRAIN_TIMEOUT_MS,
    closeGraceMs: env.SPEECH_WS_CLOSE_GRACE_MS,
  },
  requestTimeoutMs: env.HTTP_REQUEST_TIMEOUT_MS,
  connectionTimeoutMs: env.HTTP_CONNECTION_TIMEOUT_MS,
  operatorToken: handoff?.token,
})

let shuttingDown = false
async function shutdown(signal: string): Promise<void> {
  if (shuttingDown)
    return
  shuttingDown = true
  logger.info({ signal, deadlineMs: env.SHUTDOWN_TIMEOUT_MS }, 'shutting down: closing WebSockets, draining requests, closing pools')
  // Requests still open at the deadline (a slow client, a long stream) are cut;
  // if closing the pools hangs too, the process goes anyway.
  setTimeout(() => {
    logger.warn('shutdown deadline reached; closing the connections still open')
    app.server.closeAllConnections()
  }, env.SHUTDOWN_TIMEOUT_MS).unref()
  setTimeout(() => {
    logger.error('shutdown did not finish; exiting')
    process.exit(1)
  }, env.SHUTDOWN_TIMEOUT_MS * 2).unref()
  try {
    await handoff?.withdraw()
    await app.close()
    await runtime.close()
    // Last, so the spans and metrics of what just closed go out too; a collector that
    // is down or silent costs TELEMETRY_FLUSH_TIMEOUT_MS, not the whole deadline.
    await telemetry.shutdown(Math.min(env.TELEMETRY_FLUSH_TIMEOUT_MS, env.SHUTDOWN_TIMEOUT_MS))
    logger.info('shutdown complete')
    process.exit(0)
  }
  catch (error) {
    logger.error({ err: error }, 'shutdown failed')
    process.exit(1)
  }
}
// SIGINT is a terminal's Ctrl-C and SIGHUP its closing: the same clean stop, exit 0,
// so the embedded Postgres is never left running.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const)
  process.on(signal, () => void shutdown(signal))

try {
  await app.listen({ host: env.HOST, port: env.PORT })
}
catch (error) {
  logger.error({ err: error }, 'cannot listen')
  await runtime.close()
  process.exit(1)
}
const address = app.server.address()
if (handoff && typeof address === 'object' && address) {
  await handoff.publish(address).catch((error: unknown) => {
    logger.warn({ err: error }, 'could not write server.json: `pnpm airi` cannot reach this server')
  })
}
