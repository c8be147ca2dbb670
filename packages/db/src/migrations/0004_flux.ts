import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('user_flux')
    .addColumn('user_id', 'text', col => col.primaryKey())
    .addColumn('flux', 'bigint', col => col.notNull().defaultTo(0).check(sql`flux >= 0`))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('flux_transaction')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('type', 'text', col => col.notNull().check(sql`type in ('credit', 'debit', 'initial', 'promo')`))
    .addColumn('amount', 'bigint', col => col.notNull().check(sql`amount >= 0`))
    .addColumn('balance_before', 'bigint', col => col.notNull())
    .addColumn('balance_after', 'bigint', col => col.notNull())
    .addColumn('request_id', 'text')
    .addColumn('description', 'text')
    .addColumn('metadata', 'jsonb')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()

  await db.schema
    .createIndex('flux_transaction_user_created_idx')
    .on('flux_transaction')
    .columns(['user_id', 'created_at desc', 'id desc'])
    .execute()

  // The idempotency guard: one ledger row per (user, request); writes without a
  // request id are not deduplicated.
  await db.schema
    .createIndex('flux_transaction_user_request_uidx')
    .on('flux_transaction')
    .columns(['user_id', 'request_id'])
    .unique()
    .where(sql.ref('request_id'), 'is not', null)
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('flux_transaction').execute()
  await db.schema.dropTable('user_flux').execute()
}
