import type { Kysely } from 'kysely'

/**
 * What a bill needs of an LLM call, beside the tokens, upstream, status,
 * duration and Flux the row already keeps: the part of the prompt the upstream
 * served from its cache (priced apart, docs/billing.md) and the time to the
 * first generated text of a stream. Both null when not known or not measured.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('llm_request_log')
    .addColumn('cached_tokens', 'integer')
    .addColumn('first_token_ms', 'integer')
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('llm_request_log').dropColumn('first_token_ms').dropColumn('cached_tokens').execute()
}
