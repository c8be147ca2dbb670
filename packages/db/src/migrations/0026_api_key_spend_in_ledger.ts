import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * A budgeted key's spend counter moves with the ledger (docs/gateway.md, "Budgets").
 * 0025 kept one row per key and period, claimed in a statement of its own before
 * the reservation and corrected after it. Now the ledger's write statement reads
 * the row under lock, caps a reservation by what the budget has left, and moves it
 * by what each of the key's rows moved, in the same commit: so one row per
 * budgeted key, made with the key, holding the current period's total, reset when
 * a write lands in a later period. Rebuilt from the ledger: the period's rows.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('api_key_spend').execute()
  await db.schema
    .createTable('api_key_spend')
    .addColumn('api_key_id', 'text', col => col.primaryKey().references('api_keys.id').onDelete('cascade'))
    .addColumn('period_start', 'timestamptz', col => col.notNull())
    .addColumn('flux', 'bigint', col => col.notNull().defaultTo(0))
    .execute()
  await sql`INSERT INTO api_key_spend (api_key_id, period_start, flux)
    SELECT k.id, p.start, COALESCE((SELECT sum(CASE WHEN t.type = 'debit' THEN t.amount ELSE -t.amount END)
      FROM flux_transaction t WHERE t.api_key_id = k.id AND t.created_at >= p.start), 0)
    FROM api_keys k CROSS JOIN LATERAL (SELECT CASE k.budget_period
      WHEN 'day' THEN date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
      WHEN 'month' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
      ELSE 'epoch'::timestamptz END AS start) p
    WHERE k.budget_flux IS NOT NULL`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('api_key_spend').execute()
  await db.schema
    .createTable('api_key_spend')
    .addColumn('api_key_id', 'text', col => col.notNull().references('api_keys.id').onDelete('cascade'))
    .addColumn('period_start', 'timestamptz', col => col.notNull())
    .addColumn('flux', 'bigint', col => col.notNull().defaultTo(0))
    .addColumn('last_claim', 'bigint', col => col.notNull().defaultTo(0))
    .addPrimaryKeyConstraint('api_key_spend_pkey', ['api_key_id', 'period_start'])
    .execute()
}
