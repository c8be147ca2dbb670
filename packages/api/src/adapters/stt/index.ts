import { openAiCompatibleStt } from './openai-compatible.ts'
import type { SttAdapter } from './types.ts'

export * from './types.ts'

/**
 * The transcription adapters by the name `STT_UPSTREAMS` gives them. A new vendor
 * is a new `SttAdapter` here and its name in the entry's `adapter` enum.
 */
export const sttAdapters = {
  'openai-compatible': openAiCompatibleStt,
} as const satisfies Record<string, SttAdapter>
