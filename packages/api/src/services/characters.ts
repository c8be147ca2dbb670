import { sql, type Transaction } from 'kysely'

import type { Character, Database, Db, JsonValue } from '@airi/db'

import { beforeCreatedAtId, createCursorCodec, createdAtIdKey, exactTimestamp } from '../cursor.ts'
import { ApiError, forbidden, notFound } from '../errors.ts'

// ---------------------------------------------------------------------------
// Shapes callers send and see
// ---------------------------------------------------------------------------

export interface CoverInput { foregroundUrl: string, backgroundUrl: string }
export interface CapabilityInput { type: string, config: Record<string, JsonValue> }
export interface I18nInput { language: string, name: string, tagline?: string | null, description: string, tags?: string[] }
export interface PromptInput { language: string, type: string, content: string }
export interface AvatarModelInput { name: string, type: string, description: string, config: Record<string, JsonValue> }

export interface CreateCharacterInput {
  /** Human-readable slug. */
  characterId: string
  version: string
  coverUrl: string
  avatarUrl: string
  defaultVoiceId?: string | null
  defaultModelId?: string | null
  priority?: number
  covers: CoverInput[]
  capabilities: CapabilityInput[]
  i18n: I18nInput[]
  prompts: PromptInput[]
  avatarModels: AvatarModelInput[]
}

/** Every field but `id` is optional; a child list that is present replaces the old one. */
export type UpdateCharacterInput = { id: string } & Partial<CreateCharacterInput>

export interface CharacterCoverEntry { id: string, foregroundUrl: string, backgroundUrl: string }
export interface CharacterCapabilityEntry { id: string, type: string, config: JsonValue }
export interface CharacterI18nEntry { id: string, language: string, name: string, tagline: string | null, description: string, tags: string[] }
export interface CharacterPromptEntry { id: string, language: string, type: string, content: string }
export interface AvatarModelEntry { id: string, name: string, type: string, description: string, config: JsonValue }

/** A character as lists show it: the row, its translations and covers, and the caller's flags. */
export interface CharacterSummary {
  id: string
  characterId: string
  version: string
  coverUrl: string
  avatarUrl: string
  creatorId: string
  ownerId: string
  priority: number
  defaultVoiceId: string | null
  defaultModelId: string | null
  likesCount: number
  bookmarksCount: number
  interactionsCount: number
  forksCount: number
  createdAt: Date
  updatedAt: Date
  /** Whether the caller likes / bookmarked it. */
  liked: boolean
  bookmarked: boolean
  i18n: CharacterI18nEntry[]
  covers: CharacterCoverEntry[]
}

/** A character with everything it is made of. */
export interface CharacterDetail extends CharacterSummary {
  capabilities: CharacterCapabilityEntry[]
  prompts: CharacterPromptEntry[]
  avatarModels: AvatarModelEntry[]
}

export interface CharacterPage {
  items: CharacterSummary[]
  /** Pass back to get the next (older) page; null on the last page. */
  nextCursor: string | null
}

export interface ListCharactersInput {
  /** Every non-deleted character instead of only the caller's own. */
  all?: boolean
  cursor?: string | null
  limit?: number
}

export type CharacterService = ReturnType<typeof createCharacterService>

type Executor = Db | Transaction<Database>

/** The child tables a character owns; soft-deleted with it. */
const childTables = ['character_covers', 'character_capabilities', 'character_i18n', 'character_prompts', 'avatar_models'] as const
type ChildTable = typeof childTables[number]

const UNIQUE_VIOLATION = '23505'

const characterNotFound = () => notFound('CHARACTER_NOT_FOUND', 'No such character')

/** Characters are paged newest first by (created_at, id), exactly. */
const listCursor = createCursorCodec(createdAtIdKey)

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

/**
 * Characters and their parts (covers, capabilities, translations, prompts, avatar
 * models), likes and bookmarks. Everything is soft-deleted and every read skips
 * deleted rows. Like and bookmark counts live on the character row and change only
 * under that row's lock, in the same transaction as the like or bookmark row.
 */
