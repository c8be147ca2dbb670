import type { Character, Db } from '@airi/db'

import { notFound } from '../../errors.ts'
import type { CharacterDetail, CharacterSummary } from './types.ts'

export const characterNotFound = () => notFound('CHARACTER_NOT_FOUND', 'No such character')

function groupBy<T extends { character_id: string }>(rows: T[]): Map<string, T[]> {
  const groups = new Map<string, T[]>()
  for (const row of rows) {
    const group = groups.get(row.character_id)
    if (group)
      group.push(row)
    else
      groups.set(row.character_id, [row])
  }
  return groups
}

/** Translations, covers and the caller's flags for a set of characters, in order. */
export async function summaries(db: Db, userId: string, rows: Character[]): Promise<CharacterSummary[]> {
  if (rows.length === 0)
    return []
  const ids = rows.map(row => row.id)
  const [i18n, covers, likes, bookmarks] = await Promise.all([
    db.selectFrom('character_i18n').selectAll().where('character_id', 'in', ids).where('deleted_at', 'is', null).orderBy('position').execute(),
    db.selectFrom('character_covers').selectAll().where('character_id', 'in', ids).where('deleted_at', 'is', null).orderBy('position').execute(),
    db.selectFrom('user_character_likes').select('character_id').where('user_id', '=', userId).where('character_id', 'in', ids).execute(),
    db.selectFrom('user_character_bookmarks').select('character_id').where('user_id', '=', userId).where('character_id', 'in', ids).execute(),
  ])
  const i18nBy = groupBy(i18n)
  const coversBy = groupBy(covers)
  const liked = new Set(likes.map(like => like.character_id))
  const bookmarked = new Set(bookmarks.map(bookmark => bookmark.character_id))
  return rows.map(row => ({
    id: row.id,
    characterId: row.character_id,
    version: row.version,
    coverUrl: row.cover_url,
    avatarUrl: row.avatar_url,
    creatorId: row.creator_id,
    ownerId: row.owner_id,
    priority: row.priority,
    defaultVoiceId: row.default_voice_id,
    defaultModelId: row.default_model_id,
    likesCount: row.likes_count,
    bookmarksCount: row.bookmarks_count,
    interactionsCount: row.interactions_count,
    forksCount: row.forks_count,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    liked: liked.has(row.id),
    bookmarked: bookmarked.has(row.id),
    i18n: (i18nBy.get(row.id) ?? []).map(entry => ({
      id: entry.id,
      language: entry.language,
      name: entry.name,
      tagline: entry.tagline,
      description: entry.description,
      tags: entry.tags,
    })),
    covers: (coversBy.get(row.id) ?? []).map(cover => ({ id: cover.id, foregroundUrl: cover.foreground_url, backgroundUrl: cover.background_url })),
  }))
}

/** Any non-deleted character, with everything it is made of. */
export async function getCharacter(db: Db, userId: string, id: string): Promise<CharacterDetail> {
  const row = await db.selectFrom('characters').selectAll().where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
  if (!row)
    throw characterNotFound()
  const [[summary], capabilities, prompts, avatarModels] = await Promise.all([
    summaries(db, userId, [row]),
    db.selectFrom('character_capabilities').selectAll().where('character_id', '=', id).where('deleted_at', 'is', null).orderBy('position').execute(),
    db.selectFrom('character_prompts').selectAll().where('character_id', '=', id).where('deleted_at', 'is', null).orderBy('position').execute(),
    db.selectFrom('avatar_models').selectAll().where('character_id', '=', id).where('deleted_at', 'is', null).orderBy('position').execute(),
  ])
  return {
    ...summary!,
    capabilities: capabilities.map(capability => ({ id: capability.id, type: capability.type, config: capability.config })),
    prompts: prompts.map(prompt => ({ id: prompt.id, language: prompt.language, type: prompt.type, content: prompt.content })),
    avatarModels: avatarModels.map(model => ({ id: model.id, name: model.name, type: model.type, description: model.description, config: model.config })),
  }
}
