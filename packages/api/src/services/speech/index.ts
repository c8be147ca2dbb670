import { randomUUID } from 'node:crypto'

import { z } from 'zod'

import { keys } from '../../adapters/keys.ts'
import type { AtomicCounters, Cache } from '../../adapters/ports.ts'
import { fetchStreamingVoices, httpOrigin, ttsAdapters, type SpeechInput, type SynthesizedAudio, type Voice } from '../../adapters/tts/index.ts'
import type { ConfigValue } from '../../config/entries.ts'
import { STREAMING_TTS_KEY_ALIAS } from '../../config/sealed-keys.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { recordFailure, tracer } from '../../tracing.ts'
import { createMeterHolds, type createFluxMeterFactory, type MeterKey, type MeterRuntime } from '../billing/index.ts'
import type { ConfigService } from '../config.ts'
import type { KeyVault } from '../key-vault.ts'
import { modelNotFound, resolveAlias } from '../model-alias.ts'
import { withHttpKeys, type TimedKeySet, type UpstreamKeyPool } from '../upstream-keys.ts'
import type { SpeechRequest } from './schema.ts'

export { speechRequestSchema, type SpeechRequest } from './schema.ts'
export type { Voice } from '../../adapters/tts/index.ts'

type TtsUpstreams = ConfigValue<'TTS_UPSTREAMS'>
type TtsModel = TtsUpstreams['models'][string]

export interface SpeechServiceDeps {
  config: ConfigService
  cache: Cache
  counters: AtomicCounters
  createFluxMeter: ReturnType<typeof createFluxMeterFactory>
  /** The LLM router's vault: speech keys are sealed the same way, under their alias. */
  keyVault: KeyVault | undefined
  /** The process's one upstream key pool (rotation and cooldowns shared with the LLM router and streaming speech). */
  keyPool: UpstreamKeyPool
  logger: Logger
}

/** Bound of one speech call (every key tried) when its entry names none. */
const DEFAULT_TIMEOUT_MS = 60_000
/** Bound of one call to the streaming bridge's voice catalogue. */
const CATALOGUE_TIMEOUT_MS = 5_000

export interface SpeechResult extends SynthesizedAudio {
  /** Characters billed (code points of `input`). */
  characters: number
  /** Whole Flux this call settled and debited (the rest stays as meter debt). */
  flux: number
}

/** How long a model's voice list is cached (SPEC §4.6). */
const VOICES_TTL_SECONDS = 600

/** The streaming bridge's keys in the shared pool: its catalogue and its sockets see one another's cooldowns. */
export const streamingTtsPoolId = (origin: string) => `${STREAMING_TTS_KEY_ALIAS}@${origin}`

const cachedVoices = z.array(z.object({
  id: z.string(),
  name: z.string(),
  languages: z.array(z.string()).optional(),
  gender: z.string().optional(),
}))

/** The `tts` meter's runtime: `FLUX_PER_1K_CHARS_TTS` turned into characters per Flux, read on every call. */
export function ttsMeterRuntime(config: ConfigService): () => Promise<MeterRuntime> {
  return async () => ({
    unitsPerFlux: 1000 / await config.get('FLUX_PER_1K_CHARS_TTS'),
    debtTtlSeconds: await config.get('FLUX_METER_DEBT_TTL_SECONDS'),
  })
}

/** Characters as users count them: code points, so an emoji is one, not two. */
export function countCharacters(text: string): number {
  let count = 0
  for (const _ of text)
    count++
  return count
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  }
  catch {
    return undefined
  }
}

/**
 * Speech (SPEC §4.6): synthesis through the upstream an alias names, billed per
 * character on the `tts` meter, and the voice and model catalogues (the REST
 * upstreams' and the streaming bridge's).
 */
