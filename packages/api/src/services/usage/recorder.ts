import { randomUUID } from 'node:crypto'

import { sql } from 'kysely'

import type { Db } from '@airi/db'

import { writeCompanionAlone, type Alongside, type CompanionKind, type MeteredCall, type UsageLog } from '../billing/index.ts'

/** A metered call's usage row, its `flux` being what its debit moved. */
const usageRows: CompanionKind = {
  name: 'metered_usage',
  columns: { id: 'text', user_id: 'text', kind: 'text', model: 'text', status: 'text', characters: 'integer', audio_ms: 'integer', duration_ms: 'integer', api_key_id: 'text' },
  statement: rows => sql`INSERT INTO metered_usage (id, user_id, kind, model, status, characters, audio_ms, duration_ms, api_key_id, flux)
    SELECT r.id, r.user_id, r.kind, r.model, r.status, r.characters, r.audio_ms, r.duration_ms, r.api_key_id, r.moved FROM ${rows} r
    ON CONFLICT (id) DO UPDATE SET flux = EXCLUDED.flux`,
}

/**
 * The `metered_usage` writer the Flux meters are given: one row per metered
 * speech or transcription call, naming the personal API key that made it, if one
 * did. With a debit it joins the debit's statement, its `flux` being what
 * that debit moved, so the rows add up to the ledger; the id is chosen here so
 * the statement's re-run (a user's first account is opened in between) writes
 * the row once.
 */
export function createUsageLog(db: Db): UsageLog {
  const row = (userId: string, call: MeteredCall, apiKeyId?: string): Alongside => ({
    kind: usageRows,
    row: { id: randomUUID(), user_id: userId, kind: call.kind, model: call.model, status: call.status, characters: call.characters ?? null, audio_ms: call.audioMs ?? null, duration_ms: Math.max(0, Math.round(call.durationMs)), api_key_id: apiKeyId ?? null },
  })

  return {
    alongside: row,

    async record(userId, call, apiKeyId) {
      await writeCompanionAlone(db, row(userId, call, apiKeyId), 0)
    },
  }
}
