import type { ConfigValue } from '../../config/entries.ts'
import type { ChatCompletionBody } from './router.ts'
import { tokensOf, type Usage } from './usage.ts'

type AliasPricing = NonNullable<ConfigValue<'LLM_ROUTER_CONFIG'>['models'][string]['pricing']>

/**
 * Flux per `per` tokens of prompt and of output: an alias's `pricing` (per
 * million), else the flat rule, FLUX_PER_1K_TOKENS for both (per thousand).
 */
export interface TokenPrice {
  input: number
  output: number
  /** Cached prompt tokens, priced apart; undefined under the flat rule, which does not tell them apart. */
  cachedInput?: number
  per: number
  /** What a call priced on tokens costs at least. */
  minFlux: number
}

/** The flat rule: FLUX_PER_1K_TOKENS on every token, at least 1 Flux. */
export function flatPrice(per1k: number): TokenPrice {
  return { input: per1k, output: per1k, per: 1000, minFlux: 1 }
}

/** An alias's own price (SPEC §4.5), or the flat rule when it has none. */
export function priceOf(pricing: AliasPricing | undefined, per1k: number): TokenPrice {
  if (!pricing)
    return flatPrice(per1k)
  const { inputPer1M, outputPer1M, cachedInputPer1M, minFlux } = pricing
  return { input: inputPer1M, output: outputPer1M, cachedInput: cachedInputPer1M ?? inputPer1M, per: 1_000_000, minFlux: minFlux ?? 1 }
}

/** The fewest output tokens (per choice) worth calling an upstream for: a balance that cannot pay them is a 402. */
const MIN_OUTPUT_TOKENS = 16

// Products of decimal prices (0.1 × 30) land a hair above the whole number they mean.
const EPSILON = 1e-9

/** Flux for `prompt` tokens (`cached` of them cached) and `completion` tokens, rounded up. */
export function tokenCost(price: TokenPrice, prompt: number, completion: number, cached = 0): number {
  // Under the flat rule cached tokens are prompt tokens like any other.
  const apart = price.cachedInput === undefined ? 0 : Math.min(cached, prompt)
  const units = (prompt - apart) * price.input + apart * (price.cachedInput ?? 0) + completion * price.output
  return Math.ceil(units / price.per - EPSILON)
}

/** What a call's usage costs, at least the price's `minFlux`. Usage with only a total is priced as output. */
export function usageCost(price: TokenPrice, usage: Usage): number {
  const { prompt, completion, cached, total } = tokensOf(usage)
  const cost = prompt !== null && completion !== null ? tokenCost(price, prompt, completion, cached ?? 0) : tokenCost(price, 0, total ?? 0)
  return Math.max(price.minFlux, cost)
}

/** A prompt the reservation counts may turn out cached: it is priced at the dearer of the two rates. */
function promptRate(price: TokenPrice): number {
  return Math.max(price.input, price.cachedInput ?? price.input)
}

/** The most `prompt` and `completion` tokens may cost, whichever part of the prompt turns out cached. */
function boundCost(price: TokenPrice, prompt: number, completion: number): number {
  return Math.ceil((prompt * promptRate(price) + completion * price.output) / price.per - EPSILON)
}

/** What one call may cost, as far as the request decides it. */
export interface CallBounds {
  /** Our count of the prompt. */
  promptTokens: number
  /** Output tokens per choice: the request's `max_completion_tokens`/`max_tokens`, else the alias's `maxOutputTokens`. */
  cap: number
  /** `n`: every choice may generate up to `cap`. */
  choices: number
  price: TokenPrice
  /** FLUX_PER_REQUEST: the price of a call whose tokens could not be counted. */
  flat: number
  /** No reservation is smaller: the alias's `pricing.reserve`, else FLUX_PER_REQUEST. */
  floor: number
}

/** The request's own output cap (the smaller of the two fields when both are set). */
export function requestedCap(body: ChatCompletionBody): number | undefined {
  const caps = [body.max_tokens, body.max_completion_tokens].filter((value): value is number => typeof value === 'number')
  return caps.length > 0 ? Math.min(...caps) : undefined
}

/**
 * The reservation a call wants (its prompt and its whole output cap) and the
 * least it may go ahead with (its prompt and MIN_OUTPUT_TOKENS, or its own cap
 * when that is smaller); both at least the floor and the price's `minFlux`.
 */
export function reservationFor({ promptTokens, cap, choices, price, floor }: CallBounds): { wanted: number, least: number } {
  const minimum = Math.max(floor, price.minFlux)
  return {
    wanted: Math.max(minimum, boundCost(price, promptTokens, cap * choices)),
    least: Math.max(minimum, boundCost(price, promptTokens, Math.min(cap, MIN_OUTPUT_TOKENS) * choices)),
  }
}

/** The output cap per choice that `reserved` Flux pays for, at most the call's own cap. */
export function capFor(reserved: number, { promptTokens, cap, choices, price }: CallBounds): number {
  // Free output: any cap is paid for.
  if (price.output === 0)
    return cap
  const affordable = (reserved * price.per - promptTokens * promptRate(price)) / price.output
  let tokens = Math.max(0, Math.min(cap, Math.floor(affordable / choices + EPSILON)))
  while (tokens > 0 && boundCost(price, promptTokens, tokens * choices) > reserved)
    tokens--
  return tokens
}

/** The request as sent upstream: its output cap set to what the reservation pays for, in the field the client used. */
export function withCap(body: ChatCompletionBody, cap: number): ChatCompletionBody {
  const capped: ChatCompletionBody = { ...body }
  if (body.max_completion_tokens != null)
    capped.max_completion_tokens = cap
  // `max_tokens` is the field every OpenAI-compatible upstream knows.
  if (body.max_tokens != null || body.max_completion_tokens == null)
    capped.max_tokens = cap
  return capped
}