export function createSpeechService({ config, cache, counters, createFluxMeter, keyVault, keyPool, logger }: SpeechServiceDeps) {
  const resolveRuntime = ttsMeterRuntime(config)
  const meter = createFluxMeter({ name: 'tts', resolveRuntime })
  const holds = createMeterHolds({ counters, meter, resolveRuntime, logger })
  /** Voice lists being fetched, so concurrent misses of one model make one upstream call. */
  const voiceLoads = new Map<string, Promise<Voice[]>>()

  const poolOf = (alias: string, entry: TtsModel): TimedKeySet =>
    ({ poolId: `${alias}@${entry.baseUrl}`, alias, keys: entry.keys, timeoutMs: entry.timeoutMs ?? DEFAULT_TIMEOUT_MS })

  /** The upstream's voices for `alias`: from the cache, else one shared upstream call whose success is cached. */
  async function upstreamVoices(alias: string, entry: TtsModel): Promise<Voice[]> {
    const key = keys.ttsVoices(alias)
    const cached = await cache.get(key).catch((error: unknown) => {
      logger.warn({ err: error, model: alias }, 'voice cache unavailable; asking the upstream')
      return null
    })
    if (cached) {
      const parsed = cachedVoices.safeParse(parseJson(cached))
      if (parsed.success)
        return parsed.data
      logger.warn({ model: alias }, 'a cached voice list is malformed; asking the upstream')
    }

    let load = voiceLoads.get(alias)
    if (!load) {
      const adapter = ttsAdapters[entry.adapter]
      load = withHttpKeys(keyPool, logger, 'speech', poolOf(alias, entry), new AbortController().signal, (apiKey, signal) => adapter.listVoices({ baseUrl: entry.baseUrl, model: entry.model, apiKey, signal }))
        .then(async (voices) => {
          // Only a successful answer is kept: a failure is asked again on the next call.
          await cache.set(key, JSON.stringify(voices), VOICES_TTL_SECONDS).catch((error: unknown) => {
            logger.warn({ err: error, model: alias }, 'could not cache a voice list')
          })
          return voices
        })
        .finally(() => voiceLoads.delete(alias))
      voiceLoads.set(alias, load)
    }
    return load
  }

  return {
    /** The `tts` meter, for callers that bill speech elsewhere (the streaming socket). */
    meter,

    /**
     * Speaks `request.input` for `userId`. Refuses before any upstream call what
     * cannot be served or paid for (400, 402, 404, 503); bills the characters only
     * after the upstream answered with audio, so a failed call costs nothing. A
     * call made with a personal API key is billed to that key (and kept within
     * its budget: 402 KEY_BUDGET_EXCEEDED before the upstream call).
     */
    async synthesize(userId: string, request: SpeechRequest, clientSignal: AbortSignal, apiKey?: MeterKey): Promise<SpeechResult> {
      const started = performance.now()
      const tts = await config.getOrThrow('TTS_UPSTREAMS')
      const { alias, entry } = resolveAlias(tts, request.model, 'speech model')
      const characters = countCharacters(request.input)
      const maxCharacters = await config.get('TTS_MAX_INPUT_CHARS')
      if (characters > maxCharacters)
        throw new ApiError(400, 'INPUT_TOO_LONG', `input: at most ${maxCharacters} characters, got ${characters}`, { param: 'input', maxCharacters, characters })

      const adapter = ttsAdapters[entry.adapter]
      const input: SpeechInput = {
        input: request.input,
        voice: request.voice,
        responseFormat: request.response_format,
        speed: request.speed,
        instructions: request.instructions,
        extraBody: request.extra_body,
      }
      adapter.validate(input)
      if (!keyVault)
        throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })

      const hold = await holds.acquire(userId, characters, apiKey)
      try {
        // One span for the upstream call, key rotation and fallback included.
        const audio = await tracer.startActiveSpan(`tts ${alias}`, { attributes: { 'airi.tts.model': alias, 'airi.tts.adapter': entry.adapter, 'airi.tts.characters': characters } }, async (span) => {
          try {
            return await withHttpKeys(keyPool, logger, 'speech', poolOf(alias, entry), clientSignal, (apiKey, signal) =>
              adapter.synthesize({ baseUrl: entry.baseUrl, model: entry.model, apiKey, signal }, input))
          }
          catch (error) {
            recordFailure(span, error)
            throw error
          }
          finally {
            span.end()
          }
        })

        let flux = 0
        await hold.settling().catch((error: unknown) => {
          logger.warn({ err: error, userId }, 'could not hold the settling Flux of a speech call')
        })
        try {
          flux = (await meter.accumulate({
            userId,
            units: characters,
            callId: randomUUID(),
            apiKeyId: apiKey?.keyId,
            usage: { kind: 'tts', model: alias, status: 'completed', characters, durationMs: performance.now() - started },
          })).settledFlux
        }
        catch (error) {
          // The audio exists and the user waited for it; a failed debit keeps its units owed on the meter.
          logger.error({ err: error, userId, model: alias, characters }, 'could not bill a speech call')
        }
        return { ...audio, characters, flux }
      }
      finally {
        await hold.release()
      }
    },

    /** `{ voices, recommended }` of a model (the default one when none is named); upstream answers cached 600 s. */
    async listVoices(model?: string): Promise<{ voices: Voice[], recommended: string[] }> {
      const tts = await config.getOrThrow('TTS_UPSTREAMS')
      const { alias, entry } = resolveAlias(tts, model, 'speech model')
      const voices = entry.voices
        ? entry.voices.map(voice => ({ ...voice, name: voice.name ?? voice.id }))
        : await upstreamVoices(alias, entry)
      const known = new Set(voices.map(voice => voice.id))
      return { voices, recommended: (entry.recommendedVoices ?? []).filter(id => known.has(id)) }
    },

    /** The aliases callers may name, and the one used when they name none. */
    async listModels(): Promise<{ models: Array<{ id: string }>, default: string | null }> {
      const tts = await config.getOrThrow('TTS_UPSTREAMS')
      const ids = Object.keys(tts.models)
      return { models: ids.map(id => ({ id })), default: tts.defaultModel ?? ids[0] ?? null }
    },

    /**
     * The streaming bridge's voices. Its failure (down, slow, refusing, nonsense)
     * answers an empty list and logs a warning: a picker shows nothing rather than
     * an error page.
     */
    async listStreamingVoices(model?: string): Promise<{ voices: Voice[] }> {
      const upstream = await config.getOrThrow('STREAMING_TTS_UPSTREAM')
      if (model && !upstream.models.some(entry => entry.id === model))
        throw modelNotFound('streaming speech model', model)
      const origin = httpOrigin(upstream.url)
      try {
        const pool: TimedKeySet = { poolId: streamingTtsPoolId(origin), alias: STREAMING_TTS_KEY_ALIAS, keys: upstream.keys, timeoutMs: CATALOGUE_TIMEOUT_MS }
        const voices = await withHttpKeys(keyPool, logger, 'speech', pool, new AbortController().signal, (apiKey, signal) =>
          fetchStreamingVoices({ url: upstream.url, provider: upstream.voicesProvider, model, apiKey, signal }))
        return { voices }
      }
      catch (error) {
        // The bridge refusing, failing or timing out is one line (a bridge without a
        // catalogue logs it on every picker that opens); a stack only for our own bugs.
        const why = error instanceof ApiError ? { status: error.status, code: error.code, reason: error.message } : { err: error }
        logger.warn({ ...why, upstream: origin }, 'streaming TTS voice catalogue unavailable; answering an empty list')
        return { voices: [] }
      }
    },

    /** The streaming bridge's models, from its config entry. */
    async listStreamingModels(): Promise<{ models: Array<{ id: string, name: string }>, default: string }> {
      const upstream = await config.getOrThrow('STREAMING_TTS_UPSTREAM')
      return {
        models: upstream.models.map(entry => ({ id: entry.id, name: entry.name ?? entry.id })),
        default: upstream.defaultModel ?? upstream.models[0]!.id,
      }
    },
  }
}

export type SpeechService = ReturnType<typeof createSpeechService>
