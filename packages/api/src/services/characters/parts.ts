import type { Transaction } from 'kysely'

import type { Database, Db } from '@airi/db'

import type { CreateCharacterInput } from './types.ts'

type Executor = Db | Transaction<Database>

/** The child tables a character owns; soft-deleted with it. */
export const childTables = ['character_covers', 'character_capabilities', 'character_i18n', 'character_prompts', 'avatar_models'] as const
export type ChildTable = typeof childTables[number]

/** Inserts the child lists `input` carries, each in its given order. */
export async function insertChildren(trx: Transaction<Database>, characterId: string, input: Partial<CreateCharacterInput>): Promise<void> {
  if (input.covers?.length) {
    await trx.insertInto('character_covers').values(input.covers.map((cover, position) => ({
      position,
      character_id: characterId,
      foreground_url: cover.foregroundUrl,
      background_url: cover.backgroundUrl,
    }))).execute()
  }
  if (input.capabilities?.length) {
    await trx.insertInto('character_capabilities').values(input.capabilities.map((capability, position) => ({
      position,
      character_id: characterId,
      type: capability.type,
      config: JSON.stringify(capability.config),
    }))).execute()
  }
  if (input.i18n?.length) {
    await trx.insertInto('character_i18n').values(input.i18n.map((entry, position) => ({
      position,
      character_id: characterId,
      language: entry.language,
      name: entry.name,
      tagline: entry.tagline ?? null,
      description: entry.description,
      tags: entry.tags ?? [],
    }))).execute()
  }
  if (input.prompts?.length) {
    await trx.insertInto('character_prompts').values(input.prompts.map((prompt, position) => ({
      position,
      character_id: characterId,
      language: prompt.language,
      type: prompt.type,
      content: prompt.content,
    }))).execute()
  }
  if (input.avatarModels?.length) {
    await trx.insertInto('avatar_models').values(input.avatarModels.map((model, position) => ({
      position,
      character_id: characterId,
      name: model.name,
      type: model.type,
      description: model.description,
      config: JSON.stringify(model.config),
    }))).execute()
  }
}

/** Soft-deletes the live rows of `tables` that belong to `characterIds`. */
export async function softDeleteChildren(executor: Executor, characterIds: string[], tables: readonly ChildTable[] = childTables): Promise<void> {
  if (characterIds.length === 0)
    return
  const now = new Date()
  for (const table of tables) {
    await executor.updateTable(table).set({ deleted_at: now, updated_at: now })
      .where('character_id', 'in', characterIds).where('deleted_at', 'is', null).execute()
  }
}
