import type { AliasView, UpstreamList } from './types.ts'

const UNITS: Record<UpstreamList['flatPrice']['key'], string> = {
  FLUX_PER_1K_TOKENS: 'per 1K tokens',
  FLUX_PER_1K_CHARS_TTS: 'per 1K characters',
  FLUX_PER_MINUTE_STT: 'per minute of audio',
}

/** The flat rate in words, e.g. `2 Flux per 1K characters`. */
export const flatPriceText = (flat: UpstreamList['flatPrice']): string => `${flat.value} Flux ${UNITS[flat.key]}`

/** What a call to the alias costs: its own per-token prices (LLM), else the flat rate. */
export function aliasPriceText(alias: AliasView, flat: UpstreamList['flatPrice']): string {
  const pricing = alias.pricing
  if (!pricing)
    return flat.key === 'FLUX_PER_1K_TOKENS' ? `flat: ${flatPriceText(flat)}` : flatPriceText(flat)
  const cached = pricing.cachedInputPer1M === undefined ? '' : `, cached input ${pricing.cachedInputPer1M}`
  return `input ${pricing.inputPer1M}${cached}, output ${pricing.outputPer1M} Flux per 1M tokens`
}
