import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * A per-user feed for live chat sync. Every send appends one row per user member,
 * numbered by that user's own counter (`chat_sync_heads`), which the send bumps
 * under the head row's lock: a later number cannot commit before an earlier one,
 * so "everything for this user after N" is one range read on the primary key, and
 * a live subscription's position is that single number.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('chat_sync_heads')
    .addColumn('user_id', 'text', col => col.primaryKey())
    .addColumn('last_seq', 'bigint', col => col.notNull().defaultTo(0))
    .execute()

  // No foreign keys, like `messages.sender_id`: reads join the live membership and
  // chat, and rows of a deleted chat are simply skipped.
  await db.schema
    .createTable('chat_sync_feed')
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('seq', 'bigint', col => col.notNull())
    .addColumn('chat_id', 'text', col => col.notNull())
    .addColumn('from_seq', 'bigint', col => col.notNull())
    .addColumn('to_seq', 'bigint', col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('chat_sync_feed_pkey', ['user_id', 'seq'])
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('chat_sync_feed').execute()
  await db.schema.dropTable('chat_sync_heads').execute()
}
