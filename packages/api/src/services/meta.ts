import type { ConfigKey } from '../config/entries.ts'
import type { ConfigService } from './config.ts'

export interface ServiceInfo {
  service: string
  version: string
}

/** Which parts the operator has set up, so clients offer only those (instead of probing a route for its 503). */
const FEATURE_ENTRIES = {
  chat: 'LLM_ROUTER_CONFIG',
  speech: 'TTS_UPSTREAMS',
  streamingSpeech: 'STREAMING_TTS_UPSTREAM',
  transcription: 'STT_UPSTREAMS',
  streamingTranscription: 'STREAMING_STT_UPSTREAM',
  topUps: 'STRIPE_FLUX_PRODUCT_ID',
} as const satisfies Record<string, ConfigKey>

export type Features = Record<keyof typeof FEATURE_ENTRIES, boolean>

export function createMetaService(info: ServiceInfo, config: Pick<ConfigService, 'getOptional'>) {
  return {
    info: (): ServiceInfo => ({ ...info }),
    async features(): Promise<Features> {
      const entries = Object.entries(FEATURE_ENTRIES) as Array<[keyof Features, ConfigKey]>
      const set = await Promise.all(entries.map(async ([, key]) => await config.getOptional(key) !== undefined))
      return Object.fromEntries(entries.map(([name], index) => [name, set[index]!])) as Features
    },
  }
}
