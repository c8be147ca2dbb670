import type { Transaction } from 'kysely'

import type { Character, Database, Db, JsonObject } from '@airi/db'

import { beforeCreatedAtId, createCursorCodec, createdAtIdKey, exactTimestamp } from '../../cursor.ts'
import { ApiError, forbidden, isUniqueViolation } from '../../errors.ts'
import { coverUrlFor, placeholderPng, pngOfCover, withCards } from './card-png.ts'
import { readCard } from './card-schema.ts'
import { cardFileName, cardFromCharacter, characterFromCard, v2Rendering } from './cards.ts'
import { characterExportTables } from './export.ts'
import { insertChildren, softDeleteChildren, type ChildTable } from './parts.ts'
import { characterNotFound, getCharacter, getPersona, liveCharacterIds, summaryColumns, toSummary, type Persona } from './read.ts'
import { removeRelations, toggle } from './relations.ts'
import type { CharacterDetail, CharacterPage, CreateCharacterInput, ImportCardInput, ListCharactersInput, UpdateCharacterInput } from './types.ts'

export type CharacterService = ReturnType<typeof createCharacterService>

/** Characters are paged newest first by (created_at, id), exactly. */
const listCursor = createCursorCodec(createdAtIdKey)

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

/** The translation index is unique per (character, language) among live rows; the input schema checks it first. */
function rethrowDuplicateLanguage(error: unknown): never {
  if (isUniqueViolation(error, 'character_i18n_character_language_uidx'))
    throw new ApiError(400, 'DUPLICATE_LANGUAGE', 'Each language may appear once in i18n', { field: 'i18n' })
  throw error
}

/** One transaction: the character and all its parts, created and owned by `userId`. Answers from what it wrote. */
async function insertCharacter(db: Db, userId: string, input: CreateCharacterInput, metadata: JsonObject = {}): Promise<CharacterDetail> {
  return db.transaction().execute(async (trx) => {
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
      metadata,
    }).returningAll().executeTakeFirstOrThrow()
    const children = await insertChildren(trx, row.id, input)
    // A new character has no likes or bookmarks yet, the caller's included.
    return {
      ...toSummary({ ...row, i18n: children.i18n ?? [], covers: children.covers ?? [], liked: false, bookmarked: false }),
      capabilities: children.capabilities ?? [],
      prompts: children.prompts ?? [],
      avatarModels: children.avatarModels ?? [],
      metadata: row.metadata,
    }
  }).catch(rethrowDuplicateLanguage)
}

/**
 * Characters and their parts (covers, capabilities, translations, prompts, avatar
 * models), likes and bookmarks. Everything is soft-deleted and every read skips
 * deleted rows. Like and bookmark counts live on the character row and change only
 * under that row's lock, in the same transaction as the like or bookmark row.
 */
export interface CharacterDeps {
  db: Db
  /**
   * Called with the ids of characters just deleted (after the commit), so what other
   * services keep of them goes too (a deleted character's memories). Idempotent.
   */
  onDeleted?: (ids: string[]) => Promise<void>
}

