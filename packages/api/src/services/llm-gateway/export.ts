import { sql } from 'kysely'

import type { Db } from '@airi/db'

import { exactTimestamp } from '../../cursor.ts'
import { keysetPages, type ExportTables } from '../account-export/index.ts'

/**
 * The user's part of the LLM gateway for an account export: every call in the
 * request log (usage: model, tokens, Flux, timings), oldest first along the
 * (user_id, created_at) index. The page key is the exact creation time (Postgres's
 * microseconds, never a millisecond `Date`) and the id; it is not exported.
 */
export function requestLogExportTables(db: Db, userId: string): ExportTables {
  return {
    llm_request_log: (async function* () {
      const pages = keysetPages(async (after: { created_at_key: string, id: string } | undefined, limit) => db.selectFrom('llm_request_log').selectAll()
        .select(exactTimestamp('created_at').as('created_at_key'))
        .where('user_id', '=', userId)
        .$if(after !== undefined, query => query.where(sql<boolean>`(created_at, id) > (${after!.created_at_key}::timestamptz, ${after!.id})`))
        .orderBy('created_at').orderBy('id').limit(limit).execute())
      for await (const page of pages)
        yield page.map(({ created_at_key: _, ...row }) => row)
    })(),
  }
}
