import { z } from 'zod'

const optionalString = z.string().trim().min(1).optional().catch(undefined)
const commaList = z.string().optional().transform(value => (value ?? '').split(',').map(item => item.trim()).filter(Boolean))

/** Every environment variable the host reads (SPEC §2). */
export const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  HOST: z.string().default('0.0.0.0'),
  PORT: z.coerce.number().int().min(0).max(65_535).default(3000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Where the embedded default keeps its Postgres cluster and generated secrets. */
  DATA_DIR: optionalString,
  DATABASE_URL: z.url().optional(),
  REDIS_URL: z.url().optional(),
  /** Prepended to every Redis key and channel, so deployments can share a server. */
  REDIS_KEY_PREFIX: z.string().default(''),
  BETTER_AUTH_SECRET: optionalString,
  API_SERVER_URL: z.url().optional(),
  RESEND_API_KEY: optionalString,
  STRIPE_SECRET_KEY: optionalString,
  STRIPE_WEBHOOK_SECRET: optionalString,
  LLM_ROUTER_MASTER_KEY: optionalString,
  ADMIN_EMAILS: commaList,
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
  POSTHOG_KEY: optionalString,
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
  if (env.NODE_ENV === 'production') {
    const missing = requiredInProduction.filter(name => env[name] === undefined)
    if (missing.length > 0)
      throw new EnvError(missing.map(name => `${name} is required when NODE_ENV=production`))
  }
  return env
}
