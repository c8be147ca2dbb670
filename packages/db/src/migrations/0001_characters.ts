import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('characters')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('version', 'text', col => col.notNull())
    .addColumn('cover_url', 'text', col => col.notNull())
    .addColumn('avatar_url', 'text', col => col.notNull())
    .addColumn('character_id', 'text', col => col.notNull())
    .addColumn('creator_id', 'text', col => col.notNull())
    .addColumn('owner_id', 'text', col => col.notNull())
    .addColumn('priority', 'integer', col => col.notNull().defaultTo(0))
    .addColumn('default_voice_id', 'text')
    .addColumn('default_model_id', 'text')
    .addColumn('likes_count', 'integer', col => col.notNull().defaultTo(0))
    .addColumn('bookmarks_count', 'integer', col => col.notNull().defaultTo(0))
    .addColumn('interactions_count', 'integer', col => col.notNull().defaultTo(0))
    .addColumn('forks_count', 'integer', col => col.notNull().defaultTo(0))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createIndex('characters_owner_id_idx')
    .on('characters')
    .column('owner_id')
    .where(sql.ref('deleted_at'), 'is', null)
    .execute()

  await db.schema
    .createTable('character_covers')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('foreground_url', 'text', col => col.notNull())
    .addColumn('background_url', 'text', col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('character_capabilities')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('type', 'text', col => col.notNull())
    .addColumn('config', 'jsonb', col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('character_i18n')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('language', 'text', col => col.notNull())
    .addColumn('name', 'text', col => col.notNull())
    .addColumn('tagline', 'text')
    .addColumn('description', 'text', col => col.notNull())
    .addColumn('tags', sql`text[]`, col => col.notNull().defaultTo('{}'))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  // Partial, so a soft-deleted translation does not block re-adding the language.
  await db.schema
    .createIndex('character_i18n_character_language_uidx')
    .on('character_i18n')
    .columns(['character_id', 'language'])
    .unique()
    .where(sql.ref('deleted_at'), 'is', null)
    .execute()

  await db.schema
    .createTable('character_prompts')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('language', 'text', col => col.notNull())
    .addColumn('type', 'text', col => col.notNull())
    .addColumn('content', 'text', col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('avatar_models')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
    .addColumn('name', 'text', col => col.notNull())
    .addColumn('type', 'text', col => col.notNull())
    .addColumn('description', 'text', col => col.notNull())
    .addColumn('config', 'jsonb', col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  for (const table of ['user_character_likes', 'user_character_bookmarks']) {
    await db.schema
      .createTable(table)
      .addColumn('user_id', 'text', col => col.notNull())
      .addColumn('character_id', 'text', col => col.notNull().references('characters.id').onDelete('cascade'))
      .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint(`${table}_pkey`, ['user_id', 'character_id'])
      .execute()
  }

  // FK lookups (listing and cascade deletes); the partial unique index on
  // character_i18n and the composite PKs (led by user_id) do not serve them.
  for (const table of ['character_covers', 'character_capabilities', 'character_i18n', 'character_prompts', 'avatar_models', 'user_character_likes', 'user_character_bookmarks']) {
    await db.schema
      .createIndex(`${table}_character_id_idx`)
      .on(table)
      .column('character_id')
      .execute()
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of [
    'user_character_bookmarks',
    'user_character_likes',
    'avatar_models',
    'character_prompts',
    'character_i18n',
    'character_capabilities',
    'character_covers',
    'characters',
  ]) {
    await db.schema.dropTable(table).execute()
  }
}
