import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * `llm_request_log.kind` gains `embedding`: a call to the gateway's
 * `POST /embeddings`, listed apart in `usage.calls` from chat completions (`llm`).
 * The check is the one 0020 declared on the column (Postgres named it).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE llm_request_log DROP CONSTRAINT llm_request_log_kind_check,
    ADD CONSTRAINT llm_request_log_kind_check CHECK (kind IN ('llm', 'reply', 'embedding'))`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  // The older check cannot hold the new kind; those calls were gateway calls of a client.
  await sql`UPDATE llm_request_log SET kind = 'llm' WHERE kind = 'embedding'`.execute(db)
  await sql`ALTER TABLE llm_request_log DROP CONSTRAINT llm_request_log_kind_check,
    ADD CONSTRAINT llm_request_log_kind_check CHECK (kind IN ('llm', 'reply'))`.execute(db)
}
