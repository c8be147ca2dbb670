import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * Replies made on the server (`chats.respond`), and edits and deletions as entries
 * of the live-sync feed.
 *
 * A `chat_replies` row is written with the user message it answers, in the same
 * transaction, and ends with the stored assistant message (or none: failed). At most
 * one reply per chat streams at a time: the partial unique index is what answers a
 * concurrent `respond` with 409. `call_id` ties it to the gateway call (its
 * `llm_request_log.request_id` and ledger rows).
 *
 * A feed row's `kind` says what it carries: `messages` (the range `from_seq..to_seq`,
 * as before), `edited` or `deleted` (the messages `message_ids`, whose seqs span
 * `from_seq..to_seq`).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('chat_replies')
    .addColumn('id', 'text', col => col.primaryKey())
    .addColumn('chat_id', 'text', col => col.notNull())
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('character_id', 'text', col => col.notNull())
    .addColumn('answers_id', 'text', col => col.notNull())
    .addColumn('regenerates_id', 'text')
    .addColumn('call_id', 'text')
    .addColumn('model', 'text', col => col.notNull())
    .addColumn('status', 'text', col => col.notNull().check(sql`status IN ('streaming', 'complete', 'stopped', 'failed')`))
    .addColumn('message_id', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('ended_at', 'timestamptz')
    .execute()
  await db.schema.createIndex('chat_replies_streaming_uniq').on('chat_replies').column('chat_id').unique()
    .where(sql.ref('status'), '=', 'streaming').execute()
  // A resend finds the reply of its message.
  await db.schema.createIndex('chat_replies_answers_idx').on('chat_replies').columns(['chat_id', 'answers_id']).execute()

  await db.schema.alterTable('chat_sync_feed')
    .addColumn('kind', 'text', col => col.notNull().defaultTo('messages').check(sql`kind IN ('messages', 'edited', 'deleted')`))
    .addColumn('message_ids', sql`text[]`)
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('chat_sync_feed').dropColumn('message_ids').dropColumn('kind').execute()
  await db.schema.dropTable('chat_replies').execute()
}
