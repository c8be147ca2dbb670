import { TextTally, type Usage } from './usage.ts'

/** The OpenAI embeddings body, validated by the transport (docs/gateway.md#embeddings); other fields pass through. */
export interface EmbeddingsBody {
  model: string
  /** One text, or several embedded in one call (token arrays are not taken). */
  input: string | string[]
  encoding_format?: 'float' | 'base64' | null
  dimensions?: number | null
  [field: string]: unknown
}

/**
 * The input as the reservation counts it: every text, one after another. No
 * chat framing (`messages: 0`), so the count is the texts and the reply priming
 * the counter always adds, a few tokens over at most.
 */
export function inputOf(body: EmbeddingsBody): { tally: TextTally, messages: number, count: number } {
  const texts = typeof body.input === 'string' ? [body.input] : body.input
  const tally = new TextTally('\n')
  for (const text of texts)
    tally.add(text)
  return { tally, messages: 0, count: texts.length }
}

const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0

/**
 * Reads an embeddings answer: one vector per input, else it is refused (and the
 * call refunded); billed on `usage.prompt_tokens` (or `total_tokens`, which is the
 * same for embeddings) as input tokens, nothing generated.
 */
export function embeddingsAnswer(inputs: number) {
  return (payload: unknown): { usage: Usage | undefined, completion: TextTally } => {
    const { data, usage } = (payload ?? {}) as { data?: unknown, usage?: { prompt_tokens?: unknown, total_tokens?: unknown } | null }
    if (!Array.isArray(data) || data.length !== inputs)
      throw new Error(`expected ${inputs} embeddings, got ${Array.isArray(data) ? data.length : 'none'}`)
    const { prompt_tokens: prompt, total_tokens: total } = usage ?? {}
    const tokens = isCount(prompt) ? prompt : isCount(total) ? total : undefined
    return {
      usage: tokens === undefined ? undefined : { prompt_tokens: tokens, completion_tokens: 0, total_tokens: tokens },
      completion: new TextTally(),
    }
  }
}
