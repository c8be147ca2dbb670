/**
 * A package price in the reader's locale. The server sends each price formatted in
 * en-US (`$3.00`, `¥2,200`, or `300 XYZ` for a code Intl does not know), so its number
 * is read back and formatted again with the currency; anything unexpected is shown as sent.
 */
export function localPrice(formatted: string, currency: string, locale: string): string {
  if (/^\d+ [A-Z]+$/.test(formatted))
    return formatted
  const amount = Number(formatted.replace(/[^\d.]/g, ''))
  if (!Number.isFinite(amount))
    return formatted
  try {
    return new Intl.NumberFormat(locale, { style: 'currency', currency: currency.toUpperCase(), currencyDisplay: 'narrowSymbol' }).format(amount)
  }
  catch {
    return formatted
  }
}

/** `USD · US Dollar` (`USD · 美元`), or the code alone where the browser has no name for it. */
export function currencyName(currency: string, locale: string): string {
  const code = currency.toUpperCase()
  try {
    const name = new Intl.DisplayNames(locale, { type: 'currency' }).of(code)
    return name && name !== code ? `${code} · ${name}` : code
  }
  catch {
    return code
  }
}

const CURRENCY_KEY = 'airi.currency'

/** The currency the person picked last on this device (kept across the trip to Stripe). */
export const rememberedCurrency = (): string | null => localStorage.getItem(CURRENCY_KEY)
export const rememberCurrency = (currency: string): void => localStorage.setItem(CURRENCY_KEY, currency)
