import { CompiledQuery, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { llmCallsPage, llmCallsSummary } from '../llm-gateway/index.ts'
import { meteredCallsPage, meteredCallsSummary } from './metered.ts'

// 100 users × 1000 calls in each table, over the last 400 days.
const USERS = 100
const ROWS_PER_TABLE = 100_000

let database: TestDatabase

beforeAll(async () => {
  database = await createTestDatabase()
  // A big setup: the pool's statement timeout is for requests, and a loaded machine can take longer than it.
  await database.db.transaction().execute(async (db) => {
    await sql`SET LOCAL statement_timeout = 0`.execute(db)
    await sql`INSERT INTO llm_request_log (user_id, request_id, model, status, duration_ms, prompt_tokens, completion_tokens, flux_consumed, created_at)
      SELECT 'user-' || (n % ${USERS}), 'call-' || n, 'chat', 200, 100, 10, 20, 1, now() - (n % 400) * interval '1 day' - (n % 86400) * interval '1 second'
      FROM generate_series(1, ${ROWS_PER_TABLE}) AS n`.execute(db)
    await sql`INSERT INTO metered_usage (user_id, kind, model, status, characters, duration_ms, flux, created_at)
      SELECT 'user-' || (n % ${USERS}), 'tts', 'voice', 'completed', 120, 300, 1, now() - (n % 400) * interval '1 day' - (n % 86400) * interval '1 second'
      FROM generate_series(1, ${ROWS_PER_TABLE}) AS n`.execute(db)
    await sql`ANALYZE llm_request_log`.execute(db)
    await sql`ANALYZE metered_usage`.execute(db)
  })
})
afterAll(async () => {
  await database.drop()
})

interface PlanNode { 'Node Type': string, 'Relation Name'?: string, 'Index Name'?: string, 'Plans'?: PlanNode[] }

/** The plan Postgres chooses for `query`, flattened. */
async function planOf(query: { compile: () => CompiledQuery }): Promise<PlanNode[]> {
  const compiled = query.compile()
  const { rows } = await database.db.executeQuery<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(CompiledQuery.raw(`EXPLAIN (FORMAT JSON) ${compiled.sql}`, [...compiled.parameters]))
  const nodes: PlanNode[] = []
  const walk = (node: PlanNode) => {
    nodes.push(node)
    node.Plans?.forEach(walk)
  }
  walk(rows[0]!['QUERY PLAN'][0]!.Plan)
  return nodes
}

const INDEX_SCANS = ['Index Scan', 'Index Only Scan', 'Bitmap Index Scan']
const indexesUsed = (nodes: PlanNode[]) => nodes.filter(node => INDEX_SCANS.includes(node['Node Type'])).map(node => node['Index Name'])
const typesOf = (nodes: PlanNode[]) => nodes.map(node => node['Node Type'])

const AFTER: [string, string] = [new Date(Date.now() - 3 * 86_400_000).toISOString().replace('Z', '000Z'), 'ffffffff-ffff-ffff-ffff-ffffffffffff']
const LAST_30_DAYS = { from: new Date(Date.now() - 30 * 86_400_000), to: new Date(Date.now() + 86_400_000) }

describe('the usage report with 100 000 calls in each table', () => {
  it('reads a page of calls along (user_id, created_at DESC, id DESC), with no sort and no sequential scan', async () => {
    for (const page of [
      llmCallsPage(database.db, 'user-7', { limit: 51 }),
      llmCallsPage(database.db, 'user-7', { after: AFTER, limit: 51 }),
      meteredCallsPage(database.db, 'user-7', { limit: 51 }),
      meteredCallsPage(database.db, 'user-7', { after: AFTER, limit: 51 }),
    ]) {
      const nodes = await planOf(page)
      expect(indexesUsed(nodes)).toEqual([expect.stringMatching(/^(llm_request_log_user_created_id_idx|metered_usage_user_created_idx)$/)])
      expect(typesOf(nodes)).not.toContain('Sort')
      expect(typesOf(nodes)).not.toContain('Seq Scan')
    }
  })

  it('sums a user\'s month along the same index, by day and by model', async () => {
    for (const groupBy of ['day', 'model'] as const) {
      for (const summary of [llmCallsSummary(database.db, 'user-7', { ...LAST_30_DAYS, groupBy }), meteredCallsSummary(database.db, 'user-7', { ...LAST_30_DAYS, groupBy })]) {
        const nodes = await planOf(summary)
        expect(indexesUsed(nodes)).toEqual([expect.stringMatching(/^(llm_request_log_user_created_id_idx|metered_usage_user_created_idx)$/)])
        expect(typesOf(nodes)).not.toContain('Seq Scan')
      }
    }
  })
})
