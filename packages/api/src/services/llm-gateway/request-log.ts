import { randomUUID } from 'node:crypto'

import type { Db, LlmCallKind, LlmUsageSource } from '@airi/db'
import { sql } from 'kysely'

import type { Clock } from '../../clock.ts'
import type { Logger } from '../../logger.ts'
import { writeCompanionAlone, type Alongside, type BillingService, type CompanionKind } from '../billing/index.ts'
import { ledgerIds, type BilledCall, type CallBilling } from './billing.ts'
import { tokensOf, type Usage } from './usage.ts'

export interface CallOutcome {
  upstream: string | null
  /** The HTTP status the call ended with (499: the client left, 503: shutdown, 504: deadline). */
  status: number
  startedAt: number
  usage?: Usage
  source?: LlmUsageSource
  /** From the call's start to the first generated text a stream relayed; undefined when not measured (a plain answer). */
  firstTokenMs?: number
  flux: number
  error?: string
}

/** What reconciliation did with one pending row. */
type ReconcileOutcome =
  /** The call had settled (or refunded) before it stopped; only the row was behind. */
  | 'already-settled'
  /** No upstream had answered: the reservation went back. */
  | 'refunded'
  /** An upstream was answering: the call pays the flat price (FLUX_PER_REQUEST, at most its reservation); the rest goes back. */
  | 'charged-flat'
  /** It stopped before its reservation was taken: nothing to settle. */
  | 'no-reservation'

export interface ReconcileReport {
  /** Rows created before this were considered. */
  cutoff: Date
  rows: Array<{ id: string, callId: string, userId: string, outcome: ReconcileOutcome, flux: number }>
}

/**
 * How a completed row's `flux_consumed` follows from what its ledger write moved:
 * `base + sign × moved` (a settlement's debit adds to the reservation, its refund
 * takes from it; sign 0 when the write does not decide it).
 */
export interface FluxFromMoved { base: number, sign: -1 | 0 | 1 }

/** A call's row, pending, with the reservation its ledger write took. */
const pendingRows: CompanionKind = {
  name: 'llm_pending',
  columns: { id: 'text', user_id: 'text', request_id: 'text', model: 'text', kind: 'text', api_key_id: 'text' },
  statement: rows => sql`INSERT INTO llm_request_log (id, user_id, request_id, model, kind, api_key_id, state, flux_reserved)
    SELECT r.id, r.user_id, r.request_id, r.model, r.kind, r.api_key_id, 'pending', r.moved FROM ${rows} r
    ON CONFLICT (id) DO UPDATE SET flux_reserved = EXCLUDED.flux_reserved WHERE llm_request_log.state = 'pending'`,
}

const COMPLETED_COLUMNS = ['upstream', 'status', 'duration_ms', 'first_token_ms', 'prompt_tokens', 'completion_tokens', 'cached_tokens', 'total_tokens', 'usage_source', 'error'] as const

/**
 * A pending row completed, with what the call cost. An upsert on the primary key,
 * so each row is reached through it whatever the cached plan (a join on the ids
 * could walk the pending index, dead entries included). The reservation's
 * statement wrote the row, so the update half is what runs; the insert half is
 * taken only when that statement itself failed (then the call is logged with its
 * status and no Flux, as the ledger has none for it either).
 */
const completedRows: CompanionKind = {
  name: 'llm_completed',
  columns: {
    id: 'text',
    user_id: 'text',
    request_id: 'text',
    model: 'text',
    kind: 'text',
    api_key_id: 'text',
    upstream: 'text',
    status: 'integer',
    duration_ms: 'integer',
    first_token_ms: 'integer',
    prompt_tokens: 'integer',
    completion_tokens: 'integer',
    cached_tokens: 'integer',
    total_tokens: 'integer',
    usage_source: 'text',
    error: 'text',
    flux_base: 'bigint',
    flux_sign: 'integer',
  },
  statement: rows => sql`INSERT INTO llm_request_log AS l (id, user_id, request_id, model, kind, api_key_id, state, ${sql.raw(COMPLETED_COLUMNS.join(', '))}, flux_consumed, completed_at)
    SELECT r.id, r.user_id, r.request_id, r.model, r.kind, r.api_key_id, 'completed', ${sql.raw(COMPLETED_COLUMNS.map(column => `r.${column}`).join(', '))}, r.flux_base + r.flux_sign * r.moved, now() FROM ${rows} r
    ON CONFLICT (id) DO UPDATE SET state = 'completed', ${sql.raw(COMPLETED_COLUMNS.map(column => `${column} = EXCLUDED.${column}`).join(', '))},
      flux_consumed = EXCLUDED.flux_consumed, completed_at = EXCLUDED.completed_at
    WHERE l.state = 'pending'`,
}

/** A call's row in the log: its id and what identifies the call. */
export interface LogRow {
  id: string
  user_id: string
  request_id: string
  model: string
  kind: LlmCallKind
  /** The personal API key that made the call, if one did. */
  api_key_id: string | null
}

/**
 * The `llm_request_log` rows of the gateway: written `pending` before the
 * reservation and the upstream call, completed at settlement. A row left pending
 * by a process that died is settled by `reconcile`.
 */
