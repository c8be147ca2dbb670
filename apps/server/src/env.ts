import { isIP } from 'node:net'

import { z } from 'zod'

import { parseMasterKey } from '@airi/api'

const optionalString = z.string().trim().min(1).optional().catch(undefined)
const commaList = z.string().optional().transform(value => (value ?? '').split(',').map(item => item.trim()).filter(Boolean))

// proxy-addr's names for the reserved ranges (127/8 and ::1; 169.254/16 and fe80::/10; 10/8, 172.16/12, 192.168/16 and fc00::/7).
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

function isAddressOrRange(entry: string): boolean {
  if (PROXY_RANGE_NAMES.has(entry))
    return true
  const [address = '', bits, ...rest] = entry.split('/')
  const family = isIP(address)
  if (family === 0 || rest.length > 0)
    return false
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128))
}

/**
 * Which peers may tell us the client's address (X-Forwarded-For, -Proto, -Host):
 * a hop count, or the proxies' addresses and ranges. `true` is refused: it would
 * let any client choose the address its rate limit is counted under.
 */
const trustProxy = z.string().optional().transform((value, ctx): number | string[] | undefined => {
  const text = value?.trim() ?? ''
  if (text === '' || text === '0')
    return undefined
  if (/^\d+$/.test(text))
    return Number(text)
  if (text === 'true') {
    ctx.addIssue({ code: 'custom', message: 'true would believe any client\'s X-Forwarded-For; give the hop count or the proxies\' addresses' })
    return z.NEVER
  }
  const entries = text.split(',').map(entry => entry.trim()).filter(Boolean)
  const invalid = entries.filter(entry => !isAddressOrRange(entry))
  if (invalid.length > 0) {
    ctx.addIssue({ code: 'custom', message: `expected a hop count or comma-separated IP addresses/CIDR ranges (or loopback, linklocal, uniquelocal), not ${invalid.join(', ')}` })
    return z.NEVER
  }
  return entries
})

