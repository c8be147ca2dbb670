import { randomUUID } from 'node:crypto'

import { sttAdapters, type TranscriptSegment } from '../../adapters/stt/index.ts'
import type { AtomicCounters } from '../../adapters/ports.ts'
import type { ConfigValue } from '../../config/entries.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import { recordFailure, tracer } from '../../tracing.ts'
import type { AnalyticsService } from '../analytics.ts'
import { createMeterHolds, type createFluxMeterFactory, type MeterKey, type MeterRuntime } from '../billing/index.ts'
import type { ConfigService } from '../config.ts'
import type { KeyVault } from '../key-vault.ts'
import { resolveAlias } from '../model-alias.ts'
import { withHttpKeys, type TimedKeySet, type UpstreamKeyPool } from '../upstream-keys.ts'
import { audioDurationMs } from './audio/index.ts'
import type { TranscriptionRequest } from './schema.ts'

export { transcriptionFieldsSchema, type TranscriptionRequest } from './schema.ts'
export { createPcm16Resampler, pcm16DurationMs, type Pcm16Resampler } from './resample.ts'

type SttModel = ConfigValue<'STT_UPSTREAMS'>['models'][string]

export interface TranscriptionServiceDeps {
  config: ConfigService
  counters: AtomicCounters
  createFluxMeter: ReturnType<typeof createFluxMeterFactory>
  /** The LLM router's vault: transcription keys are sealed the same way, under their alias. */
  keyVault: KeyVault | undefined
  /** The process's one upstream key pool (rotation and cooldowns shared with every upstream caller). */
  keyPool: UpstreamKeyPool
  logger: Logger
  metrics: Pick<Metrics, 'sttSeconds' | 'sttPreflightRejections'>
  analytics: Pick<AnalyticsService, 'voiceInputUsed'>
}

/** Bound of one transcription call (every key tried) when its entry names none. */
const DEFAULT_TIMEOUT_MS = 120_000

export interface TranscriptionResult {
  text: string
  /** The language the upstream detected, else the one the client named. */
  language?: string
  segments?: TranscriptSegment[]
  /** The audio's length as we read it from the file: what was billed. */
  durationMs: number
  /** Whole Flux this call settled and debited (the rest stays as meter debt). */
  flux: number
}

/** The `stt` meter's runtime: `FLUX_PER_MINUTE_STT` turned into milliseconds per Flux, read on every call. */
export function sttMeterRuntime(config: ConfigService): () => Promise<MeterRuntime> {
  return async () => ({
    unitsPerFlux: 60_000 / await config.get('FLUX_PER_MINUTE_STT'),
    debtTtlSeconds: await config.get('FLUX_METER_DEBT_TTL_SECONDS'),
  })
}

/**
 * Speech-to-text over REST (SPEC §4.13): a file transcribed by the upstream an
 * alias names, billed by the millisecond of audio on the `stt` meter. The length
 * is read from the file itself, never taken from the client or the upstream.
 */
