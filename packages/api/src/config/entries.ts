import { z } from 'zod'

/** An upstream key, stored envelope-encrypted (see the LLM gateway). */
const encryptedKeySchema = z.object({
  id: z.string().min(1),
  ciphertext: z.string().min(1),
})

/** Flux per million tokens; decimals allowed, bounded so a cost stays a safe integer. */
const fluxPerMillionTokens = z.number().min(0).max(1_000_000_000)

/** An alias's price (docs/billing.md#prices-per-model); strict, since a misspelt field would silently change a bill. */
const llmPricingSchema = z.strictObject({
  inputPer1M: fluxPerMillionTokens,
  outputPer1M: fluxPerMillionTokens,
  /** Cached prompt tokens (`prompt_tokens_details.cached_tokens`); the input price when absent. */
  cachedInputPer1M: fluxPerMillionTokens.optional(),
  /** The least a call costs (1 when absent). */
  minFlux: z.number().int().min(0).optional(),
  /** The smallest reservation, in place of FLUX_PER_REQUEST. */
  reserve: z.number().int().min(1).optional(),
})

const llmRouterConfigSchema = z.object({
  defaultModel: z.string().min(1).optional(),
  /** One deadline for the whole fallback chain of a call, streaming included (default 120 s). */
  deadlineMs: z.number().int().positive().optional(),
  models: z.record(z.string().min(1), z.object({
    /** Output tokens reserved for (and sent as `max_tokens`) when a request names none. */
    maxOutputTokens: z.number().int().positive().max(1_000_000).default(4096),
    /** Prices per token for this alias; without it the flat rule (FLUX_PER_1K_TOKENS) applies. */
    pricing: llmPricingSchema.optional(),
    upstreams: z.array(z.object({
      id: z.string().min(1),
      baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
      model: z.string().min(1),
      timeoutMs: z.number().int().positive().optional(),
      keys: z.array(encryptedKeySchema).min(1),
    })).min(1),
  })),
})

/** A voice as the speech catalogue serves it. */
const ttsVoiceSchema = z.object({
  id: z.string().min(1).max(200),
  name: z.string().min(1).max(200).optional(),
  languages: z.array(z.string().min(1).max(35)).max(100).optional(),
  gender: z.string().min(1).max(50).optional(),
})

/** Speech upstreams by alias (SPEC §4.6); keys sealed like the LLM router's, under the alias. */
const ttsUpstreamsSchema = z.object({
  defaultModel: z.string().min(1).optional(),
  models: z.record(z.string().min(1).max(200), z.object({
    /** `openai-compatible`: `{baseUrl}/audio/speech` and `{baseUrl}/voices`; `azure`: SSML to `{baseUrl}/cognitiveservices/v1`. */
    adapter: z.enum(['openai-compatible', 'azure']),
    baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
    /** The upstream model (openai-compatible) or output format (azure, e.g. `audio-24khz-48kbitrate-mono-mp3`). */
    model: z.string().min(1).max(200),
    /** Served as the voice list instead of asking the upstream (for upstreams without a voice endpoint). */
    voices: z.array(ttsVoiceSchema).max(1000).optional(),
    /** Voice ids offered first in pickers (`recommended` of the voice list). */
    recommendedVoices: z.array(z.string().min(1).max(200)).max(100).optional(),
    /** Bounds one whole call, every key tried included (default 60 s). */
    timeoutMs: z.number().int().positive().max(300_000).optional(),
    keys: z.array(encryptedKeySchema).min(1),
  })),
}).refine(value => value.defaultModel === undefined || Object.hasOwn(value.models, value.defaultModel), { message: 'defaultModel must name one of models', path: ['defaultModel'] })

/** Transcription upstreams by alias (SPEC §4.13); keys sealed like the LLM router's, under the alias. */
const sttUpstreamsSchema = z.object({
  defaultModel: z.string().min(1).optional(),
  models: z.record(z.string().min(1).max(200), z.object({
    /** `openai-compatible`: a multipart form to `{baseUrl}/audio/transcriptions` (OpenAI, Groq, vLLM, faster-whisper servers). */
    adapter: z.enum(['openai-compatible']),
    baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
    /** The upstream model, sent in place of the alias. */
    model: z.string().min(1).max(200),
    /** Bounds one whole call, every key tried included (default 120 s). */
    timeoutMs: z.number().int().positive().max(600_000).optional(),
    keys: z.array(encryptedKeySchema).min(1),
  })),
}).refine(value => value.defaultModel === undefined || Object.hasOwn(value.models, value.defaultModel), { message: 'defaultModel must name one of models', path: ['defaultModel'] })

