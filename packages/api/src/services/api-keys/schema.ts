import { z } from 'zod'

import { id, text } from '../../routers/schemas.ts'

/** What a key may be used for: one gateway each (SPEC §4.17). */
const API_KEY_SCOPES = ['llm', 'speech', 'transcription'] as const
export type ApiKeyScope = typeof API_KEY_SCOPES[number]

/** A budget above this is no budget at all (and stays a safe integer once summed). */
const MAX_BUDGET_FLUX = 1_000_000_000

export const apiKeyCreateInput = z.object({
  name: text().trim().min(1).max(100),
  scopes: z.array(z.enum(API_KEY_SCOPES)).min(1).max(API_KEY_SCOPES.length)
    .refine(scopes => new Set(scopes).size === scopes.length, 'each scope at most once'),
  /** Holds across every scope: chat calls reserve against it, speech and transcription hold their units against it. */
  budget: z.object({
    flux: z.number().int().min(1).max(MAX_BUDGET_FLUX),
    period: z.enum(['day', 'month', 'total']),
  }).optional(),
  rateLimitPerMinute: z.number().int().min(1).max(10_000).optional(),
  /** Must lie in the future (checked against the server's clock). */
  expiresAt: z.date().optional(),
})

export const apiKeyByIdInput = z.object({ id })

export type ApiKeyCreateInput = z.infer<typeof apiKeyCreateInput>
