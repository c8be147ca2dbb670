import { describe, expect, it } from 'vitest'

import { capFor, flatPrice, priceOf, requestedCap, reservationFor, tokenCost, usageCost, withCap, type CallBounds, type TokenPrice } from './reservation.ts'

/** Separate prices per 1 000 tokens, as the flat rule's shape carries them. */
const per1k = (input: number, output: number): TokenPrice => ({ ...flatPrice(input), output })
const perToken = per1k(1000, 1000)
const bounds = (over: Partial<CallBounds> = {}): CallBounds => ({ promptTokens: 13, cap: 20, choices: 1, price: perToken, flat: 1, floor: 1, ...over })

describe('the reservation rule', () => {
  it('wants the prompt and the whole cap, and needs the prompt and 16 tokens (or the cap when smaller), never below the flat price', () => {
    expect(reservationFor(bounds())).toEqual({ wanted: 33, least: 29 })
    expect(reservationFor(bounds({ cap: 5 }))).toEqual({ wanted: 18, least: 18 })
    expect(reservationFor(bounds({ choices: 3 }))).toEqual({ wanted: 13 + 60, least: 13 + 48 })
    // The defaults: 1 Flux per 1 000 tokens, a short prompt and 4 096 tokens of output.
    expect(reservationFor(bounds({ promptTokens: 9, cap: 4096, price: per1k(1, 1) }))).toEqual({ wanted: 5, least: 1 })
    expect(reservationFor(bounds({ promptTokens: 9, cap: 4096, price: per1k(1, 1), flat: 7, floor: 7 }))).toEqual({ wanted: 7, least: 7 })
  })

  it('sends the largest cap a reservation pays for, never more than asked, per choice', () => {
    expect(capFor(33, bounds())).toBe(20)
    expect(capFor(29, bounds())).toBe(16)
    expect(capFor(1000, bounds())).toBe(20)
    expect(capFor(13 + 3 * 16 + 2, bounds({ choices: 3 }))).toBe(16)
    // Separate prices: 2 Flux per 1k of prompt, 6 per 1k of output; 1 Flux pays (1000 − 13 × 2) / 6 = 162 tokens.
    expect(capFor(1, bounds({ cap: 4096, price: per1k(2, 6) }))).toBe(162)
    for (const reserved of [1, 2, 3, 7, 50]) {
      const price = per1k(0.1, 0.3)
      const cap = capFor(reserved, bounds({ cap: 1_000_000, price }))
      expect(tokenCost(price, 13, cap)).toBeLessThanOrEqual(reserved)
      expect(tokenCost(price, 13, cap + 1)).toBeGreaterThan(reserved)
    }
  })

  it('prices decimal rates without a float hair costing a Flux more', () => {
    // 0.1 × 30 is 3.0000000000000004 in floating point.
    expect(tokenCost(per1k(0.1, 0.1), 15_000, 15_000)).toBe(3)
    expect(usageCost(per1k(1, 1), { prompt_tokens: 1200, completion_tokens: 850 })).toBe(3)
    expect(usageCost(per1k(1, 1), { prompt_tokens: 3, completion_tokens: 4 })).toBe(1)
    expect(usageCost(per1k(1, 2), { total_tokens: 1500 })).toBe(3)
  })

  it('prices an alias per million tokens, cached prompt tokens apart, at least its minFlux', () => {
    const price = priceOf({ inputPer1M: 2.5, outputPer1M: 10, cachedInputPer1M: 1.25 }, 1)
    // 100 000 fresh × 2.5 + 100 000 cached × 1.25 + 50 000 × 10, per million: 0.25 + 0.125 + 0.5 → 1.
    expect(usageCost(price, { prompt_tokens: 200_000, completion_tokens: 50_000, prompt_tokens_details: { cached_tokens: 100_000 } })).toBe(1)
    expect(tokenCost(price, 1_000_000, 1_000_000, 400_000)).toBe(Math.ceil(1.5 + 0.5 + 10))
    // Without a cached price, cached tokens cost the input price.
    expect(tokenCost(priceOf({ inputPer1M: 3, outputPer1M: 0 }, 1), 1_000_000, 0, 1_000_000)).toBe(3)
    expect(usageCost(priceOf({ inputPer1M: 0, outputPer1M: 0, minFlux: 0 }, 1), { prompt_tokens: 10, completion_tokens: 10 })).toBe(0)
    expect(usageCost(priceOf({ inputPer1M: 1, outputPer1M: 1, minFlux: 7 }, 1), { prompt_tokens: 10, completion_tokens: 10 })).toBe(7)
    // The flat rule does not tell cached tokens apart.
    expect(usageCost(flatPrice(1), { prompt_tokens: 1500, completion_tokens: 0, prompt_tokens_details: { cached_tokens: 1500 } })).toBe(2)
  })

  it('works billing.md\'s example: 5 reserved, 3 charged, 5 without the cached price', () => {
    const pricing = { inputPer1M: 300, outputPer1M: 1200, cachedInputPer1M: 30 }
    const usage = { prompt_tokens: 12_000, completion_tokens: 900, prompt_tokens_details: { cached_tokens: 8000 } }
    const exampleBounds = bounds({ promptTokens: 12_010, cap: 1000, price: priceOf(pricing, 1) })
    expect(reservationFor(exampleBounds).wanted).toBe(5)
    expect(capFor(5, exampleBounds)).toBe(1000)
    expect(usageCost(priceOf(pricing, 1), usage)).toBe(3)
    expect(usageCost(priceOf({ inputPer1M: 300, outputPer1M: 1200 }, 1), usage)).toBe(5)
  })

  it('sizes a priced alias\'s reservation on its own floor and minimum, and a dearer cached price on the whole prompt', () => {
    // A Flux per token: 13 prompt tokens and 20 of output want 33.
    const price = priceOf({ inputPer1M: 1e6, outputPer1M: 1e6, minFlux: 40 }, 1)
    expect(reservationFor(bounds({ price, floor: 1 }))).toEqual({ wanted: 40, least: 40 })
    expect(reservationFor(bounds({ price: priceOf({ inputPer1M: 1e6, outputPer1M: 1e6 }, 1), floor: 60 }))).toEqual({ wanted: 60, least: 60 })
    const dearCache = priceOf({ inputPer1M: 1e6, outputPer1M: 1e6, cachedInputPer1M: 2e6 }, 1)
    expect(reservationFor(bounds({ price: dearCache }))).toEqual({ wanted: 26 + 20, least: 26 + 16 })
    expect(capFor(26 + 5, bounds({ price: dearCache }))).toBe(5)
    // Free output: the reservation pays for any cap.
    expect(capFor(1, bounds({ cap: 4096, price: priceOf({ inputPer1M: 1, outputPer1M: 0 }, 1) }))).toBe(4096)
  })

  it('reads the request\'s cap and writes the one sent in the field the client used', () => {
    expect(requestedCap({ model: 'm', messages: [] })).toBeUndefined()
    expect(requestedCap({ model: 'm', messages: [], max_tokens: null, max_completion_tokens: 300 })).toBe(300)
    expect(requestedCap({ model: 'm', messages: [], max_tokens: 200, max_completion_tokens: 300 })).toBe(200)
    expect(withCap({ model: 'm', messages: [] }, 16)).toMatchObject({ max_tokens: 16 })
    expect(withCap({ model: 'm', messages: [], max_completion_tokens: 300 }, 16)).toEqual({ model: 'm', messages: [], max_completion_tokens: 16 })
    expect(withCap({ model: 'm', messages: [], max_tokens: 200, max_completion_tokens: 300 }, 16)).toMatchObject({ max_tokens: 16, max_completion_tokens: 16 })
  })
})
