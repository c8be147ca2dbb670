import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('user_provider_configs')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('owner_id', 'text', col => col.notNull())
    .addColumn('definition_id', 'text', col => col.notNull())
    .addColumn('name', 'text', col => col.notNull())
    .addColumn('config', 'jsonb', col => col.notNull().defaultTo('{}'))
    .addColumn('validated', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('validation_bypassed', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createIndex('user_provider_configs_owner_id_idx')
    .on('user_provider_configs')
    .column('owner_id')
    .execute()

  await db.schema
    .createTable('system_provider_configs')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('definition_id', 'text', col => col.notNull())
    .addColumn('name', 'text', col => col.notNull())
    .addColumn('config', 'jsonb', col => col.notNull().defaultTo('{}'))
    .addColumn('validated', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('validation_bypassed', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('system_provider_configs').execute()
  await db.schema.dropTable('user_provider_configs').execute()
}
