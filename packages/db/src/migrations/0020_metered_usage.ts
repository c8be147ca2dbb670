import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * One row per metered speech call (TTS, streaming TTS, STT, streaming STT), written
 * in the statement of the call's meter debit, so `usage.calls` can list every
 * billed call and its rows add up to the ledger. `llm_request_log.kind` tells a
 * gateway call made by a client (`llm`) from a reply the server made (`reply`).
 * Both tables are read newest first per user: `(user_id, created_at DESC, id DESC)`
 * serves a page of a user with a million calls as one index range scan.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('metered_usage')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('kind', 'text', col => col.notNull().check(sql`kind IN ('tts', 'tts-stream', 'stt', 'stt-stream')`))
    .addColumn('model', 'text', col => col.notNull())
    .addColumn('status', 'text', col => col.notNull().check(sql`status IN ('completed', 'cancelled', 'failed')`))
    .addColumn('characters', 'integer')
    .addColumn('audio_ms', 'integer')
    .addColumn('duration_ms', 'integer', col => col.notNull())
    .addColumn('flux', 'bigint', col => col.notNull().defaultTo(0))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()
  await sql`CREATE INDEX metered_usage_user_created_idx ON metered_usage (user_id, created_at DESC, id DESC)`.execute(db)

  await db.schema.alterTable('llm_request_log')
    .addColumn('kind', 'text', col => col.notNull().defaultTo('llm').check(sql`kind IN ('llm', 'reply')`))
    .execute()
  // Replaces (user_id, created_at): the id makes the keyset's tie-break part of the index.
  await sql`CREATE INDEX llm_request_log_user_created_id_idx ON llm_request_log (user_id, created_at DESC, id DESC)`.execute(db)
  await db.schema.dropIndex('llm_request_log_user_created_idx').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('llm_request_log_user_created_idx').on('llm_request_log').columns(['user_id', 'created_at']).execute()
  await db.schema.dropIndex('llm_request_log_user_created_id_idx').execute()
  await db.schema.alterTable('llm_request_log').dropColumn('kind').execute()
  await db.schema.dropTable('metered_usage').execute()
}
