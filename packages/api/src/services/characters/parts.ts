import type { Transaction } from 'kysely'

import type { Database, Db } from '@airi/db'

import type { AvatarModelEntry, CharacterCapabilityEntry, CharacterCoverEntry, CharacterI18nEntry, CharacterPromptEntry, CreateCharacterInput } from './types.ts'

type Executor = Db | Transaction<Database>

/** The child tables a character owns; soft-deleted with it. */
const childTables = ['character_covers', 'character_capabilities', 'character_i18n', 'character_prompts', 'avatar_models'] as const
export type ChildTable = typeof childTables[number]

/** The entries written, as reads show them, for each list the input carried. */
interface InsertedChildren {
  covers?: CharacterCoverEntry[]
  capabilities?: CharacterCapabilityEntry[]
  i18n?: CharacterI18nEntry[]
  prompts?: CharacterPromptEntry[]
  avatarModels?: AvatarModelEntry[]
}

/** RETURNING's row order is not promised: put rows back in the order they were given. */
function inOrder<T extends { position: number }>(rows: T[]): Omit<T, 'position'>[] {
  return rows.toSorted((a, b) => a.position - b.position).map(({ position: _, ...entry }) => entry)
}

/** Inserts the child lists `input` carries, each in its given order. */
export async function insertChildren(trx: Transaction<Database>, characterId: string, input: Partial<CreateCharacterInput>): Promise<InsertedChildren> {
  const inserted: InsertedChildren = {}
  if (input.covers?.length) {
    const rows = await trx.insertInto('character_covers').values(input.covers.map((cover, position) => ({
      position,
      character_id: characterId,
      foreground_url: cover.foregroundUrl,
      background_url: cover.backgroundUrl,
    }))).returning(['id', 'foreground_url as foregroundUrl', 'background_url as backgroundUrl', 'position']).execute()
    inserted.covers = inOrder(rows)
  }
  if (input.capabilities?.length) {
    const rows = await trx.insertInto('character_capabilities').values(input.capabilities.map((capability, position) => ({
      position,
      character_id: characterId,
      type: capability.type,
      config: JSON.stringify(capability.config),
    }))).returning(['id', 'type', 'config', 'position']).execute()
    inserted.capabilities = inOrder(rows)
  }
  if (input.i18n?.length) {
    const rows = await trx.insertInto('character_i18n').values(input.i18n.map((entry, position) => ({
      position,
      character_id: characterId,
      language: entry.language,
      name: entry.name,
      tagline: entry.tagline ?? null,
      description: entry.description,
      tags: entry.tags ?? [],
    }))).returning(['id', 'language', 'name', 'tagline', 'description', 'tags', 'position']).execute()
    inserted.i18n = inOrder(rows)
  }
  if (input.prompts?.length) {
    const rows = await trx.insertInto('character_prompts').values(input.prompts.map((prompt, position) => ({
      position,
      character_id: characterId,
      language: prompt.language,
      type: prompt.type,
      content: prompt.content,
    }))).returning(['id', 'language', 'type', 'content', 'position']).execute()
    inserted.prompts = inOrder(rows)
  }
  if (input.avatarModels?.length) {
    const rows = await trx.insertInto('avatar_models').values(input.avatarModels.map((model, position) => ({
      position,
      character_id: characterId,
      name: model.name,
      type: model.type,
      description: model.description,
      config: JSON.stringify(model.config),
    }))).returning(['id', 'name', 'type', 'description', 'config', 'position']).execute()
    inserted.avatarModels = inOrder(rows)
  }
  return inserted
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
