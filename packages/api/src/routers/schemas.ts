import { z } from 'zod'

/** Input pieces several routers share. */

/**
 * U+0000 (Postgres text cannot hold it) or a UTF-16 surrogate without its pair
 * (it would be stored as U+FFFD, or refused inside JSONB).
 */
const UNSAFE_CHARACTER = /\0|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

export const unsafeTextMessage = 'Must not contain NUL characters or unpaired UTF-16 surrogates'
const unsafeKeyMessage = 'Keys must not contain NUL characters or unpaired UTF-16 surrogates'

export function isSafeText(value: string): boolean {
  return !UNSAFE_CHARACTER.test(value)
}

/** A string that Postgres stores exactly as sent; every text field a client sends starts here. */
export const text = () => z.string().refine(isSafeText, unsafeTextMessage)

/** A row id (ours are UUIDs; client-chosen message ids fit too). */
export const id = text().min(1).max(100)

/** How deep a JSON value given as input (a `config`, a message's `metadata`) may nest. */
const MAX_JSON_DEPTH = 32

/** What is wrong with a JSON value: its key strings and strings must be safe text, its nesting bounded. */
function checkJson(value: unknown, ctx: z.RefinementCtx, path: PropertyKey[], depth: number): void {
  if (typeof value === 'string') {
    if (!isSafeText(value))
      ctx.addIssue({ code: 'custom', path, message: unsafeTextMessage })
    return
  }
  if (typeof value !== 'object' || value === null)
    return
  if (depth > MAX_JSON_DEPTH) {
    ctx.addIssue({ code: 'custom', path, message: `Must be nested at most ${MAX_JSON_DEPTH} levels deep` })
    return
  }
  for (const [key, child] of Object.entries(value)) {
    if (!isSafeText(key))
      ctx.addIssue({ code: 'custom', path: [...path, key], message: unsafeKeyMessage })
    checkJson(child, ctx, [...path, Array.isArray(value) ? Number(key) : key], depth + 1)
  }
}

/**
 * A JSON object (a capability's, avatar model's or provider's `config`, a message's
 * `metadata`), at most 64 KiB as JSON. The transport has already refused reference
 * loops, `__proto__`-like keys and absurd nesting, so walking it here is bounded.
 */
export const jsonObject = z.record(z.string().min(1).max(200), z.json())
  .superRefine((value, ctx) => checkJson(value, ctx, [], 1))
  .refine(value => JSON.stringify(value).length <= 65_536, 'Must be at most 64 KiB of JSON')

/** Any JSON value, checked like `jsonObject` (e.g. an operator config value, validated further by its entry). */
export const jsonValue = z.json().superRefine((value, ctx) => checkJson(value, ctx, [], 0))
