import { z } from 'zod'

import type { ConfigValue } from '../../config/entries.ts'
import { ApiError } from '../../errors.ts'
import type { ConfigService } from '../config.ts'
import type { KeyVault } from '../key-vault.ts'

export const upstreamKinds = ['llm', 'tts', 'stt'] as const
export type UpstreamKind = typeof upstreamKinds[number]

/** The config entry each kind of upstream lives in, and the flat price that applies without a per-alias one. */
const entryOf = { llm: 'LLM_ROUTER_CONFIG', tts: 'TTS_UPSTREAMS', stt: 'STT_UPSTREAMS' } as const
const flatPriceOf = { llm: 'FLUX_PER_1K_TOKENS', tts: 'FLUX_PER_1K_CHARS_TTS', stt: 'FLUX_PER_MINUTE_STT' } as const

/** The id of the key an operator types, and of the LLM alias's first upstream. */
const PRIMARY = 'primary'
const MASK = '••••'

const fluxPerMillion = z.number().min(0).max(1_000_000_000)

/** What `pnpm airi llm|tts|stt add` and the admin pages send; the kind decides which optional fields apply. */
export const upstreamPutInput = z.object({
  kind: z.enum(upstreamKinds),
  alias: z.string().trim().min(1).max(200),
  baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).max(2000),
  model: z.string().trim().min(1).max(200),
  /** The plaintext key, sealed here; absent keeps the alias's stored keys. */
  apiKey: z.string().trim().min(1).max(10_000).optional(),
  adapter: z.enum(['openai-compatible', 'azure']).optional(),
  /** LLM only; null goes back to the flat rule, absent keeps the alias's price. */
  pricing: z.strictObject({ inputPer1M: fluxPerMillion, outputPer1M: fluxPerMillion, cachedInputPer1M: fluxPerMillion.optional() }).nullable().optional(),
  makeDefault: z.boolean().optional(),
}).superRefine((input, ctx) => {
  if (input.pricing && input.kind !== 'llm')
    ctx.addIssue({ code: 'custom', path: ['pricing'], message: 'only LLM aliases have prices per token; speech and transcription use the flat price' })
  if (input.adapter && input.kind !== 'tts' && input.adapter !== 'openai-compatible')
    ctx.addIssue({ code: 'custom', path: ['adapter'], message: 'only speech (tts) upstreams can use the azure adapter' })
})
export type UpstreamPut = z.infer<typeof upstreamPutInput>

export interface UpstreamKeyView {
  id: string
  /** `••••` and the key's last four characters; only `••••` when it cannot be read or is too short to show any. */
  hint: string
}

interface UpstreamView {
  id: string
  baseUrl: string
  model: string
  /** Speech and transcription: the wire protocol; null for LLM upstreams. */
  adapter: string | null
  keys: UpstreamKeyView[]
}

type LlmPricing = NonNullable<ConfigValue<'LLM_ROUTER_CONFIG'>['models'][string]['pricing']>

export interface AliasView {
  alias: string
  isDefault: boolean
  /** LLM only; null when the flat rule applies. */
  pricing: LlmPricing | null
  /** LLM: the fallback chain in order; speech and transcription: one. */
  upstreams: UpstreamView[]
}

export interface UpstreamList {
  kind: UpstreamKind
  defaultModel: string | null
  /** The entry whose price applies to aliases without one (LLM) or to every alias (speech, transcription). */
  flatPrice: { key: typeof flatPriceOf[UpstreamKind], value: number }
  models: AliasView[]
}

type StoredKeys = Array<{ id: string, ciphertext: string }>
type LlmConfig = ConfigValue<'LLM_ROUTER_CONFIG'>
type SpeechConfig = ConfigValue<'TTS_UPSTREAMS'> | ConfigValue<'STT_UPSTREAMS'>

/**
 * The LLM, speech and transcription upstreams as aliases: what the CLI's `add`,
 * `list`, `remove` and the admin pages edit. Each change is one `config.set` of the
 * kind's entry, so it is validated (schema, sealed keys) and reaches every instance
 * like any other config change; keys are sealed here and only a hint goes out.
 */
