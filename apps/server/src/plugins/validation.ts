import type { z } from 'zod'

import { ApiError } from '@airi/api'

/**
 * `value` (a body or query; absent reads as `{}`) validated with `schema`, or a 400
 * `BAD_REQUEST` naming the first bad field (`param`, null for the whole input, as
 * OpenAI's clients expect) and every one (`details.fieldErrors`, the whole input as `body`).
 */
export function parseOrBadRequest<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  const parsed = schema.safeParse(value ?? {})
  if (parsed.success)
    return parsed.data
  const fieldErrors: Record<string, string[]> = {}
  for (const issue of parsed.error.issues)
    (fieldErrors[issue.path.join('.') || 'body'] ??= []).push(issue.message)
  const first = parsed.error.issues[0]!
  const param = first.path.join('.') || null
  throw new ApiError(400, 'BAD_REQUEST', `${param ?? 'body'}: ${first.message}`, { param, fieldErrors })
}
