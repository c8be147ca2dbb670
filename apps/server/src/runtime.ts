import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  createAdapters,
  createApi,
  createLogTransport,
  createResendTransport,
  ELECTRON_RELAY_PATH,
  migrateDatabase,
  parseMasterKey,
  type Api,
  type AuthSettings,
  type Logger,
  type StripeSettings,
  type TrustedClient,
} from '@airi/api'
import { createDb, startEmbeddedPostgres, type Db, type EmbeddedPostgresHandle } from '@airi/db'

import packageJson from '../package.json' with { type: 'json' }
import type { Env } from './env.ts'
import { STAGE_WEB_PATH } from './plugins/stage-web.ts'

export const service = { name: 'airi-server', version: packageJson.version }

/** The workspace root's `.data/`, whatever directory the process was started from. */
const defaultDataDir = fileURLToPath(new URL('../../../.data', import.meta.url))

/** Where the embedded default keeps its database and secrets (and `pnpm airi` looks for them): DATA_DIR, else `.data/`. */
export function embeddedDataDir(env: Pick<Env, 'DATA_DIR'>): string {
  return resolve(env.DATA_DIR ?? defaultDataDir)
}

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
    const dataDir = resolve(embeddedDataDir(env), 'postgres')
    logger.info({ dataDir }, 'DATABASE_URL is not set; starting embedded PostgreSQL')
    embedded = await startEmbeddedPostgres({ dataDir, database: 'airi', onLog: message => logger.debug({ postgres: message.trim() }) })
    url = embedded.url
  }
  const db = createDb({
    connectionString: url,
    maxConnections: env.DATABASE_POOL_MAX,
    connectionTimeoutMs: env.DATABASE_CONNECTION_TIMEOUT_MS,
    statementTimeoutMs: env.DATABASE_STATEMENT_TIMEOUT_MS,
    queryTimeoutMs: env.DATABASE_QUERY_TIMEOUT_MS,
    keepAliveIdleMs: env.DATABASE_KEEPALIVE_IDLE_MS,
  })
  return {
    db,
    url,
    async close() {
      await db.destroy()
      await embedded?.stop()
    },
  }
}

/** A secret from the environment, or (development only) one generated once and kept under DATA_DIR. */
async function secretOrGenerated(env: Env, logger: Logger, name: 'BETTER_AUTH_SECRET' | 'LLM_ROUTER_MASTER_KEY', file: string): Promise<string> {
  const configured = env[name]
  if (configured)
    return configured
  const path = resolve(embeddedDataDir(env), file)
  const existing = await readFile(path, 'utf8').then(text => text.trim(), () => '')
  if (existing)
    return existing
  const secret = randomBytes(32).toString('base64url')
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, `${secret}\n`, { mode: 0o600 })
  logger.info({ path }, `${name} is not set; generated a development value`)
  return secret
}

/** The public origin of this server: API_SERVER_URL, else where it listens locally. */
function apiServerUrl(env: Env): string {
  return (env.API_SERVER_URL ?? `http://localhost:${env.PORT}`).replace(/\/$/, '')
}

/** The OIDC client id stage-web is built with unless VITE_OIDC_CLIENT_ID says otherwise. */
export const STAGE_WEB_DEV_CLIENT_ID = 'airi-stage-web'

