import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('llm_request_log')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('request_id', 'text', col => col.notNull())
    .addColumn('model', 'text', col => col.notNull())
    .addColumn('upstream', 'text')
    .addColumn('status', 'integer', col => col.notNull())
    .addColumn('duration_ms', 'integer', col => col.notNull())
    .addColumn('prompt_tokens', 'integer')
    .addColumn('completion_tokens', 'integer')
    .addColumn('total_tokens', 'integer')
    .addColumn('flux_consumed', 'bigint', col => col.notNull().defaultTo(0))
    .addColumn('error', 'text')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()

  await db.schema
    .createIndex('llm_request_log_user_created_idx')
    .on('llm_request_log')
    .columns(['user_id', 'created_at'])
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('llm_request_log').execute()
}
