import { sql } from 'kysely'

import type { Db } from '@airi/db'

import { characterNotFound } from './read.ts'

// Likes and bookmarks: a relation row per user and character, and its count on the character row.

export type Relation = 'user_character_likes' | 'user_character_bookmarks'
export type Counter = 'likes_count' | 'bookmarks_count'

/** Adds the caller's like/bookmark, or removes it if present, with the count, under the character's lock. */
export async function toggle(db: Db, userId: string, id: string, relation: Relation, counter: Counter): Promise<{ on: boolean, count: number }> {
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
export async function removeRelations(db: Db, userId: string, relation: Relation, counter: Counter): Promise<void> {
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
