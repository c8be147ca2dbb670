import { sql } from 'kysely'

import type { Db, LlmCallKind } from '@airi/db'

import { beforeCreatedAtId, exactTimestamp, type createdAtIdKey } from '../../cursor.ts'
import type { z } from 'zod'

type Key = z.output<typeof createdAtIdKey>

/** How a summary groups: by UTC day (`YYYY-MM-DD`) or by model alias. */
export type UsageGroup = 'day' | 'model'

/** The SQL key of a group, over a table's `created_at` and `model`. */
export function groupKey(groupBy: UsageGroup) {
  return groupBy === 'day' ? sql<string>`to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')` : sql<string>`model`
}

/**
 * The request log as the usage report reads it: the user's calls newest first
 * after `after`, along (user_id, created_at DESC, id DESC) so a page is one index
 * range however many calls the user has made. `limit` rows at most.
 */
export function llmCallsPage(db: Db, userId: string, { after, limit, kinds }: { after?: Key, limit: number, kinds?: LlmCallKind[] }) {
  return db.selectFrom('llm_request_log')
    .select(['id', 'kind', 'model', 'state', 'status', 'prompt_tokens', 'completion_tokens', 'cached_tokens', 'first_token_ms', 'duration_ms', 'flux_consumed', 'created_at', 'api_key_id'])
    .select(exactTimestamp('created_at').as('key'))
    .where('user_id', '=', userId)
    .$if(after !== undefined, query => query.where(beforeCreatedAtId(after!)))
    .$if(kinds !== undefined, query => query.where('kind', 'in', kinds!))
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
}

/** The user's calls in [from, to), grouped by `groupBy` and model: one index range of (user_id, created_at). */
export function llmCallsSummary(db: Db, userId: string, { from, to, groupBy }: { from: Date, to: Date, groupBy: UsageGroup }) {
  const key = groupKey(groupBy)
  return db.selectFrom('llm_request_log')
    .select(eb => [
      key.as('key'),
      'model',
      eb.fn.countAll<string>().as('calls'),
      sql<string>`coalesce(sum(flux_consumed), 0)`.as('flux'),
      sql<string>`coalesce(sum(prompt_tokens), 0)`.as('input_tokens'),
      sql<string>`coalesce(sum(completion_tokens), 0)`.as('output_tokens'),
    ])
    .where('user_id', '=', userId)
    .where('created_at', '>=', from)
    .where('created_at', '<', to)
    .groupBy([key, 'model'])
}

/** The gateway's part of the usage report, for the usage service (which reads no gateway table itself). */
export function createLlmUsageReads(db: Db) {
  return {
    page: async (userId: string, options: Parameters<typeof llmCallsPage>[2]) => llmCallsPage(db, userId, options).execute(),
    summary: async (userId: string, options: Parameters<typeof llmCallsSummary>[2]) => llmCallsSummary(db, userId, options).execute(),
  }
}

export type LlmUsageReads = ReturnType<typeof createLlmUsageReads>
