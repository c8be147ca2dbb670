import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * Personal API keys (SPEC §4.17): durable credentials a person makes for the REST
 * gateways (SillyTavern, scripts), each with scopes, an optional budget per period,
 * its own rate limit and an expiry.
 *
 * - `api_keys` holds only a SHA-256 of the key (the key is random, 32 bytes: a slow
 *   hash would add nothing) and its first characters to show (`prefix`).
 * - `api_key_spend` is a key's running total per budget period, moved by the same
 *   reservation that moves the ledger, so a budget is checked and taken in one
 *   conditional statement (exact under concurrency).
 * - The ledger, the request log and the metered usage carry the key that made each
 *   call (`api_key_id`): what a key spent is the sum of its ledger rows, and usage
 *   shows which key made a call. No foreign key, as for `user_id`: a revoked key
 *   stays (revoked), so its history keeps its name.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('name', 'text', col => col.notNull().check(sql`char_length(name) between 1 and 100`))
    .addColumn('prefix', 'text', col => col.notNull())
    .addColumn('key_hash', 'text', col => col.notNull().unique())
    .addColumn('scopes', sql`text[]`, col => col.notNull().check(sql`cardinality(scopes) > 0 and scopes <@ array['llm', 'speech', 'transcription']`))
    .addColumn('budget_flux', 'bigint', col => col.check(sql`budget_flux > 0`))
    .addColumn('budget_period', 'text', col => col.check(sql`budget_period in ('day', 'month', 'total')`))
    .addColumn('rate_limit_per_minute', 'integer', col => col.check(sql`rate_limit_per_minute > 0`))
    .addColumn('expires_at', 'timestamptz')
    .addColumn('revoked_at', 'timestamptz')
    .addColumn('last_used_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addCheckConstraint('api_keys_budget_check', sql`(budget_flux is null) = (budget_period is null)`)
    .execute()
  await db.schema.createIndex('api_keys_user_idx').on('api_keys').columns(['user_id', 'created_at']).execute()

  await db.schema
    .createTable('api_key_spend')
    .addColumn('api_key_id', 'text', col => col.notNull().references('api_keys.id').onDelete('cascade'))
    .addColumn('period_start', 'timestamptz', col => col.notNull())
    .addColumn('flux', 'bigint', col => col.notNull().defaultTo(0))
    // What the last claim took: the claim's one statement returns it (RETURNING sees only the new row).
    .addColumn('last_claim', 'bigint', col => col.notNull().defaultTo(0))
    .addPrimaryKeyConstraint('api_key_spend_pkey', ['api_key_id', 'period_start'])
    .execute()

  for (const table of ['flux_transaction', 'llm_request_log', 'metered_usage'])
    await db.schema.alterTable(table).addColumn('api_key_id', 'text').execute()
  await sql`CREATE INDEX flux_transaction_api_key_idx ON flux_transaction (api_key_id, created_at) WHERE api_key_id IS NOT NULL`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX flux_transaction_api_key_idx`.execute(db)
  for (const table of ['flux_transaction', 'llm_request_log', 'metered_usage'])
    await db.schema.alterTable(table).dropColumn('api_key_id').execute()
  await db.schema.dropTable('api_key_spend').execute()
  await db.schema.dropTable('api_keys').execute()
}
