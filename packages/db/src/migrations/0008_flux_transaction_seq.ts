import type { Kysely } from 'kysely'

// `created_at` is the transaction's start time, so concurrent writes can share it
// and it does not say which committed first. Every balance write takes the user's
// row lock before inserting its ledger row, so a sequence drawn at insert time
// follows the order in which balances actually changed: the ledger's true order.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('flux_transaction').addColumn('seq', 'bigserial', col => col.notNull()).execute()
  await db.schema.createIndex('flux_transaction_user_seq_idx').on('flux_transaction').columns(['user_id', 'seq desc']).execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('flux_transaction_user_seq_idx').execute()
  await db.schema.alterTable('flux_transaction').dropColumn('seq').execute()
}