export function createCharacterService({ db, onDeleted = async () => {} }: CharacterDeps) {
  return {
    /** The caller's characters (or everyone's with `all`), newest first, keyset-paged. */
    async list(userId: string, { all = false, cursor, limit = 20 }: ListCharactersInput = {}): Promise<CharacterPage> {
      let query = db.selectFrom('characters').selectAll('characters')
        .select(exactTimestamp('created_at').as('created_at_text'))
        .select(eb => summaryColumns(eb, userId))
        .where('deleted_at', 'is', null)
      if (!all)
        query = query.where('owner_id', '=', userId)
      if (cursor)
        query = query.where(beforeCreatedAtId(listCursor.decode(cursor)))
      const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute()
      const page = rows.slice(0, limit)
      const last = page.at(-1)
      return {
        items: page.map(toSummary),
        nextCursor: rows.length > limit && last ? listCursor.encode([last.created_at_text, last.id]) : null,
      }
    },

    /** Any non-deleted character, with everything it is made of. */
    get: (userId: string, id: string): Promise<CharacterDetail> => getCharacter(db, userId, id),

    /** One transaction: the character and all its parts; the caller is creator and owner. Answers from what it wrote. */
    create: (userId: string, input: CreateCharacterInput): Promise<CharacterDetail> => insertCharacter(db, userId, input),

    /**
     * A new character from a Character Card (V2 or V3; JSON, or a PNG carrying it):
     * its prompts in `language`, the PNG's picture as cover, and the card's other
     * fields kept in `metadata` for export. 400 `INVALID_CARD` names what is wrong.
     */
    async importCard(userId: string, { card, language = 'en' }: ImportCardInput): Promise<CharacterDetail> {
      const { card: parsed, picture } = readCard(card)
      const { input, metadata } = characterFromCard(parsed, language)
      const cover = coverUrlFor(picture)
      return insertCharacter(db, userId, { ...input, coverUrl: cover, avatarUrl: cover }, metadata)
    },

    /** Any non-deleted character (as `get`) as a V3 card. */
    async exportCard(userId: string, id: string): Promise<{ fileName: string, card: JsonObject }> {
      const character = await getCharacter(db, userId, id)
      return { fileName: cardFileName(character, 'json'), card: cardFromCharacter(character) }
    },

    /** The same card in a PNG: the cover when it is a PNG we hold, else a placeholder; V3 in `ccv3`, V2 in `chara`. */
    async exportCardPng(userId: string, id: string): Promise<{ fileName: string, png: Uint8Array }> {
      const character = await getCharacter(db, userId, id)
      const card = cardFromCharacter(character)
      const base64 = (value: JsonObject) => Buffer.from(JSON.stringify(value)).toString('base64')
      const png = withCards(pngOfCover(character.coverUrl) ?? placeholderPng(), { ccv3: base64(card), chara: base64(v2Rendering(card)) })
      return { fileName: cardFileName(character, 'png'), png }
    },

    /** Owner only. Fields given are set; a child list given replaces the old rows (soft-deleted). */
    async update(userId: string, input: UpdateCharacterInput): Promise<CharacterDetail> {
      return db.transaction().execute(async (trx) => {
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
        // One query, in the transaction: the character as this update left it.
        return getCharacter(trx, userId, input.id)
      }).catch(rethrowDuplicateLanguage)
    },

    /** Owner only: soft-deletes the character and its parts, then tells `onDeleted`. */
    async delete(userId: string, id: string): Promise<{ id: string }> {
      await db.transaction().execute(async (trx) => {
        await lockOwned(trx, userId, id)
        const now = new Date()
        await trx.updateTable('characters').set({ deleted_at: now, updated_at: now }).where('id', '=', id).execute()
        await softDeleteChildren(trx, [id])
      })
      await onDeleted([id])
      return { id }
    },

    /** Of `ids`, those of characters that exist and are not deleted. */
    existing: (ids: string[]): Promise<Set<string>> => liveCharacterIds(db, ids),

    /** A live character's prompts in the first of `languages` it has, and its default model: what a reply made on the server is built on. */
    persona: (id: string, languages: string[]): Promise<Persona> => getPersona(db, id, languages),

    async toggleLike(userId: string, id: string): Promise<{ liked: boolean, likesCount: number }> {
      const { on, count } = await toggle(db, userId, id, 'user_character_likes', 'likes_count')
      return { liked: on, likesCount: count }
    },

    async toggleBookmark(userId: string, id: string): Promise<{ bookmarked: boolean, bookmarksCount: number }> {
      const { on, count } = await toggle(db, userId, id, 'user_character_bookmarks', 'bookmarks_count')
      return { bookmarked: on, bookmarksCount: count }
    },

    /** Account export: the characters the user owns with all their parts, likes and bookmarks. */
    exportTables: (userId: string) => characterExportTables(db, userId),

    /**
     * Account deletion (priority 30), idempotent: soft-deletes the user's characters
     * and their parts, removes the user's likes and bookmarks and decrements those
     * counts. Each step is its own short transaction; a rerun finishes what is left,
     * `onDeleted` included (it is given every character the user owns, deleted or not).
     */
    async deleteAllForUser(userId: string): Promise<void> {
      await removeRelations(db, userId, 'user_character_likes', 'likes_count')
      await removeRelations(db, userId, 'user_character_bookmarks', 'bookmarks_count')
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
      const all = await db.selectFrom('characters').select('id').where('owner_id', '=', userId).execute()
      await onDeleted(all.map(row => row.id))
    },
  }
}
