import type { Kysely } from 'kysely'
import { sql } from 'kysely'

/**
 * What a character carries that has no column of its own, as one JSON object. A
 * character imported from a Character Card keeps there, under `characterCard`, the
 * card's fields we do not map (extensions, lorebook, assets, creator notes, …), so
 * exporting it gives them back.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('characters')
    .addColumn('metadata', 'jsonb', col => col.notNull().defaultTo(sql`'{}'::jsonb`))
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('characters').dropColumn('metadata').execute()
}