const streamingTtsUpstreamSchema = z.object({
  /** WebSocket URL of the bidirectional TTS bridge (e.g. an unspeech-style proxy). */
  url: z.url({ protocol: /^(?:wss?|https?)$/, error: 'must be a ws://, wss://, http:// or https:// URL' }),
  /** Sealed under the alias `streaming-tts`; sent as `Authorization: Bearer`. */
  keys: z.array(encryptedKeySchema).min(1),
  models: z.array(z.object({ id: z.string().min(1).max(200), name: z.string().min(1).max(200).optional() })).min(1),
  defaultModel: z.string().min(1).optional(),
  /** The `provider` asked for in the bridge's voice catalogue (`GET /api/voices?provider=`). */
  voicesProvider: z.string().min(1).max(100).default('volcengine'),
})

/** The streaming transcription upstream (SPEC §4.13), spoken to in the OpenAI Realtime transcription protocol. */
const streamingSttUpstreamSchema = z.object({
  /** WebSocket URL, e.g. `wss://api.openai.com/v1/realtime?intent=transcription` (vLLM serves the same protocol). */
  url: z.url({ protocol: /^wss?$/, error: 'must be a ws:// or wss:// URL' }),
  /** The transcription model named in `session.update` (e.g. `gpt-4o-transcribe`). */
  model: z.string().min(1).max(200),
  /** Sealed under the alias `streaming-stt`; sent as `Authorization: Bearer`. */
  keys: z.array(encryptedKeySchema).min(1),
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
  /** Tokens of a server-made reply's prompt (character prompts, history, the new message); older history is left out. */
  CHAT_CONTEXT_TOKENS: z.number().int().min(256).max(2_000_000).default(8000),
  FLUX_PER_1K_CHARS_TTS: z.number().positive().default(1),
  FLUX_METER_DEBT_TTL_SECONDS: z.number().int().positive().default(30 * 24 * 60 * 60),
  MAX_CHECKOUT_AMOUNT_CENTS: z.number().int().positive().default(100_000),
  STRIPE_FLUX_PRODUCT_ID: z.string().min(1),
  /** Checkout payment method types; unset lets Stripe choose from the dashboard settings. */
  STRIPE_PAYMENT_METHODS: z.array(z.string().min(1)).optional(),
  STRIPE_PAYMENT_METHOD_OPTIONS: z.record(z.string(), z.unknown()).optional(),
  LLM_ROUTER_CONFIG: llmRouterConfigSchema,
  TTS_UPSTREAMS: ttsUpstreamsSchema,
  /** Longest `input` of one speech call, in characters (code points). */
  TTS_MAX_INPUT_CHARS: z.number().int().positive().max(100_000).default(4096),
  STREAMING_TTS_UPSTREAM: streamingTtsUpstreamSchema,
  STT_UPSTREAMS: sttUpstreamsSchema,
  /** Price of transcription: Flux per minute of audio, billed by the millisecond on the `stt` meter. */
  FLUX_PER_MINUTE_STT: z.number().positive().default(1),
  STREAMING_STT_UPSTREAM: streamingSttUpstreamSchema,
  /** The LLM alias that extracts memories after each server-made reply; unset, nothing is extracted automatically. */
  MEMORY_EXTRACTION_MODEL: z.string().min(1).max(200).optional(),
  /** The embedding alias whose vectors add cosine similarity to memory recall; unset, recall is full-text only. */
  MEMORY_EMBEDDING_MODEL: z.string().min(1).max(200).optional(),
  /** Tokens of recalled memories a server-made reply's system message may hold. */
  MEMORY_CONTEXT_TOKENS: z.number().int().min(0).max(32_000).default(1000),
} satisfies Record<string, z.ZodType>

type ConfigEntries = typeof configEntries
export type ConfigKey = keyof ConfigEntries
export type ConfigValue<K extends ConfigKey> = z.output<ConfigEntries[K]>

/** Keys that always have a value (a default, or an optional schema). */
export type KeyWithFallback = {
  [K in ConfigKey]: undefined extends z.input<ConfigEntries[K]> ? K : never
}[ConfigKey]

export const configKeys = Object.keys(configEntries) as ConfigKey[]
