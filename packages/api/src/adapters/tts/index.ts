import { azureTts } from './azure.ts'
import { openAiCompatibleTts } from './openai-compatible.ts'
import type { TtsAdapter } from './types.ts'

export { fetchStreamingVoices, httpOrigin } from './streaming-catalogue.ts'
export * from './types.ts'

/**
 * The speech adapters by the name `TTS_UPSTREAMS` gives them. A new vendor is a
 * new `TtsAdapter` here and its name in the entry's `adapter` enum.
 */
export const ttsAdapters = {
  'openai-compatible': openAiCompatibleTts,
  'azure': azureTts,
} as const satisfies Record<string, TtsAdapter>

