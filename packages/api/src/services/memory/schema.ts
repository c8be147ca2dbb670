import { z } from 'zod'

import { id, text } from '../../routers/schemas.ts'

// The inputs of `memory.*`: the router validates with these, and the service's input types are inferred from them.

/** Most characters of one memory (code points, as Postgres's `char_length` counts them). */
export const MAX_MEMORY_CHARS = 2000

/** Trimmed, 1–2 000 characters. */
const content = text().trim().min(1, 'Must not be empty').refine(value => [...value].length <= MAX_MEMORY_CHARS, `Must be at most ${MAX_MEMORY_CHARS} characters`)

const importance = z.number().int().min(1).max(5)

export const memoryListInput = z.object({
  characterId: id,
  cursor: z.string().max(500).optional(),
  limit: z.number().int().min(1).max(100).default(20),
})

export const memoryAddInput = z.object({
  characterId: id,
  content,
  importance: importance.default(3),
})

export const memoryUpdateInput = z.object({
  id,
  content: content.optional(),
  importance: importance.optional(),
})

export const memoryByIdInput = z.object({ id })

export const memorySearchInput = z.object({
  characterId: id,
  query: text().max(MAX_MEMORY_CHARS),
  limit: z.number().int().min(1).max(50).default(10),
})

export const memoryCharacterInput = z.object({ characterId: id })

export const memorySetSettingsInput = z.object({
  characterId: id,
  enabled: z.boolean(),
})

export type MemoryListInput = z.input<typeof memoryListInput>
export type MemoryAddInput = z.input<typeof memoryAddInput>
export type MemoryUpdateInput = z.output<typeof memoryUpdateInput>
export type MemorySearchInput = z.input<typeof memorySearchInput>
export type MemorySetSettingsInput = z.output<typeof memorySetSettingsInput>