export function createCharacterService({ db }: { db: Db }) {
  async function insertChildren(trx: Transaction<Database>, characterId: string, input: Partial<CreateCharacterInput>): Promise<void> {
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

  async function softDeleteChildren(executor: Executor, characterIds: string[], tables: readonly ChildTable[] = childTables): Promise<void> {
    if (characterIds.length === 0)
      return
    const now = new Date()
    for (const table of tables) {
      await executor.updateTable(table).set({ deleted_at: now, updated_at: now })
        .where('character_id', 'in', characterIds).where('deleted_at', 'is', null).execute()
    }
  }

  /** The character row, locked, for a write by its owner: 404 when missing or deleted, 403 for anyone else. */
  async function lockOwned(trx: Transaction<Database>, userId: string, id: string): Promise<Character> {
    const row = await trx.selectFrom('characters').selectAll()
      .where('id', '=', id).where('deleted_at', 'is', null)
      .forUpdate().executeTakeFirst()
    if (!row)
      throw characterNotFound()
    if (row.owner_id !== userId)
      throw forbidden('Only the owner can change this character')
    return row
  }

  /** Translations, covers and the caller's flags for a set of characters, in order. */
  async function summaries(userId: string, rows: Character[]): Promise<CharacterSummary[]> {
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

  async function get(userId: string, id: string): Promise<CharacterDetail> {
    const row = await db.selectFrom('characters').selectAll().where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
    if (!row)
      throw characterNotFound()
    const [[summary], capabilities, prompts, avatarModels] = await Promise.all([
      summaries(userId, [row]),
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

  /** The translation index is unique per (character, language) among live rows; the input schema checks it first. */
  function rethrowDuplicateLanguage(error: unknown): never {
    if ((error as { code?: string, constraint?: string }).code === UNIQUE_VIOLATION
      && (error as { constraint?: string }).constraint === 'character_i18n_character_language_uidx') {
      throw new ApiError(400, 'DUPLICATE_LANGUAGE', 'Each language may appear once in i18n', { field: 'i18n' })
    }
    throw error
  }

  type Relation = 'user_character_likes' | 'user_character_bookmarks'
  type Counter = 'likes_count' | 'bookmarks_count'

  /** Adds the caller's like/bookmark, or removes it if present, with the count, under the character's lock. */
  async function toggle(userId: string, id: string, relation: Relation, counter: Counter): Promise<{ on: boolean, count: number }> {
    return db.transaction().execute(async (trx) => {
      const character = await trx.selectFrom('characters').select('id')
        .where('id', '=', id).where('deleted_at', 'is', null)
        .forUpdate().executeTakeFirst()
      if (!character)
        throw characterNotFound()
      const removed = await trx.deleteFrom(relation).where('user_id', '=', userId).where('character_id', '=', id)
        .returning('user_id').executeTakeFirst()
      if (!removed)
        await trx.insertInto(relation).values({ user_id: userId, character_id: id }).execute()
      const updated = await trx.updateTable('characters')
        .set(counter, eb => removed ? sql<number>`greatest(${eb.ref(counter)} - 1, 0)` : eb(eb.ref(counter), '+', 1))
        .where('id', '=', id)
        .returning(eb => eb.ref(counter).as('count'))
        .executeTakeFirstOrThrow()
      return { on: !removed, count: updated.count }
    })
  }

  /** Removes every like/bookmark of the user and decrements the counts, locking characters in id order. */
  async function removeRelations(userId: string, relation: Relation, counter: Counter): Promise<void> {
    await db.transaction().execute(async (trx) => {
      const held = await trx.selectFrom(relation).select('character_id').where('user_id', '=', userId).execute()
      if (held.length === 0)
        return
      await trx.selectFrom('characters').select('id')
        .where('id', 'in', held.map(row => row.character_id))
        .orderBy('id').forUpdate().execute()
      const removed = await trx.deleteFrom(relation).where('user_id', '=', userId).returning('character_id').execute()
      if (removed.length === 0)
        return
      await trx.updateTable('characters')
        .set(counter, eb => sql<number>`greatest(${eb.ref(counter)} - 1, 0)`)
        .where('id', 'in', removed.map(row => row.character_id))
        .execute()
    })
  }

  return {
    /** The caller's characters (or everyone's with `all`), newest first, keyset-paged. */
    async list(userId: string, { all = false, cursor, limit = 20 }: ListCharactersInput = {}): Promise<CharacterPage> {
      let query = db.selectFrom('characters').selectAll()
        .select(exactTimestamp('created_at').as('created_at_text'))
        .where('deleted_at', 'is', null)
      if (!all)
        query = query.where('owner_id', '=', userId)
      if (cursor)
        query = query.where(beforeCreatedAtId(listCursor.decode(cursor)))
      const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute()
      const page = rows.slice(0, limit)
      const last = page.at(-1)
      return {
        items: await summaries(userId, page),
        nextCursor: rows.length > limit && last ? listCursor.encode([last.created_at_text, last.id]) : null,
      }
    },

    /** Any non-deleted character, with everything it is made of. */
    get,

    /** One transaction: the character and all its parts; the caller is creator and owner. */
    async create(userId: string, input: CreateCharacterInput): Promise<CharacterDetail> {
      const id = await db.transaction().execute(async (trx) => {
        const row = await trx.insertInto('characters').values({
          character_id: input.characterId,
          version: input.version,
          cover_url: input.coverUrl,
          avatar_url: input.avatarUrl,
          default_voice_id: input.defaultVoiceId ?? null,
          default_model_id: input.defaultModelId ?? null,
          priority: input.priority ?? 0,
          creator_id: userId,
          owner_id: userId,
        }).returning('id').executeTakeFirstOrThrow()
        await insertChildren(trx, row.id, input)
        return row.id
      }).catch(rethrowDuplicateLanguage)
      return get(userId, id)
    },

    /** Owner only. Fields given are set; a child list given replaces the old rows (soft-deleted). */
    async update(userId: string, input: UpdateCharacterInput): Promise<CharacterDetail> {
      await db.transaction().execute(async (trx) => {
        await lockOwned(trx, userId, input.id)
        const now = new Date()
        await trx.updateTable('characters').set({
          updated_at: now,
          ...(input.characterId !== undefined ? { character_id: input.characterId } : {}),
          ...(input.version !== undefined ? { version: input.version } : {}),
          ...(input.coverUrl !== undefined ? { cover_url: input.coverUrl } : {}),
          ...(input.avatarUrl !== undefined ? { avatar_url: input.avatarUrl } : {}),
          ...(input.defaultVoiceId !== undefined ? { default_voice_id: input.defaultVoiceId } : {}),
          ...(input.defaultModelId !== undefined ? { default_model_id: input.defaultModelId } : {}),
          ...(input.priority !== undefined ? { priority: input.priority } : {}),
        }).where('id', '=', input.id).execute()

        const replaced: ChildTable[] = []
        if (input.covers)
          replaced.push('character_covers')
        if (input.capabilities)
          replaced.push('character_capabilities')
        if (input.i18n)
          replaced.push('character_i18n')
        if (input.prompts)
          replaced.push('character_prompts')
        if (input.avatarModels)
          replaced.push('avatar_models')
        await softDeleteChildren(trx, [input.id], replaced)
        await insertChildren(trx, input.id, input)
      }).catch(rethrowDuplicateLanguage)
      return get(userId, input.id)
    },

    /** Owner only: soft-deletes the character and its parts. */
    async delete(userId: string, id: string): Promise<{ id: string }> {
      await db.transaction().execute(async (trx) => {
        await lockOwned(trx, userId, id)
        const now = new Date()
        await trx.updateTable('characters').set({ deleted_at: now, updated_at: now }).where('id', '=', id).execute()
        await softDeleteChildren(trx, [id])
      })
      return { id }
    },

    async toggleLike(userId: string, id: string): Promise<{ liked: boolean, likesCount: number }> {
      const { on, count } = await toggle(userId, id, 'user_character_likes', 'likes_count')
      return { liked: on, likesCount: count }
    },

    async toggleBookmark(userId: string, id: string): Promise<{ bookmarked: boolean, bookmarksCount: number }> {
      const { on, count } = await toggle(userId, id, 'user_character_bookmarks', 'bookmarks_count')
      return { bookmarked: on, bookmarksCount: count }
    },

    /**
     * Account deletion (priority 30), idempotent: soft-deletes the user's characters
     * and their parts, removes the user's likes and bookmarks and decrements those
     * counts. Each step is its own short transaction; a rerun finishes what is left.
     */
    async deleteAllForUser(userId: string): Promise<void> {
      await removeRelations(userId, 'user_character_likes', 'likes_count')
      await removeRelations(userId, 'user_character_bookmarks', 'bookmarks_count')
      await db.transaction().execute(async (trx) => {
        const owned = await trx.selectFrom('characters').select('id')
          .where('owner_id', '=', userId).where('deleted_at', 'is', null)
          .orderBy('id').forUpdate().execute()
        if (owned.length === 0)
          return
        const ids = owned.map(row => row.id)
        const now = new Date()
        await trx.updateTable('characters').set({ deleted_at: now, updated_at: now }).where('id', 'in', ids).execute()
        await softDeleteChildren(trx, ids)
      })
    },
  }
}