/** Every environment variable the host reads (SPEC §2). */
const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  HOST: z.string().default('0.0.0.0'),
  PORT: z.coerce.number().int().min(0).max(65_535).default(3000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Where the embedded default keeps its Postgres cluster and generated secrets. */
  DATA_DIR: optionalString,
  DATABASE_URL: z.url().optional(),
  /** Postgres connections this process may hold at once (see docs/configuration.md for how the default was chosen). */
  DATABASE_POOL_MAX: z.coerce.number().int().positive().max(1000).default(20),
  /** Bounds on a slow or silent Postgres (a wait for a connection, a statement, its answer; TCP keepalive); unset means the default in docs/operations.md, 0 turns the statement or query timeout off. */
  DATABASE_CONNECTION_TIMEOUT_MS: z.coerce.number().int().positive().optional(),
  DATABASE_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(0).optional(),
  DATABASE_QUERY_TIMEOUT_MS: z.coerce.number().int().min(0).optional(),
  DATABASE_KEEPALIVE_IDLE_MS: z.coerce.number().int().positive().optional(),
  REDIS_URL: z.url().optional(),
  /** Prepended to every Redis key and channel, so deployments can share a server. */
  REDIS_KEY_PREFIX: z.string().default(''),
  /** How often live subscriptions read their feeds while this instance's Redis pub/sub connection is down. */
  LIVE_SYNC_FALLBACK_POLL_MS: z.coerce.number().int().min(100).max(60_000).default(1000),
  BETTER_AUTH_SECRET: optionalString,
  API_SERVER_URL: z.url().optional(),
  /** Browser origins (comma-separated) allowed to call /api/auth/* with cookies, e.g. stage-web's. */
  AUTH_TRUSTED_ORIGINS: commaList,
  /** Requests per minute one IP may make to /api/auth/*. */
  AUTH_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().positive().default(120),
  /** The load balancers in front of us; unset trusts none (X-Forwarded-* ignored). */
  TRUST_PROXY: trustProxy,
  /** Limits on what one client may hold open; unset means the default in docs/operations.md. */
  WS_MAX_CONNECTIONS_PER_USER: z.coerce.number().int().positive().optional(),
  WS_MAX_CONNECTIONS_PER_IP: z.coerce.number().int().positive().optional(),
  WS_MAX_SUBSCRIPTIONS_PER_CONNECTION: z.coerce.number().int().positive().optional(),
  WS_AUTH_GRACE_MS: z.coerce.number().int().positive().optional(),
  /** Bytes a tRPC socket may leave unread before it is closed (4008), and how long it then has to read up to the close frame. */
  WS_MAX_BUFFERED_BYTES: z.coerce.number().int().positive().optional(),
  WS_SLOW_CONSUMER_CLOSE_MS: z.coerce.number().int().positive().optional(),
  /** Live `chats.onMessages` subscriptions one user may hold on one instance, across sockets. */
  CHAT_SUBSCRIPTIONS_PER_USER: z.coerce.number().int().positive().optional(),
  TRPC_MAX_BATCH_SIZE: z.coerce.number().int().positive().optional(),
  SPEECH_WS_MAX_CONNECTIONS_PER_USER: z.coerce.number().int().positive().optional(),
  SPEECH_WS_IDLE_TIMEOUT_MS: z.coerce.number().int().positive().optional(),
  SPEECH_WS_MAX_FRAME_BYTES: z.coerce.number().int().positive().max(1024 * 1024).optional(),
  SPEECH_WS_MAX_BUFFERED_BYTES: z.coerce.number().int().positive().optional(),
  SPEECH_WS_DRAIN_TIMEOUT_MS: z.coerce.number().int().positive().optional(),
  SPEECH_WS_CLOSE_GRACE_MS: z.coerce.number().int().positive().optional(),
  HTTP_REQUEST_TIMEOUT_MS: z.coerce.number().int().positive().optional(),
  HTTP_CONNECTION_TIMEOUT_MS: z.coerce.number().int().positive().optional(),
  /** How long a graceful shutdown may wait for open requests and streams before it closes them. */
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().positive().default(10_000),
  RESEND_API_KEY: optionalString,
  /** Sender of every e-mail. */
  EMAIL_FROM: z.string().default('AIRI <noreply@airi.moeru.ai>'),
  GOOGLE_CLIENT_ID: optionalString,
  GOOGLE_CLIENT_SECRET: optionalString,
  GITHUB_CLIENT_ID: optionalString,
  GITHUB_CLIENT_SECRET: optionalString,
  /** First-party OIDC clients (SPEC §4.1). Public clients use PKCE only. */
  OIDC_CLIENT_ID_WEB: optionalString,
  OIDC_WEB_REDIRECT_URIS: commaList,
  OIDC_CLIENT_ID_ELECTRON: optionalString,
  OIDC_CLIENT_SECRET_ELECTRON: optionalString,
  OIDC_CLIENT_ID_POCKET: optionalString,
  OIDC_POCKET_REDIRECT_URIS: z.string().optional().transform(value => (value ?? 'capacitor://localhost/auth/callback').split(',').map(item => item.trim()).filter(Boolean)),
  STRIPE_SECRET_KEY: optionalString,
  STRIPE_WEBHOOK_SECRET: optionalString,
  /** Stripe's API origin (protocol, host, port); Stripe's own by default. Local development and tests point it at a fake. */
  STRIPE_API_URL: z.url({ protocol: /^https?$/ }).optional(),
  LLM_ROUTER_MASTER_KEY: optionalString,
  /** Quick start: with no LLM_ROUTER_CONFIG stored, an alias `chat` is configured from these at start (apps/server/src/quick-start.ts). */
  OPENAI_API_KEY: optionalString,
  OPENAI_BASE_URL: z.url({ protocol: /^https?$/ }).default('https://api.openai.com/v1'),
  OPENAI_MODEL: z.string().trim().min(1).default('gpt-4o-mini'),
  /** With OPENAI_API_KEY and no TTS_UPSTREAMS stored, a speech alias `voice` is configured for this model. */
  OPENAI_TTS_MODEL: optionalString,
  ADMIN_EMAILS: commaList,
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
  /** How often metrics are exported, and how long spans wait to be batched (the standard OTEL_* names). */
  OTEL_METRIC_EXPORT_INTERVAL: z.coerce.number().int().positive().default(60_000),
  OTEL_BSP_SCHEDULE_DELAY: z.coerce.number().int().positive().default(5_000),
  /** How long shutdown waits for the last metrics and spans to reach the collector (at most SHUTDOWN_TIMEOUT_MS). */
  TELEMETRY_FLUSH_TIMEOUT_MS: z.coerce.number().int().positive().default(2_000),
  /** PostHog project key: product events are sent only when it is set. */
  POSTHOG_KEY: optionalString,
  /** PostHog's ingestion origin (PostHog Cloud US by default; e.g. https://eu.i.posthog.com or a self-hosted one). */
  POSTHOG_HOST: z.url({ protocol: /^https?$/ }).optional(),
  /** Chat completions one user may start per minute through the LLM gateway. */
  LLM_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().positive().default(60),
  /** Speech syntheses (POST /api/v1/audio/speech) one user may request per minute. */
  TTS_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().positive().default(60),
  /** Transcriptions (POST /api/v1/audio/transcriptions) one user may request per minute. */
  STT_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().positive().default(60),
  /** `chats.sendMessages` calls one user may make per minute. */
  CHAT_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().positive().default(120),
  /** Account exports (GET /api/v1/account/export) one user may request per hour. */
  EXPORT_RATE_LIMIT_PER_HOUR: z.coerce.number().int().positive().default(6),
})

