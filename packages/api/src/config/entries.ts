import { z } from 'zod'

/** An upstream key, stored envelope-encrypted (see the LLM gateway). */
const encryptedKeySchema = z.object({
  id: z.string().min(1),
  ciphertext: z.string().min(1),
})

export const llmRouterConfigSchema = z.object({
  defaultModel: z.string().min(1).optional(),
  /** One deadline for the whole fallback chain of a call, streaming included (default 120 s). */
  deadlineMs: z.number().int().positive().optional(),
  models: z.record(z.string().min(1), z.object({
    upstreams: z.array(z.object({
      id: z.string().min(1),
      baseUrl: z.url(),
      model: z.string().min(1),
      timeoutMs: z.number().int().positive().optional(),
      keys: z.array(encryptedKeySchema).min(1),
    })).min(1),
  })),
})

export const streamingTtsUpstreamSchema = z.object({
  /** WebSocket URL of the bidirectional TTS bridge (e.g. an unspeech-style proxy). */
  url: z.url(),
})

/**
 * Every operator config entry: one zod schema each, and the default (if any) only
 * here. An entry without a default is required by the routes that read it.
 */
export const configEntries = {
  INITIAL_USER_FLUX: z.number().int().min(0).default(100),
  /** Fallback price of one LLM call, and the reservation taken before calling upstream. */
  FLUX_PER_REQUEST: z.number().int().min(1).default(1),
  FLUX_PER_1K_TOKENS: z.number().positive().default(1),
  FLUX_PER_1K_CHARS_TTS: z.number().positive().default(1),
  FLUX_METER_DEBT_TTL_SECONDS: z.number().int().positive().default(30 * 24 * 60 * 60),
  MAX_CHECKOUT_AMOUNT_CENTS: z.number().int().positive().default(100_000),
  STRIPE_FLUX_PRODUCT_ID: z.string().min(1),
  /** Checkout payment method types; unset lets Stripe choose from the dashboard settings. */
  STRIPE_PAYMENT_METHODS: z.array(z.string().min(1)).optional(),
  STRIPE_PAYMENT_METHOD_OPTIONS: z.record(z.string(), z.unknown()).optional(),
  LLM_ROUTER_CONFIG: llmRouterConfigSchema,
  STREAMING_TTS_UPSTREAM: streamingTtsUpstreamSchema,
} satisfies Record<string, z.ZodType>

export type ConfigEntries = typeof configEntries
export type ConfigKey = keyof ConfigEntries
export type ConfigValue<K extends ConfigKey> = z.output<ConfigEntries[K]>

/** Keys that always have a value (a default, or an optional schema). */
export type KeyWithFallback = {
  [K in ConfigKey]: undefined extends z.input<ConfigEntries[K]> ? K : never
}[ConfigKey]

export const configKeys = Object.keys(configEntries) as ConfigKey[]

export function isConfigKey(key: string): key is ConfigKey {
  return Object.hasOwn(configEntries, key)
}
