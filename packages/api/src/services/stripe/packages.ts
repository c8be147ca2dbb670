import { z } from 'zod'

import { keys } from '../../adapters/keys.ts'
import type { Cache } from '../../adapters/ports.ts'
import type { Stripe, StripeGateway } from '../../adapters/stripe.ts'
import type { Logger } from '../../logger.ts'

/** How long the package list is cached; a price changed at Stripe shows up within this. */
const PRICES_CACHE_TTL_SECONDS = 5 * 60

/** A Flux package as clients show it: one active price of the Flux product. */
export interface FluxPackage {
  stripePriceId: string
  label: string
  fluxAmount: number
  /** The price's own currency (lower case, as Stripe writes it). */
  defaultCurrency: string
  /** Every currency it can be paid in, formatted: `{ usd: '$3.00', cny: '¥22.00' }`. */
  currencies: Record<string, string>
  recommended: boolean
}

/** The Flux a price sells (`metadata.fluxAmount`, a positive whole number), or undefined. */
export function fluxAmountOf(price: Stripe.Price): number | undefined {
  const raw = price.metadata?.fluxAmount?.trim() ?? ''
  if (!/^\d{1,12}$/.test(raw))
    return undefined
  const amount = Number(raw)
  return amount > 0 ? amount : undefined
}

export function productIdOf(price: Stripe.Price): string {
  return typeof price.product === 'string' ? price.product : price.product.id
}

/** The price's amount in minor units for `currency` (its own or one of its `currency_options`). */
export function unitAmountIn(price: Stripe.Price, currency: string): number | undefined {
  if (currency === price.currency)
    return price.unit_amount ?? undefined
  return price.currency_options?.[currency]?.unit_amount ?? undefined
}

/** Every currency the price has a fixed amount in, its own first. */
function amountsOf(price: Stripe.Price): Array<[currency: string, minorUnits: number]> {
  const amounts: Array<[string, number]> = []
  if (price.unit_amount != null)
    amounts.push([price.currency, price.unit_amount])
  for (const [currency, option] of Object.entries(price.currency_options ?? {})) {
    if (currency !== price.currency && option.unit_amount != null)
      amounts.push([currency, option.unit_amount])
  }
  return amounts
}

/**
 * `300, 'usd'` → `$3.00`, `2200, 'cny'` → `¥22.00`, `500, 'jpy'` → `¥500`: the
 * currency's own number of decimals, its narrow symbol, English number format.
 */
export function formatAmount(minorUnits: number, currency: string): string {
  try {
    const format = new Intl.NumberFormat('en-US', { style: 'currency', currency: currency.toUpperCase(), currencyDisplay: 'narrowSymbol' })
    const digits = format.resolvedOptions().maximumFractionDigits ?? 2
    return format.format(minorUnits / 10 ** digits)
  }
  catch {
    // A code Intl does not know: still say what it is.
    return `${minorUnits} ${currency.toUpperCase()}`
  }
}

/** A price that can be sold as a package: active, one-time, of the product, with Flux and an amount. */
function toPackage(price: Stripe.Price, productId: string): FluxPackage | undefined {
  const fluxAmount = fluxAmountOf(price)
  const amounts = amountsOf(price)
  if (!price.active || price.type !== 'one_time' || productIdOf(price) !== productId || fluxAmount === undefined || price.unit_amount == null)
    return undefined
  return {
    stripePriceId: price.id,
    label: price.nickname?.trim() || `${fluxAmount.toLocaleString('en-US')} Flux`,
    fluxAmount,
    defaultCurrency: price.currency,
    currencies: Object.fromEntries(amounts.map(([currency, minor]) => [currency, formatAmount(minor, currency)])),
    recommended: price.metadata?.recommended === 'true',
  }
}

const cachedPackages = z.object({
  productId: z.string(),
  packages: z.array(z.object({
    stripePriceId: z.string(),
    label: z.string(),
    fluxAmount: z.number(),
    defaultCurrency: z.string(),
    currencies: z.record(z.string(), z.string()),
    recommended: z.boolean(),
  })),
})

export interface PackageCatalogDeps {
  cache: Cache
  logger: Logger
}

/**
 * The package list, read from Stripe and cached for 5 minutes in
 * `cache:stripe:prices` (Stripe's data, not ours, so a plain TTL entry). The cached
 * value names its product, so changing STRIPE_FLUX_PRODUCT_ID takes effect at once.
 */
export function createPackageCatalog({ cache, logger }: PackageCatalogDeps) {
  async function readCache(productId: string): Promise<FluxPackage[] | undefined> {
    const raw = await cache.get(keys.stripePrices()).catch((error: unknown) => {
      logger.warn({ err: error }, 'price cache unavailable; asking Stripe')
      return null
    })
    if (raw == null)
      return undefined
    try {
      const parsed = cachedPackages.safeParse(JSON.parse(raw))
      return parsed.success && parsed.data.productId === productId ? parsed.data.packages : undefined
    }
    catch {
      return undefined
    }
  }

  return {
    async list(gateway: StripeGateway, productId: string): Promise<FluxPackage[]> {
      const cached = await readCache(productId)
      if (cached)
        return cached
      const prices = await gateway.listActivePrices(productId)
      const packages = prices.flatMap(price => toPackage(price, productId) ?? [])
        .sort((a, b) => a.fluxAmount - b.fluxAmount || a.stripePriceId.localeCompare(b.stripePriceId))
      await cache.set(keys.stripePrices(), JSON.stringify({ productId, packages }), PRICES_CACHE_TTL_SECONDS).catch((error: unknown) => {
        logger.warn({ err: error }, 'could not cache the package list')
      })
      return packages
    },
  }
}
