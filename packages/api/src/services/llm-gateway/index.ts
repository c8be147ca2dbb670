// The LLM gateway: OpenAI-compatible completions routed over upstream keys, reserved and
// billed in Flux, each call written to the request log.
export { createLlmGateway, type CompletionResult, type LlmGateway, type ReservedCompletion } from './gateway.ts'
export type { Settlement } from './settlement.ts'

export { createSseJsonReader } from './usage.ts'
export { createLlmUsageReads, groupKey, llmCallsPage, llmCallsSummary, type LlmUsageReads, type UsageGroup } from './usage-reads.ts'
