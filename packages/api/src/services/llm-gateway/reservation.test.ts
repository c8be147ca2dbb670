import { describe, expect, it } from 'vitest'

import { capFor, requestedCap, reservationFor, tokenCost, usageCost, withCap, type CallBounds } from './reservation.ts'

const perToken = { inputPer1k: 1000, outputPer1k: 1000 }
const bounds = (over: Partial<CallBounds> = {}): CallBounds => ({ promptTokens: 13, cap: 20, choices: 1, price: perToken, flat: 1, ...over })

describe('the reservation rule', () => {
  it('wants the prompt and the whole cap, and needs the prompt and 16 tokens (or the cap when smaller), never below the flat price', () => {
    expect(reservationFor(bounds())).toEqual({ wanted: 33, least: 29 })
    expect(reservationFor(bounds({ cap: 5 }))).toEqual({ wanted: 18, least: 18 })
    expect(reservationFor(bounds({ choices: 3 }))).toEqual({ wanted: 13 + 60, least: 13 + 48 })
    // The defaults: 1 Flux per 1 000 tokens, a short prompt and 4 096 tokens of output.
    expect(reservationFor(bounds({ promptTokens: 9, cap: 4096, price: { inputPer1k: 1, outputPer1k: 1 } }))).toEqual({ wanted: 5, least: 1 })
    expect(reservationFor(bounds({ promptTokens: 9, cap: 4096, price: { inputPer1k: 1, outputPer1k: 1 }, flat: 7 }))).toEqual({ wanted: 7, least: 7 })
  })

  it('sends the largest cap a reservation pays for, never more than asked, per choice', () => {
    expect(capFor(33, bounds())).toBe(20)
    expect(capFor(29, bounds())).toBe(16)
    expect(capFor(1000, bounds())).toBe(20)
    expect(capFor(13 + 3 * 16 + 2, bounds({ choices: 3 }))).toBe(16)
    // Separate prices: 2 Flux per 1k of prompt, 6 per 1k of output; 1 Flux pays (1000 − 13 × 2) / 6 = 162 tokens.
    expect(capFor(1, bounds({ cap: 4096, price: { inputPer1k: 2, outputPer1k: 6 } }))).toBe(162)
    for (const reserved of [1, 2, 3, 7, 50]) {
      const price = { inputPer1k: 0.1, outputPer1k: 0.3 }
      const cap = capFor(reserved, bounds({ cap: 1_000_000, price }))
      expect(tokenCost(price, 13, cap)).toBeLessThanOrEqual(reserved)
      expect(tokenCost(price, 13, cap + 1)).toBeGreaterThan(reserved)
    }
  })

  it('prices decimal rates without a float hair costing a Flux more', () => {
    // 0.1 × 30 is 3.0000000000000004 in floating point.
    expect(tokenCost({ inputPer1k: 0.1, outputPer1k: 0.1 }, 15_000, 15_000)).toBe(3)
    expect(usageCost({ inputPer1k: 1, outputPer1k: 1 }, { prompt_tokens: 1200, completion_tokens: 850 })).toBe(3)
    expect(usageCost({ inputPer1k: 1, outputPer1k: 1 }, { prompt_tokens: 3, completion_tokens: 4 })).toBe(1)
    expect(usageCost({ inputPer1k: 1, outputPer1k: 2 }, { total_tokens: 1500 })).toBe(3)
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
