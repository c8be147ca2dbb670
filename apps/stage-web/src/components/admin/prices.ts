import { i18n } from '../../i18n.ts'
import type { AliasView, UpstreamList } from './types.ts'

const { t, n } = i18n.global

/** The flat rate in words, e.g. `2 Flux per 1K characters`. */
export const flatPriceText = (flat: UpstreamList['flatPrice']): string => t('admin.prices.flatRate', { value: n(flat.value), unit: t(`admin.prices.units.${flat.key}`) })

/** What a call to the alias costs: its own per-token prices (LLM), else the flat rate. */
export function aliasPriceText(alias: AliasView, flat: UpstreamList['flatPrice']): string {
  const pricing = alias.pricing
  if (!pricing)
    return flat.key === 'FLUX_PER_1K_TOKENS' ? t('admin.prices.flat', { price: flatPriceText(flat) }) : flatPriceText(flat)
  const [input, output] = [n(pricing.inputPer1M), n(pricing.outputPer1M)]
  return pricing.cachedInputPer1M === undefined
    ? t('admin.prices.perToken', { input, output })
    : t('admin.prices.perTokenCached', { input, output, cached: n(pricing.cachedInputPer1M) })
}
