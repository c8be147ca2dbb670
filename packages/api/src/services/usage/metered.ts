import { sql } from 'kysely'
import type { z } from 'zod'

import type { Db, MeteredUsageKind } from '@airi/db'

import { beforeCreatedAtId, exactTimestamp, type createdAtIdKey } from '../../cursor.ts'
import { keysetPages, type ExportTables } from '../account-export/index.ts'
import { groupKey, type UsageGroup } from '../llm-gateway/index.ts'

type Key = z.output<typeof createdAtIdKey>

/** The user's metered speech calls newest first after `after`, along (user_id, created_at DESC, id DESC). */
export function meteredCallsPage(db: Db, userId: string, { after, limit, kinds }: { after?: Key, limit: number, kinds?: MeteredUsageKind[] }) {
  return db.selectFrom('metered_usage')
    .select(['id', 'kind', 'model', 'status', 'characters', 'audio_ms', 'duration_ms', 'flux', 'created_at', 'api_key_id'])
    .select(exactTimestamp('created_at').as('key'))
    .where('user_id', '=', userId)
    .$if(after !== undefined, query => query.where(beforeCreatedAtId(after!)))
    .$if(kinds !== undefined, query => query.where('kind', 'in', kinds!))
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
}

/** The user's metered calls in [from, to), grouped by `groupBy` and model: one index range of (user_id, created_at). */
export function meteredCallsSummary(db: Db, userId: string, { from, to, groupBy }: { from: Date, to: Date, groupBy: UsageGroup }) {
  const key = groupKey(groupBy)
  return db.selectFrom('metered_usage')
    .select(eb => [
      key.as('key'),
      'model',
      eb.fn.countAll<string>().as('calls'),
      sql<string>`coalesce(sum(flux), 0)`.as('flux'),
      sql<string>`coalesce(sum(characters), 0)`.as('characters'),
      sql<string>`coalesce(sum(audio_ms), 0)`.as('audio_ms'),
    ])
    .where('user_id', '=', userId)
    .where('created_at', '>=', from)
    .where('created_at', '<', to)
    .groupBy([key, 'model'])
}

/** The user's usage rows for an account export, oldest first, paged by their exact time and id. */
export function meteredUsageExportTables(db: Db, userId: string): ExportTables {
  return {
    metered_usage: (async function* () {
      const pages = keysetPages(async (after: { key: string, id: string } | undefined, limit) => db.selectFrom('metered_usage').selectAll()
        .select(exactTimestamp('created_at').as('key'))
        .where('user_id', '=', userId)
        .$if(after !== undefined, query => query.where(sql<boolean>`(created_at, id) > (${after!.key}::timestamptz, ${after!.id})`))
        .orderBy('created_at').orderBy('id').limit(limit).execute())
      for await (const page of pages)
        yield page.map(({ key: _, ...row }) => row)
    })(),
  }
}
