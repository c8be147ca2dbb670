import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('chats')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('type', 'text', col => col.notNull().check(sql`type in ('private', 'bot', 'group', 'channel')`))
    .addColumn('title', 'text')
    .addColumn('creator_id', 'text', col => col.notNull())
    .addColumn('last_seq', 'bigint', col => col.notNull().defaultTo(0))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('chat_members')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('chat_id', 'text', col => col.notNull().references('chats.id').onDelete('cascade'))
    .addColumn('member_type', 'text', col => col.notNull().check(sql`member_type in ('user', 'character')`))
    .addColumn('member_id', 'text', col => col.notNull())
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  // Partial, so a member who left can be added again.
  await db.schema
    .createIndex('chat_members_chat_member_uidx')
    .on('chat_members')
    .columns(['chat_id', 'member_type', 'member_id'])
    .unique()
    .where(sql.ref('deleted_at'), 'is', null)
    .execute()

  await db.schema
    .createIndex('chat_members_member_idx')
    .on('chat_members')
    .columns(['member_type', 'member_id'])
    .execute()

  await db.schema
    .createTable('messages')
    .addColumn('id', 'text', col => col.primaryKey())
    .addColumn('chat_id', 'text', col => col.notNull().references('chats.id').onDelete('cascade'))
    .addColumn('seq', 'bigint', col => col.notNull())
    .addColumn('sender_id', 'text', col => col.notNull())
    .addColumn('role', 'text', col => col.notNull())
    .addColumn('content', 'text', col => col.notNull())
    .addColumn('metadata', 'jsonb')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    // Also the index behind pullMessages (chat_id, seq > afterSeq).
    .addUniqueConstraint('messages_chat_seq_key', ['chat_id', 'seq'])
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('messages').execute()
  await db.schema.dropTable('chat_members').execute()
  await db.schema.dropTable('chats').execute()
}
