import type { Kysely } from 'kysely'

/** Covers, capabilities, translations, prompts and avatar models keep the order their owner gave them. */
const tables = ['character_covers', 'character_capabilities', 'character_i18n', 'character_prompts', 'avatar_models'] as const

export async function up(db: Kysely<any>): Promise<void> {
  for (const table of tables)
    await db.schema.alterTable(table).addColumn('position', 'integer', col => col.notNull().defaultTo(0)).execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of tables)
    await db.schema.alterTable(table).dropColumn('position').execute()
}
