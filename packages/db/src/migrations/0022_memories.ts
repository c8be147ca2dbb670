import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * Long-term memory (SPEC §4.16): what a character remembers about one user, and
 * whether that user has memory on for that character.
 *
 * `search_vector` is written by the memory service, not generated: Postgres's
 * `simple` configuration keeps a run of Chinese (or Japanese, Korean) text as one
 * word, so a query could only match the whole run. The service indexes the content's
 * words plus the character bigrams of every CJK run (`services/memory/text.ts`),
 * and builds queries with the same function; a generated column would need that
 * splitting again in SQL as an immutable function, two implementations to keep equal.
 *
 * `character_id` cascades for a hard delete; a character's (soft) deletion deletes
 * its memories through the characters service's `onDeleted`. `user_id` has no
 * foreign key, like every table of ours (the `user` table is better-auth's):
 * account deletion runs the memory service's `deleteAllForUser`.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('memory')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('content', 'text', col => col.notNull().check(sql`char_length(content) between 1 and 2000`))
    .addColumn('importance', 'smallint', col => col.notNull().defaultTo(3).check(sql`importance between 1 and 5`))
    .addColumn('source', 'text', col => col.notNull().check(sql`source in ('auto', 'user')`))
    .addColumn('search_vector', sql`tsvector`, col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('last_used_at', 'timestamptz')
    .execute()

  // Lists (newest first, keyset on created_at, id), counts against the limit, and the
  // user and character filter of every search.
  await db.schema
    .createIndex('memory_user_character_created_idx')
    .on('memory')
    .expression(sql`user_id, character_id, created_at desc, id desc`)
    .execute()

  // A character's deletion removes every user's memories of it.
  await db.schema.createIndex('memory_character_idx').on('memory').column('character_id').execute()

  await db.schema
    .createIndex('memory_search_vector_idx')
    .on('memory')
    .using('gin')
    .column('search_vector')
    .execute()

  // One row only once the user changed the default (memory on).
  await db.schema
    .createTable('memory_settings')
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('enabled', 'boolean', col => col.notNull())
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('memory_settings_pkey', ['user_id', 'character_id'])
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('memory_settings').execute()
  await db.schema.dropTable('memory').execute()
}