export function createRequestLog({ db, logger, clock }: { db: Db, logger: Logger, clock: Clock }) {
  /** Completes a pending row in the statement of the settlement's ledger write (`flux`: what the call cost, from what that write moved). */
  function completion(logRow: LogRow, outcome: Omit<CallOutcome, 'flux'>): (flux: FluxFromMoved) => Alongside {
    const tokens = tokensOf(outcome.usage)
    const durationMs = clock.now() - outcome.startedAt
    return ({ base, sign }) => ({
      kind: completedRows,
      row: {
        ...logRow,
        upstream: outcome.upstream,
        status: outcome.status,
        duration_ms: durationMs,
        first_token_ms: outcome.firstTokenMs ?? null,
        prompt_tokens: tokens.prompt,
        completion_tokens: tokens.completion,
        cached_tokens: tokens.cached,
        total_tokens: tokens.total,
        usage_source: outcome.source ?? null,
        error: outcome.error ?? null,
        flux_base: base,
        flux_sign: sign,
      },
    })
  }

  return {
    /**
     * The call's row, pending, written in the same statement as its reservation
     * (`callBilling.reserve`): without its trace a call never spends Flux. The id
     * is chosen here; the statement runs again after opening a user's first
     * account, so the insert takes the reservation that run made.
     */
    pending(call: Omit<BilledCall, 'reserved'>, kind: LlmCallKind = 'llm'): { logRow: LogRow, alongside: Alongside } {
      const logRow: LogRow = { id: randomUUID(), user_id: call.userId, request_id: call.id, model: call.alias, kind, api_key_id: call.apiKeyId ?? null }
      return { logRow, alongside: { kind: pendingRows, row: { ...logRow } } }
    },

    /**
     * Notes which upstream answered, before anything of its answer reaches the
     * client: reconciliation charges a row that names its upstream and refunds one
     * that does not, so nothing is delivered unless this was written.
     */
    async answered(rowId: string, upstream: string): Promise<void> {
      await db.updateTable('llm_request_log').set({ upstream }).where('id', '=', rowId).execute()
    },

    completion,

    /** Completes a pending row on its own (no ledger write to join). */
    async complete(logRow: LogRow, outcome: CallOutcome): Promise<void> {
      await writeCompanionAlone(db, completion(logRow, outcome)({ base: outcome.flux, sign: 0 }), 0)
    },

    /**
     * Settles every row still pending that was created before `cutoff`, oldest
     * first, at most `limit`. The ledger decides: a call that had settled keeps
     * its settlement; one whose reservation stands is refunded when no upstream
     * had answered, and charged the flat price (`flat`, at most the reservation)
     * when one had, never more, since what it delivered is unknown. Every ledger write goes
     * through the call's own request ids, so running this twice, or alongside a
     * late settlement, moves no Flux twice.
     */
    async reconcile({ cutoff, limit, flat, billing, callBilling }: { cutoff: Date, limit: number, flat: number, billing: BillingService, callBilling: CallBilling }): Promise<ReconcileReport> {
      const pending = await db.selectFrom('llm_request_log').selectAll()
        .where('state', '=', 'pending').where('created_at', '<', cutoff)
        .orderBy('created_at').limit(limit).execute()
      const report: ReconcileReport = { cutoff, rows: [] }
      for (const row of pending) {
        const ids = ledgerIds(row.request_id)
        const [reserve, settle, refund] = await Promise.all([ids.reserve, ids.settle, ids.refund].map(requestId => billing.findByRequestId(row.user_id, requestId)))
        let outcome: ReconcileOutcome
        let flux: number
        let source: LlmUsageSource | null = null
        if (!reserve) {
          outcome = 'no-reservation'
          flux = 0
        }
        else if (settle || refund) {
          outcome = 'already-settled'
          flux = reserve.amount + (settle?.amount ?? 0) - (refund?.amount ?? 0)
        }
        else if (row.upstream === null) {
          await callBilling.refund({ userId: row.user_id, id: row.request_id, alias: row.model, reserved: reserve.amount, apiKeyId: row.api_key_id ?? undefined }, 'interrupted')
          outcome = 'refunded'
          flux = 0
        }
        else {
          // A reservation now covers the whole output cap; what the call delivered is unknown, so it pays the flat price.
          flux = Math.min(flat, reserve.amount)
          if (reserve.amount > flux)
            await callBilling.refund({ userId: row.user_id, id: row.request_id, alias: row.model, reserved: reserve.amount, apiKeyId: row.api_key_id ?? undefined }, 'interrupted', { amount: reserve.amount - flux })
          outcome = 'charged-flat'
          source = 'flat'
        }
        await db.updateTable('llm_request_log').set({
          state: 'reconciled',
          usage_source: source,
          flux_consumed: flux,
          error: `reconciled: ${outcome}`,
          completed_at: new Date(clock.now()),
        }).where('id', '=', row.id).where('state', '=', 'pending').execute()
        logger.info({ call: row.request_id, userId: row.user_id, outcome, flux }, 'reconciled a pending LLM call')
        report.rows.push({ id: row.id, callId: row.request_id, userId: row.user_id, outcome, flux })
      }
      return report
    },
  }
}
