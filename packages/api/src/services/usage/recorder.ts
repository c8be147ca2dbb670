import { randomUUID } from 'node:crypto'

import { sql } from 'kysely'

import type { Db } from '@airi/db'

import type { MeteredCall, UsageLog } from '../billing/index.ts'

/**
 * The `metered_usage` writer the Flux meters are given: one row per metered
 * speech call. With a debit it joins the debit's statement, its `flux` being what
 * that debit moved, so the rows add up to the ledger; the id is chosen here so
 * the statement's re-run (a user's first account is opened in between) writes
 * the row once.
 */
export function createUsageLog(db: Db): UsageLog {
  const values = (id: string, userId: string, call: MeteredCall) =>
    sql.join([id, userId, call.kind, call.model, call.status, call.characters ?? null, call.audioMs ?? null, Math.max(0, Math.round(call.durationMs))])

  return {
    alongside(userId, call) {
      const id = randomUUID()
      return moved => sql`INSERT INTO metered_usage (id, user_id, kind, model, status, characters, audio_ms, duration_ms, flux)
        VALUES (${values(id, userId, call)}, ${moved})
        ON CONFLICT (id) DO UPDATE SET flux = EXCLUDED.flux`
    },

    async record(userId, call) {
      await sql`INSERT INTO metered_usage (id, user_id, kind, model, status, characters, audio_ms, duration_ms, flux)
        VALUES (${values(randomUUID(), userId, call)}, 0)`.execute(db)
    },
  }
}
