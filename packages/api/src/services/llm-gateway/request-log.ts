import { randomUUID } from 'node:crypto'

import type { Db, LlmCallKind, LlmUsageSource } from '@airi/db'
import { sql, type RawBuilder } from 'kysely'

import type { Clock } from '../../clock.ts'
import type { Logger } from '../../logger.ts'
import type { Alongside, BillingService } from '../billing/index.ts'
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
 * The `llm_request_log` rows of the gateway: written `pending` before the
 * reservation and the upstream call, completed at settlement. A row left pending
 * by a process that died is settled by `reconcile`.
 */
export function createRequestLog({ db, logger, clock }: { db: Db, logger: Logger, clock: Clock }) {
  /**
   * Completes a pending row in the statement of the settlement's ledger write
   * (`flux`: what the call cost, from what that write moved).
   */
  function completion(rowId: string, outcome: Omit<CallOutcome, 'flux'>): (flux: RawBuilder<number>) => RawBuilder<unknown> {
    const tokens = tokensOf(outcome.usage)
    const durationMs = clock.now() - outcome.startedAt
    return flux => sql`UPDATE llm_request_log SET state = 'completed', upstream = ${outcome.upstream}, status = ${outcome.status},
        duration_ms = ${durationMs}, first_token_ms = ${outcome.firstTokenMs ?? null}, prompt_tokens = ${tokens.prompt},
        completion_tokens = ${tokens.completion}, cached_tokens = ${tokens.cached}, total_tokens = ${tokens.total},
        usage_source = ${outcome.source ?? null}, flux_consumed = ${flux},
        error = ${outcome.error ?? null}, completed_at = now()
      WHERE id = ${rowId} AND state = 'pending'`
  }

  return {
    /**
     * The call's row, pending, written in the same statement as its reservation
     * (`callBilling.reserve`): without its trace a call never spends Flux. The id
     * is chosen here; the statement runs again after opening a user's first
     * account, so the insert takes the reservation that run made.
     */
    pending(call: Omit<BilledCall, 'reserved'>, kind: LlmCallKind = 'llm'): { rowId: string, alongside: Alongside } {
      const rowId = randomUUID()
      return {
        rowId,
        alongside: reserved => sql`INSERT INTO llm_request_log (id, user_id, request_id, model, kind, state, flux_reserved)
          VALUES (${rowId}, ${call.userId}, ${call.id}, ${call.alias}, ${kind}, 'pending', ${reserved})
          ON CONFLICT (id) DO UPDATE SET flux_reserved = EXCLUDED.flux_reserved WHERE llm_request_log.state = 'pending'`,
      }
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
    async complete(rowId: string, outcome: CallOutcome): Promise<void> {
      await completion(rowId, outcome)(sql<number>`${outcome.flux}::bigint`).execute(db)
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
          await callBilling.refund({ userId: row.user_id, id: row.request_id, alias: row.model, reserved: reserve.amount }, 'interrupted')
          outcome = 'refunded'
          flux = 0
        }
        else {
          // A reservation now covers the whole output cap; what the call delivered is unknown, so it pays the flat price.
          flux = Math.min(flat, reserve.amount)
          if (reserve.amount > flux)
            await callBilling.refund({ userId: row.user_id, id: row.request_id, alias: row.model, reserved: reserve.amount }, 'interrupted', { amount: reserve.amount - flux })
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
