import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * Administrators added by an operator (`pnpm airi admin add`, the admin pages), on
 * top of the ADMIN_EMAILS of the environment, so making someone admin needs no
 * restart. Keyed by the lower-cased e-mail: a user who signs up later with it is
 * an admin once verified. Deleting the account leaves the row (the e-mail is the
 * grant, not the user).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('operator_admins')
    .addColumn('email', 'text', col => col.primaryKey().check(sql`email = lower(email)`))
    .addColumn('added_by', 'text')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('operator_admins').execute()
}
