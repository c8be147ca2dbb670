import { sql, type Expression, type ExpressionBuilder, type RawBuilder, type Transaction } from 'kysely'

import type { Character, Database, Db } from '@airi/db'

import { notFound } from '../../errors.ts'
import type { CharacterCoverEntry, CharacterDetail, CharacterI18nEntry, CharacterSummary } from './types.ts'

type Executor = Db | Transaction<Database>
type OnCharacter = ExpressionBuilder<Database, 'characters'>

export const characterNotFound = () => notFound('CHARACTER_NOT_FOUND', 'No such character')

/** A child list as one JSON array in its given order: one round trip per character read, not one per table. */
function childList<O extends { position: number }>(rows: Expression<O>): RawBuilder<Omit<O, 'position'>[]> {
  return sql`(SELECT coalesce(json_agg(to_jsonb(child) - 'position' ORDER BY child.position), '[]'::json) FROM ${rows} AS child)`
}

const i18nOf = (eb: OnCharacter) => childList(eb.selectFrom('character_i18n')
  .select(['id', 'language', 'name', 'tagline', 'description', 'tags', 'position'])
  .whereRef('character_i18n.character_id', '=', 'characters.id').where('character_i18n.deleted_at', 'is', null))

const coversOf = (eb: OnCharacter) => childList(eb.selectFrom('character_covers')
  .select(['id', 'foreground_url as foregroundUrl', 'background_url as backgroundUrl', 'position'])
  .whereRef('character_covers.character_id', '=', 'characters.id').where('character_covers.deleted_at', 'is', null))

const capabilitiesOf = (eb: OnCharacter) => childList(eb.selectFrom('character_capabilities')
  .select(['id', 'type', 'config', 'position'])
  .whereRef('character_capabilities.character_id', '=', 'characters.id').where('character_capabilities.deleted_at', 'is', null))

const promptsOf = (eb: OnCharacter) => childList(eb.selectFrom('character_prompts')
  .select(['id', 'language', 'type', 'content', 'position'])
  .whereRef('character_prompts.character_id', '=', 'characters.id').where('character_prompts.deleted_at', 'is', null))

const avatarModelsOf = (eb: OnCharacter) => childList(eb.selectFrom('avatar_models')
  .select(['id', 'name', 'type', 'description', 'config', 'position'])
  .whereRef('avatar_models.character_id', '=', 'characters.id').where('avatar_models.deleted_at', 'is', null))

const likedBy = (eb: OnCharacter, userId: string) => eb.exists(eb.selectFrom('user_character_likes').select('user_id')
  .where('user_character_likes.user_id', '=', userId).whereRef('user_character_likes.character_id', '=', 'characters.id')).$castTo<boolean>()

const bookmarkedBy = (eb: OnCharacter, userId: string) => eb.exists(eb.selectFrom('user_character_bookmarks').select('user_id')
  .where('user_character_bookmarks.user_id', '=', userId).whereRef('user_character_bookmarks.character_id', '=', 'characters.id')).$castTo<boolean>()

/** What a summary adds to the character row, as columns of the same query. */
export function summaryColumns(eb: OnCharacter, userId: string) {
  return [i18nOf(eb).as('i18n'), coversOf(eb).as('covers'), likedBy(eb, userId).as('liked'), bookmarkedBy(eb, userId).as('bookmarked')] as const
}

type SummaryRow = Character & { i18n: CharacterI18nEntry[], covers: CharacterCoverEntry[], liked: boolean, bookmarked: boolean }

export function toSummary(row: SummaryRow): CharacterSummary {
  return {
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
    liked: row.liked,
    bookmarked: row.bookmarked,
    i18n: row.i18n,
    covers: row.covers,
  }
}

/** Any non-deleted character, with everything it is made of, in one query. */
export async function getCharacter(executor: Executor, userId: string, id: string): Promise<CharacterDetail> {
  const row = await executor.selectFrom('characters').selectAll('characters')
    .select(eb => [
      ...summaryColumns(eb, userId),
      capabilitiesOf(eb).as('capabilities'),
      promptsOf(eb).as('prompts'),
      avatarModelsOf(eb).as('avatarModels'),
    ])
    .where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
  if (!row)
    throw characterNotFound()
  return { ...toSummary(row), capabilities: row.capabilities, prompts: row.prompts, avatarModels: row.avatarModels, metadata: row.metadata }
}

/** Of `ids`, those of characters that exist and are not deleted (for other services, e.g. chat members). */
export async function liveCharacterIds(db: Db, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0)
    return new Set()
  const rows = await db.selectFrom('characters').select('id').where('id', 'in', ids).where('deleted_at', 'is', null).execute()
  return new Set(rows.map(row => row.id))
}

/** What a reply made on the server needs of a character: its prompts in one language, and its default model. */
export interface Persona {
  id: string
  name: string | null
  defaultModelId: string | null
  /** The language the prompts are in (null: the character has none). */
  language: string | null
  system: string[]
  personality: string[]
  greetings: string[]
}

/**
 * The language to use of those a character has: `wanted` exactly (case aside),
 * else one with the same primary subtag (`zh-Hant` for `zh`), else the first
 * (the character's own order).
 */
export function pickLanguage(available: string[], wanted: string[]): string | null {
  const lower = available.map(language => language.toLowerCase())
  for (const language of wanted.map(each => each.toLowerCase())) {
    const exact = lower.indexOf(language)
    if (exact >= 0)
      return available[exact]!
    const primary = language.split('-')[0]!
    const near = lower.findIndex(each => each.split('-')[0] === primary)
    if (near >= 0)
      return available[near]!
  }
  return available[0] ?? null
}

/** The persona of a live character in the first of `languages` it has (404 when deleted or missing). */
export async function getPersona(db: Db, id: string, languages: string[]): Promise<Persona> {
  const row = await db.selectFrom('characters').select(['id', 'default_model_id'])
    .select(eb => [promptsOf(eb).as('prompts'), i18nOf(eb).as('i18n')])
    .where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
  if (!row)
    throw characterNotFound()
  const prompts = row.prompts as Array<{ language: string, type: string, content: string }>
  const language = pickLanguage([...new Set(prompts.map(prompt => prompt.language))], languages)
  const inLanguage = (...types: string[]) => prompts.filter(prompt => prompt.language === language && types.includes(prompt.type)).map(prompt => prompt.content)
  const names = row.i18n as Array<{ language: string, name: string }>
  const nameLanguage = pickLanguage(names.map(entry => entry.language), language ? [language, ...languages] : languages)
  return {
    id: row.id,
    name: names.find(entry => entry.language === nameLanguage)?.name ?? null,
    defaultModelId: row.default_model_id,
    language,
    system: inLanguage('system'),
    // A card's description and scenario describe the character as much as its personality does.
    personality: inLanguage('description', 'personality', 'scenario'),
    greetings: inLanguage('greetings'),
  }
}
