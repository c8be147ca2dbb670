import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * Automatic memory (SPEC §4.16), the parts after the store:
 * - `llm_request_log.kind` gains `memory`: the extraction call that follows a reply,
 *   billed to the user and listed apart in `usage.calls`.
 * - `memory.embedding` (`real[]`) and the alias that made it: recall adds cosine
 *   similarity when `MEMORY_EMBEDDING_MODEL` is set. A plain array works on every
 *   Postgres (the embedded default has no pgvector); where the `vector` extension
 *   exists the service casts to it in the query. An embedding made by another alias
 *   (the operator changed the entry) is not compared: its dimensions mean nothing
 *   to the new model's.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE llm_request_log DROP CONSTRAINT llm_request_log_kind_check,
    ADD CONSTRAINT llm_request_log_kind_check CHECK (kind IN ('llm', 'reply', 'embedding', 'memory'))`.execute(db)
  await db.schema.alterTable('memory')
    .addColumn('embedding', sql`real[]`)
    .addColumn('embedding_model', 'text')
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('memory').dropColumn('embedding').dropColumn('embedding_model').execute()
  // The older check cannot hold the new kind; those calls were gateway calls made for the user.
  await sql`UPDATE llm_request_log SET kind = 'llm' WHERE kind = 'memory'`.execute(db)
  await sql`ALTER TABLE llm_request_log DROP CONSTRAINT llm_request_log_kind_check,
    ADD CONSTRAINT llm_request_log_kind_check CHECK (kind IN ('llm', 'reply', 'embedding'))`.execute(db)
}
