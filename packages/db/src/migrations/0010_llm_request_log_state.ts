import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * The request log row is written as `pending` before the upstream call and
 * completed at settlement, so a call cut short by a crash leaves a trace that
 * reconciliation can settle. `usage_source` says where the billed tokens came from.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('llm_request_log')
    .addColumn('state', 'text', col => col.notNull().defaultTo('completed').check(sql`state IN ('pending', 'completed', 'reconciled')`))
    .addColumn('usage_source', 'text', col => col.check(sql`usage_source IN ('upstream', 'counted', 'estimated', 'flat')`))
    .addColumn('flux_reserved', 'bigint', col => col.notNull().defaultTo(0))
    .addColumn('completed_at', 'timestamptz')
    .execute()
  // A pending row has no answer yet.
  await db.schema.alterTable('llm_request_log').alterColumn('status', col => col.dropNotNull()).execute()
  await db.schema.alterTable('llm_request_log').alterColumn('duration_ms', col => col.dropNotNull()).execute()
  await sql`UPDATE llm_request_log SET completed_at = created_at`.execute(db)
  await db.schema
    .createIndex('llm_request_log_pending_idx')
    .on('llm_request_log')
    .column('created_at')
    .where(sql.ref('state'), '=', 'pending')
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('llm_request_log_pending_idx').execute()
  await db.deleteFrom('llm_request_log').where('status', 'is', null).execute()
  await db.schema.alterTable('llm_request_log').alterColumn('duration_ms', col => col.setNotNull()).execute()
  await db.schema.alterTable('llm_request_log').alterColumn('status', col => col.setNotNull()).execute()
  await db.schema.alterTable('llm_request_log')
    .dropColumn('state')
    .dropColumn('usage_source')
    .dropColumn('flux_reserved')
    .dropColumn('completed_at')
    .execute()
}