/** First-party OIDC clients from OIDC_* variables (SPEC §4.1). */
export function trustedClients(env: Env): TrustedClient[] {
  const clients: TrustedClient[] = []
  if (env.OIDC_CLIENT_ID_WEB)
    clients.push({ clientId: env.OIDC_CLIENT_ID_WEB, name: 'AIRI web', redirectUris: env.OIDC_WEB_REDIRECT_URIS, applicationType: 'web' })
  else if (env.NODE_ENV !== 'production') {
    // The embedded default serves stage-web at /app/: register its client so it signs in
    // with no setup (localhost's port is ignored, so Vite's dev server matches too).
    clients.push({ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web (development)', redirectUris: [`${apiServerUrl(env)}${STAGE_WEB_PATH}callback`], applicationType: 'web' })
  }
  if (env.OIDC_CLIENT_ID_ELECTRON && env.OIDC_CLIENT_SECRET_ELECTRON) {
    clients.push({
      clientId: env.OIDC_CLIENT_ID_ELECTRON,
      clientSecret: env.OIDC_CLIENT_SECRET_ELECTRON,
      name: 'AIRI desktop',
      // The desktop app's loopback port varies, so it registers our relay page instead.
      redirectUris: [`${apiServerUrl(env)}${ELECTRON_RELAY_PATH}`],
      applicationType: 'web',
    })
  }
  if (env.OIDC_CLIENT_ID_POCKET)
    clients.push({ clientId: env.OIDC_CLIENT_ID_POCKET, name: 'AIRI pocket', redirectUris: env.OIDC_POCKET_REDIRECT_URIS, applicationType: 'native' })
  return clients
}

/** The social providers whose credentials are configured. */
export function socialProviders(env: Env): Array<'google' | 'github'> {
  return [...(env.GOOGLE_CLIENT_ID ? ['google' as const] : []), ...(env.GITHUB_CLIENT_ID ? ['github' as const] : [])]
}

async function authSettings(env: Env, logger: Logger): Promise<AuthSettings & { trustedClients: TrustedClient[] }> {
  return {
    secret: await secretOrGenerated(env, logger, 'BETTER_AUTH_SECRET', 'auth-secret'),
    baseUrl: apiServerUrl(env),
    trustedOrigins: env.AUTH_TRUSTED_ORIGINS,
    trustedClients: trustedClients(env),
    google: env.GOOGLE_CLIENT_ID && env.GOOGLE_CLIENT_SECRET ? { clientId: env.GOOGLE_CLIENT_ID, clientSecret: env.GOOGLE_CLIENT_SECRET } : undefined,
    github: env.GITHUB_CLIENT_ID && env.GITHUB_CLIENT_SECRET ? { clientId: env.GITHUB_CLIENT_ID, clientSecret: env.GITHUB_CLIENT_SECRET } : undefined,
  }
}

/** Stripe, when STRIPE_SECRET_KEY is set; without it billing answers 503 STRIPE_NOT_CONFIGURED. */
function stripeSettings(env: Env): StripeSettings | undefined {
  if (!env.STRIPE_SECRET_KEY)
    return undefined
  return { secretKey: env.STRIPE_SECRET_KEY, webhookSecret: env.STRIPE_WEBHOOK_SECRET, apiUrl: env.STRIPE_API_URL }
}

export interface Runtime {
  api: Api
  close: () => Promise<void>
}

/** Opens Postgres (migrated) and the adapters, and composes the API on them. */
export async function startRuntime(env: Env, logger: Logger): Promise<Runtime> {
  const database = await openDatabase(env, logger)
  try {
    const report = await migrateDatabase(database.db)
    if (report.applied.length > 0)
      logger.info(report, 'applied migrations')

    const adapters = await createAdapters({ redisUrl: env.REDIS_URL, prefix: env.REDIS_KEY_PREFIX })
    logger.info({ adapters: adapters.kind }, env.REDIS_URL ? 'using Redis adapters' : 'REDIS_URL is not set; using in-process adapters')
    if (!env.RESEND_API_KEY)
      logger.info({}, 'RESEND_API_KEY is not set; e-mails are written to this log instead of sent')
    const api = await createApi({
      db: database.db,
      adapters,
      logger,
      emailTransport: env.RESEND_API_KEY ? createResendTransport({ apiKey: env.RESEND_API_KEY, from: env.EMAIL_FROM }) : createLogTransport(logger),
      auth: await authSettings(env, logger),
      adminEmails: env.ADMIN_EMAILS,
      service,
      llmMasterKey: parseMasterKey(await secretOrGenerated(env, logger, 'LLM_ROUTER_MASTER_KEY', 'llm-master-key')),
      stripe: stripeSettings(env),
      posthog: env.POSTHOG_KEY ? { apiKey: env.POSTHOG_KEY, host: env.POSTHOG_HOST } : undefined,
      rateLimits: { limits: { 'auth': env.AUTH_RATE_LIMIT_PER_MINUTE, 'gateway': env.LLM_RATE_LIMIT_PER_MINUTE, 'speech': env.TTS_RATE_LIMIT_PER_MINUTE, 'transcription': env.STT_RATE_LIMIT_PER_MINUTE, 'chat-messages': env.CHAT_RATE_LIMIT_PER_MINUTE, 'export': env.EXPORT_RATE_LIMIT_PER_HOUR } },
      chatSubscriptionsPerUser: env.CHAT_SUBSCRIPTIONS_PER_USER,
      liveSyncFallbackPollMs: env.LIVE_SYNC_FALLBACK_POLL_MS,
    })
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
