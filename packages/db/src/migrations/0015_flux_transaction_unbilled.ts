import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * What a debit owed but could not take, as a column of its ledger row rather than
 * only a metric: usage already served (an LLM call past its reservation) is always
 * written, even when the balance was empty (`amount` 0). `amount` stays the Flux
 * that moved, so the balance chain is unchanged, and `Σ served = Σ charged +
 * Σ unbilled` is one SQL sum. Short debits made before this kept it in
 * `metadata.unbilled`; they are carried over.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('flux_transaction')
    .addColumn('unbilled', 'bigint', col => col.notNull().defaultTo(0).check(sql`unbilled >= 0`))
    .execute()
  await sql`UPDATE flux_transaction SET unbilled = (metadata->>'unbilled')::bigint
    WHERE type = 'debit' AND jsonb_typeof(metadata->'unbilled') = 'number'`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('flux_transaction').dropColumn('unbilled').execute()
}
