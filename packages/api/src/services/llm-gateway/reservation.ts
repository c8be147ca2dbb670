import type { ChatCompletionBody } from './router.ts'
import { tokensOf, type Usage } from './usage.ts'

/**
 * Flux per 1 000 tokens of prompt and of output. Today both are
 * FLUX_PER_1K_TOKENS; a per-model price (SPEC §4.5, later) plugs in here.
 */
export interface TokenPrice {
  inputPer1k: number
  outputPer1k: number
}

/** The fewest output tokens (per choice) worth calling an upstream for: a balance that cannot pay them is a 402. */
const MIN_OUTPUT_TOKENS = 16

// Products of decimal prices (0.1 × 30) land a hair above the whole number they mean.
const EPSILON = 1e-9

/** Flux for `prompt` and `completion` tokens, rounded up. */
export function tokenCost(price: TokenPrice, prompt: number, completion: number): number {
  return Math.ceil((prompt * price.inputPer1k + completion * price.outputPer1k) / 1000 - EPSILON)
}

/** What a call's usage costs, at least 1 Flux. Usage with only a total is priced as output. */
export function usageCost(price: TokenPrice, usage: Usage): number {
  const { prompt, completion, total } = tokensOf(usage)
  const cost = prompt !== null && completion !== null ? tokenCost(price, prompt, completion) : tokenCost(price, 0, total ?? 0)
  return Math.max(1, cost)
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
  /** FLUX_PER_REQUEST: no reservation is smaller. */
  flat: number
}

/** The request's own output cap (the smaller of the two fields when both are set). */
export function requestedCap(body: ChatCompletionBody): number | undefined {
  const caps = [body.max_tokens, body.max_completion_tokens].filter((value): value is number => typeof value === 'number')
  return caps.length > 0 ? Math.min(...caps) : undefined
}

/**
 * The reservation a call wants (its prompt and its whole output cap) and the
 * least it may go ahead with (its prompt and MIN_OUTPUT_TOKENS, or its own
 * cap when that is smaller); both at least FLUX_PER_REQUEST.
 */
export function reservationFor({ promptTokens, cap, choices, price, flat }: CallBounds): { wanted: number, least: number } {
  return {
    wanted: Math.max(flat, tokenCost(price, promptTokens, cap * choices)),
    least: Math.max(flat, tokenCost(price, promptTokens, Math.min(cap, MIN_OUTPUT_TOKENS) * choices)),
  }
}

/** The output cap per choice that `reserved` Flux pays for, at most the call's own cap. */
export function capFor(reserved: number, { promptTokens, cap, choices, price }: CallBounds): number {
  const affordable = (reserved * 1000 - promptTokens * price.inputPer1k) / price.outputPer1k
  let tokens = Math.max(0, Math.min(cap, Math.floor(affordable / choices + EPSILON)))
  while (tokens > 0 && tokenCost(price, promptTokens, tokens * choices) > reserved)
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