export function createTranscriptionService({ config, counters, createFluxMeter, keyVault, keyPool, logger, metrics, analytics }: TranscriptionServiceDeps) {
  const resolveRuntime = sttMeterRuntime(config)
  const meter = createFluxMeter({ name: 'stt', resolveRuntime })
  const holds = createMeterHolds({ counters, meter, resolveRuntime, logger })

  const keySetOf = (alias: string, entry: SttModel): TimedKeySet =>
    ({ poolId: `${alias}@${entry.baseUrl}`, alias, keys: entry.keys, timeoutMs: entry.timeoutMs ?? DEFAULT_TIMEOUT_MS })

  /** `STT_UPSTREAMS`, or 503 `STT_NOT_CONFIGURED` while the operator has not set it. */
  async function upstreams(): Promise<ConfigValue<'STT_UPSTREAMS'>> {
    const value = await config.getOptional('STT_UPSTREAMS')
    if (!value)
      throw new ApiError(503, 'STT_NOT_CONFIGURED', 'Transcription is not available on this server yet: its operator has not set up a speech-to-text upstream', { key: 'STT_UPSTREAMS' })
    return value
  }

  /** Holds the call's milliseconds against the balance (and the key's budget), or 402 when they are not covered (counted when the balance is short). */
  async function hold(userId: string, durationMs: number, apiKey: MeterKey | undefined) {
    try {
      return await holds.acquire(userId, durationMs, apiKey)
    }
    catch (error) {
      if (error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX')
        metrics.sttPreflightRejections.add(1, { 'airi.stt.transport': 'rest' })
      throw error
    }
  }

  /** Bills a transcript that came back; a failed debit is logged and its units stay owed on the meter. */
  async function bill(userId: string, apiKeyId: string | undefined, alias: string, durationMs: number, started: number): Promise<number> {
    try {
      const usage = { kind: 'stt', model: alias, status: 'completed', audioMs: durationMs, durationMs: performance.now() - started } as const
      const { settledFlux } = await meter.accumulate({ userId, units: durationMs, callId: randomUUID(), usage, apiKeyId })
      metrics.sttSeconds.add(durationMs / 1000, { 'airi.stt.transport': 'rest' })
      return settledFlux
    }
    catch (error) {
      // The transcript exists and the user waited for it.
      logger.error({ err: error, userId, model: alias, durationMs }, 'could not bill a transcription')
      return 0
    }
  }

  return {
    /** The `stt` meter, for callers that bill transcription elsewhere (the streaming socket). */
    meter,

    /** Throws 503 `STT_NOT_CONFIGURED` unless `STT_UPSTREAMS` is set; lets a route refuse before reading an upload. */
    async assertConfigured(): Promise<void> {
      await upstreams()
    },

    /**
     * Transcribes `request.file` for `userId`. Refuses before any upstream call what
     * cannot be served or paid for (400 UNSUPPORTED_AUDIO, 402, 404, 503); bills the
     * audio's milliseconds only after the upstream answered, so a failed call costs nothing.
     * A call made with a personal API key is billed to that key (and kept within its
     * budget: 402 KEY_BUDGET_EXCEEDED before the upstream call).
     */
    async transcribe(userId: string, request: TranscriptionRequest, clientSignal: AbortSignal, apiKey?: MeterKey): Promise<TranscriptionResult> {
      const started = performance.now()
      const { alias, entry } = resolveAlias(await upstreams(), request.model, 'transcription model')
      const durationMs = await audioDurationMs(request.file.data, { mimeType: request.file.type, filename: request.file.name })
      if (!keyVault)
        throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })

      const adapter = sttAdapters[entry.adapter]
      const held = await hold(userId, durationMs, apiKey)
      try {
        // One span for the upstream call, key rotation and fallback included.
        const transcript = await tracer.startActiveSpan(`stt ${alias}`, { attributes: { 'airi.stt.model': alias, 'airi.stt.adapter': entry.adapter, 'airi.stt.duration_ms': durationMs } }, async (span) => {
          try {
            return await withHttpKeys(keyPool, logger, 'transcription', keySetOf(alias, entry), clientSignal, (key, signal) => adapter.transcribe({
              baseUrl: entry.baseUrl,
              model: entry.model,
              key,
              file: request.file,
              language: request.language,
              prompt: request.prompt,
              temperature: request.temperature,
              // Only verbose_json carries the language and segments; plain json is what every upstream serves.
              responseFormat: request.response_format === 'verbose_json' ? 'verbose_json' : 'json',
              signal,
            }))
          }
          catch (error) {
            recordFailure(span, error)
            throw error
          }
          finally {
            span.end()
          }
        })

        await held.settling().catch((error: unknown) => {
          logger.warn({ err: error, userId }, 'could not hold the settling Flux of a transcription')
        })
        const flux = await bill(userId, apiKey?.keyId, alias, durationMs, started)
        await analytics.voiceInputUsed(userId, 'rest')
        const language = transcript.language ?? request.language
        return { text: transcript.text, ...(language ? { language } : {}), ...(transcript.segments ? { segments: transcript.segments } : {}), durationMs, flux }
      }
      finally {
        await held.release()
      }
    },
  }
}

export type TranscriptionService = ReturnType<typeof createTranscriptionService>