export function createUpstreamAdmin({ config, keyVault }: { config: ConfigService, keyVault: KeyVault | undefined }) {
  function hint(alias: string, key: { id: string, ciphertext: string }): UpstreamKeyView {
    try {
      const plain = keyVault?.decrypt(alias, key.id, key.ciphertext)
      // A short key would be mostly shown by its last four.
      return { id: key.id, hint: plain && plain.length >= 12 ? `${MASK}${plain.slice(-4)}` : MASK }
    }
    catch {
      return { id: key.id, hint: MASK }
    }
  }

  function seal(alias: string, apiKey: string): StoredKeys {
    if (!keyVault)
      throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set, so an upstream key cannot be stored encrypted', { key: 'LLM_ROUTER_MASTER_KEY' })
    return [{ id: PRIMARY, ciphertext: keyVault.encrypt(alias, PRIMARY, apiKey) }]
  }

  async function stored<K extends UpstreamKind>(kind: K): Promise<(K extends 'llm' ? LlmConfig : SpeechConfig) | undefined> {
    return (await config.describe(entryOf[kind])).value as (K extends 'llm' ? LlmConfig : SpeechConfig) | undefined
  }

  function views(kind: UpstreamKind, value: LlmConfig | SpeechConfig | undefined): AliasView[] {
    if (!value)
      return []
    if (kind === 'llm') {
      return Object.entries((value as LlmConfig).models).map(([alias, model]) => ({
        alias,
        isDefault: value.defaultModel === alias,
        pricing: model.pricing ?? null,
        upstreams: model.upstreams.map(upstream => ({ id: upstream.id, baseUrl: upstream.baseUrl, model: upstream.model, adapter: null, keys: upstream.keys.map(key => hint(alias, key)) })),
      }))
    }
    return Object.entries((value as SpeechConfig).models).map(([alias, model]) => ({
      alias,
      isDefault: value.defaultModel === alias,
      pricing: null,
      upstreams: [{ id: PRIMARY, baseUrl: model.baseUrl, model: model.model, adapter: model.adapter, keys: model.keys.map((key: { id: string, ciphertext: string }) => hint(alias, key)) }],
    }))
  }

  function keysFor(input: UpstreamPut, existing: StoredKeys | undefined): StoredKeys {
    if (input.apiKey)
      return seal(input.alias, input.apiKey)
    if (existing)
      return existing
    throw new ApiError(400, 'API_KEY_REQUIRED', `${input.alias} is a new ${input.kind} alias: give its API key`, { alias: input.alias })
  }

  /** The default stays unless asked for or gone; the first alias of a kind becomes it. */
  function defaultAfterPut(current: string | undefined, models: Record<string, unknown>, input: UpstreamPut): string {
    return input.makeDefault || current === undefined || !Object.hasOwn(models, current) ? input.alias : current
  }

  return {
    async list(kind: UpstreamKind): Promise<UpstreamList> {
      const [value, flat] = await Promise.all([stored(kind), config.get(flatPriceOf[kind])])
      return { kind, defaultModel: value?.defaultModel ?? null, flatPrice: { key: flatPriceOf[kind], value: flat }, models: views(kind, value) }
    },

    /**
     * Adds or replaces an alias. An LLM alias's first upstream is replaced and the
     * rest of its fallback chain kept; its price is changed only when given (null: the flat rule).
     */
    async put(input: UpstreamPut, updatedBy: string | null): Promise<AliasView> {
      const alias = input.alias
      let next: LlmConfig | SpeechConfig
      if (input.kind === 'llm') {
        const current = await stored('llm') ?? { models: {} }
        const existing = Object.hasOwn(current.models, alias) ? current.models[alias] : undefined
        const upstream = { id: existing?.upstreams[0]?.id ?? PRIMARY, baseUrl: input.baseUrl, model: input.model, keys: keysFor(input, existing?.upstreams[0]?.keys) }
        const { pricing: price, ...kept } = existing ?? { maxOutputTokens: 4096 }
        const pricing = input.pricing === null ? undefined : input.pricing ? { ...price, ...input.pricing } : price
        const models = { ...current.models, [alias]: { ...kept, ...(pricing ? { pricing } : {}), upstreams: [upstream, ...(existing?.upstreams.slice(1) ?? [])] } }
        next = { ...current, models, defaultModel: defaultAfterPut(current.defaultModel, current.models, input) }
      }
      else {
        const current = await stored(input.kind) ?? { models: {} }
        const existing = Object.hasOwn(current.models, alias) ? current.models[alias] : undefined
        const adapter = input.adapter ?? existing?.adapter ?? 'openai-compatible'
        const models = { ...current.models, [alias]: { ...existing, adapter, baseUrl: input.baseUrl, model: input.model, keys: keysFor(input, existing?.keys) } }
        next = { ...current, models, defaultModel: defaultAfterPut(current.defaultModel, current.models, input) } as SpeechConfig
      }
      const saved = await config.set(entryOf[input.kind], next, updatedBy)
      return views(input.kind, saved).find(view => view.alias === alias)!
    },

    /** Removes an alias; when it was the default, the first one left becomes it. */
    async remove(kind: UpstreamKind, alias: string, updatedBy: string | null): Promise<{ removed: boolean }> {
      const current = await stored(kind)
      if (!current || !Object.hasOwn(current.models, alias))
        return { removed: false }
      const { [alias]: _removed, ...models } = current.models
      const defaultModel = current.defaultModel === alias ? Object.keys(models)[0] : current.defaultModel
      await config.set(entryOf[kind], { ...current, models, defaultModel }, updatedBy)
      return { removed: true }
    },
  }
}

export type UpstreamAdmin = ReturnType<typeof createUpstreamAdmin>
