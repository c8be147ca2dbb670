import { z } from 'zod'

/** Every kind of metered call `usage.calls` lists. */
const USAGE_KINDS = ['llm', 'reply', 'embedding', 'memory', 'tts', 'tts-stream', 'stt', 'stt-stream'] as const

export const usageCallsInput = z.object({
  cursor: z.string().min(1).max(200).nullish(),
  limit: z.number().int().min(1).max(100).default(50),
  kind: z.enum(USAGE_KINDS).optional(),
})

/** A UTC day, `YYYY-MM-DD`; `from` and `to` are both included. */
export const usageSummaryInput = z.object({
  from: z.iso.date(),
  to: z.iso.date(),
  groupBy: z.enum(['day', 'model']),
})

export type UsageKind = typeof USAGE_KINDS[number]
export type UsageCallsInput = z.input<typeof usageCallsInput>
export type UsageSummaryInput = z.infer<typeof usageSummaryInput>