export type Env = z.infer<typeof envSchema>

/** Production has no embedded defaults: these must be configured. */
export const requiredInProduction = [
  'DATABASE_URL',
  'REDIS_URL',
  'BETTER_AUTH_SECRET',
  'API_SERVER_URL',
  'RESEND_API_KEY',
  'STRIPE_SECRET_KEY',
  'STRIPE_WEBHOOK_SECRET',
  'LLM_ROUTER_MASTER_KEY',
] as const satisfies ReadonlyArray<keyof Env>

export class EnvError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid environment:\n${problems.map(problem => `  - ${problem}`).join('\n')}`)
  }
}

/** Parses the environment; throws an EnvError naming every invalid or missing variable. */
export function parseEnv(source: Record<string, string | undefined>): Env {
  // An empty variable means "not set", as shells and .env files usually intend.
  const present = Object.fromEntries(Object.entries(source).filter(([, value]) => value !== undefined && value !== ''))
  const parsed = envSchema.safeParse(present)
  if (!parsed.success)
    throw new EnvError(parsed.error.issues.map(issue => `${issue.path.join('.')}: ${issue.message}`))

  const env = parsed.data
  const problems: string[] = []
  if (env.NODE_ENV === 'production')
    problems.push(...requiredInProduction.filter(name => env[name] === undefined).map(name => `${name} is required when NODE_ENV=production`))
  // A provider or client half-configured is a mistake, not a choice.
  const pairs = [['GOOGLE_CLIENT_ID', 'GOOGLE_CLIENT_SECRET'], ['GITHUB_CLIENT_ID', 'GITHUB_CLIENT_SECRET'], ['OIDC_CLIENT_ID_ELECTRON', 'OIDC_CLIENT_SECRET_ELECTRON']] as const
  for (const [id, secret] of pairs) {
    if ((env[id] === undefined) !== (env[secret] === undefined))
      problems.push(`${id} and ${secret} must be set together`)
  }
  if (env.LLM_ROUTER_MASTER_KEY) {
    try {
      parseMasterKey(env.LLM_ROUTER_MASTER_KEY)
    }
    catch (error) {
      problems.push(`LLM_ROUTER_MASTER_KEY: ${(error as Error).message}`)
    }
  }
  if (env.OIDC_CLIENT_ID_WEB && env.OIDC_WEB_REDIRECT_URIS.length === 0)
    problems.push('OIDC_WEB_REDIRECT_URIS is required when OIDC_CLIENT_ID_WEB is set')
  if (problems.length > 0)
    throw new EnvError(problems)
  return env
}
