import { toAiriError, type ChatEvent } from '@airi/sdk'

import type { client } from '../../client.ts'

// What the Memory screen and the chat's "remembered" note share (docs/stage-web.md#memory).

export type Memory = Awaited<ReturnType<typeof client.memory.list.query>>['items'][number]
export type MemoryEvent = Extract<ChatEvent, { type: 'memory' }>

/** Most memories one person keeps of one character (SPEC §4.16). */
export const MEMORY_LIMIT = 2000
/** From this many on, the screen shows the count against the limit. */
export const NEAR_LIMIT = 1800
/** Most characters of one memory (the server counts code points). */
export const MAX_MEMORY_CHARS = 2000
export const IMPORTANCES = [5, 4, 3, 2, 1] as const

/**
 * A memory with real dates: the feed's events may have crossed instances as JSON, so
 * their dates can arrive as strings.
 */
export function toMemory(item: Memory): Memory {
  return {
    ...item,
    createdAt: new Date(item.createdAt),
    updatedAt: new Date(item.updatedAt),
    lastUsedAt: item.lastUsedAt === null ? null : new Date(item.lastUsedAt),
  }
}

export function isLimitReached(error: unknown): boolean {
  return toAiriError(error).code === 'MEMORY_LIMIT_REACHED'
}

/**
 * `list` with a change applied: added memories go on top unless already there (the
 * device that added one has it from `add` already), updated ones replace theirs
 * unless what is shown is newer, deleted ones go.
 */
export function applyChange(list: Memory[], change: Pick<MemoryEvent, 'change' | 'memories' | 'ids'>, { add = true } = {}): Memory[] {
  if (change.change === 'deleted') {
    const gone = new Set(change.ids)
    return list.filter(memory => !gone.has(memory.id))
  }
  const incoming = change.memories.map(toMemory)
  const byId = new Map(incoming.map(memory => [memory.id, memory]))
  const updated = list.map((memory) => {
    const next = byId.get(memory.id)
    return next && next.updatedAt >= memory.updatedAt ? next : memory
  })
  if (change.change !== 'added' || !add)
    return updated
  const shown = new Set(list.map(memory => memory.id))
  return [...incoming.filter(memory => !shown.has(memory.id)), ...updated]
}

/** Every memory once, in the order first seen (a page read after live additions may repeat some). */
export function uniqueById(list: Memory[]): Memory[] {
  const seen = new Set<string>()
  return list.filter(memory => !seen.has(memory.id) && !!seen.add(memory.id))
}
