import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * Moments in a user's life that happen once (the first message ever sent), for
 * product analytics: the primary key makes "was this the first time?" one
 * conditional insert, exact across instances and retries. No foreign key: the
 * auth tables are created after our migrations; account deletion removes the rows.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('user_milestones')
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('milestone', 'text', col => col.notNull())
    .addColumn('reached_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('user_milestones_pkey', ['user_id', 'milestone'])
    .execute()

  // Users who already wrote before this table existed have had their first message.
  await sql`
    INSERT INTO user_milestones (user_id, milestone, reached_at)
    SELECT sender_id, 'first_message_sent', min(created_at)
    FROM messages
    GROUP BY sender_id
  `.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('user_milestones').execute()
}
