// Usage: one row per metered call (the LLM gateway's request log, and `metered_usage`
// for speech, written by the Flux meters through `createUsageLog`), listed and summed.
export { createUsageLog } from './recorder.ts'
export { usageCallsInput, usageSummaryInput } from './schema.ts'
export { createUsageService, type UsageCall, type UsageService } from './service.ts'
