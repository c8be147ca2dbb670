import type { Db } from '@airi/db'

import { keysetPages, pagesById, pagesPerParent, type ExportTables } from '../account-export/index.ts'
import type { ChildTable } from './parts.ts'

/** Every table a character is made of besides its own row. */
const CHILD_TABLES = ['character_covers', 'character_capabilities', 'character_i18n', 'character_prompts', 'avatar_models'] as const satisfies readonly ChildTable[]

/**
 * The user's part of the characters domain for an account export: the characters
 * they own with every row they are made of, and their likes and bookmarks. Deleted
 * rows are kept (soft deletes) and exported too, with their `deleted_at`.
 */
export function characterExportTables(db: Db, userId: string): ExportTables {
  // Not the partial owner index (live rows only): deleted characters are the user's too.
  const ownedIds = () => pagesById(async (afterId, limit) => db.selectFrom('characters').select('id')
    .where('owner_id', '=', userId)
    .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
    .orderBy('id').limit(limit).execute())
  const children = (table: ChildTable) => pagesPerParent(ownedIds(), character => pagesById(async (afterId, limit) =>
    db.selectFrom(table).selectAll().where('character_id', '=', character.id)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()))
  const relation = (table: 'user_character_likes' | 'user_character_bookmarks') => keysetPages(async (after: { character_id: string } | undefined, limit) =>
    db.selectFrom(table).selectAll().where('user_id', '=', userId)
      .$if(after !== undefined, query => query.where('character_id', '>', after!.character_id))
      .orderBy('character_id').limit(limit).execute())

  return {
    characters: pagesById(async (afterId, limit) => db.selectFrom('characters').selectAll().where('owner_id', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()),
    ...Object.fromEntries(CHILD_TABLES.map(table => [table, children(table)])),
    user_character_likes: relation('user_character_likes'),
    user_character_bookmarks: relation('user_character_bookmarks'),
  }
}
