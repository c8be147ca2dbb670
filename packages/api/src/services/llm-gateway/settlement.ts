import type { LlmCallKind } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { BilledCall, CallBilling, ServedCost } from './billing.ts'
import type { CallOutcome, createRequestLog } from './request-log.ts'
import { reservationFor, usageCost, type CallBounds } from './reservation.ts'
import type { Upstream } from './router.ts'
import type { CallTelemetry } from './telemetry.ts'
import { countUsage, tokensOf, type MeasuredUsage, type promptOf, type TextTally, type Usage } from './usage.ts'

export interface SettlementDeps {
  requestLog: ReturnType<typeof createRequestLog>
  callBilling: CallBilling
  logger: Logger
}

/** How a call that reached an upstream was settled: what it was billed on and charged. */
export interface Settlement {
  upstream: string
  status: number
  error?: string
  /** Undefined when neither the upstream nor our count could say (the flat price). */
  usage?: Usage
  flux: number
}

export interface CallToReserve {
  userId: string
  callId: string
  alias: string
  bounds: CallBounds
  prompt: ReturnType<typeof promptOf>
  telemetry: CallTelemetry
  kind: LlmCallKind
  /**
   * Never charged more than the reservation: a call whose whole price is its
   * input, counted before it was reserved (embeddings), owes nothing for a
   * tokenizer that counts a little differently from ours.
   */
  capped?: boolean
  /**
   * The personal API key that made the call: its id goes on every row of the call,
   * and the ledger's statement keeps the reservation within the key's budget (402
   * `KEY_BUDGET_EXCEEDED`) and moves the key's counter with each of its rows.
   */
  apiKeyId?: string
}

/**
 * Reserves a call's Flux with its pending log row: nothing reaches an upstream
 * unless it can be paid for. Returns how that reservation ends (refunded or
 * settled), each end completing the log row in the same statement as its ledger
 * write. A refused reservation completes the row and throws.
 */
export async function reserveCall({ requestLog, callBilling, logger }: SettlementDeps, { userId, callId, alias, bounds, prompt, telemetry, kind, capped = false, apiKeyId }: CallToReserve) {
  const { startedAt } = telemetry
  const { logRow, alongside: pendingRow } = requestLog.pending({ userId, id: callId, alias, apiKeyId }, kind)
  const complete = (outcome: Omit<CallOutcome, 'startedAt'>) => {
    telemetry.observe(outcome)
    return requestLog.complete(logRow, { ...outcome, startedAt })
  }
  /** The log row's completion, to run in the statement of a ledger write. */
  const completion = (outcome: Omit<CallOutcome, 'startedAt' | 'flux'>) => {
    telemetry.observe(outcome)
    return requestLog.completion(logRow, { ...outcome, startedAt })
  }

  // The reservation's after-commit work (the cached balance dropped) runs while the
  // upstream is called; the call's end waits for it, so it still ends within the call.
  let reservationCommitted: Promise<void> = Promise.resolve()
  let call: BilledCall
  try {
    call = { userId, id: callId, alias, apiKeyId, reserved: await callBilling.reserve({ userId, id: callId, alias, apiKeyId }, reservationFor(bounds), pendingRow, (work) => {
      reservationCommitted = work
    }) }
  }
  catch (error) {
    await complete({ upstream: null, status: error instanceof ApiError ? error.status : 500, flux: 0, error: (error as Error).message })
      .catch((logError: unknown) => logger.error({ err: logError, call: callId }, 'could not complete the LLM request log row; it stays pending'))
    throw error
  }

  return {
    call,

    /**
     * Names the upstream that answers. Nothing of an answer reaches the client
     * unless its row does: reconciliation refunds a pending row without one
     * (nothing was delivered) and charges the flat price of one with it (something
     * may have been).
     */
    answered: (upstreamId: string) => requestLog.answered(logRow.id, upstreamId),

    /** Gives the reservation back and completes the log row, in one statement. */
    async refund(upstream: string | null, status: number, message: string): Promise<void> {
      await callBilling.refund(call, 'failed', { alongside: completion({ upstream, status, error: message })({ base: 0, sign: 0 }) })
      await reservationCommitted
    },

    /**
     * Settles on the upstream's usage, else on our count of the prompt and of
     * `tally`, at the alias's price; the log row (with `firstTextAt`, a stream's
     * first generated text) completes in the same statement as the ledger write,
     * or on its own when nothing has to move.
     */
    async settle(upstream: Upstream, usage: Usage | undefined, tally: TextTally, outcome: { status: number, error?: string }, firstTextAt?: number): Promise<Settlement> {
      let measured: MeasuredUsage | undefined = usage && { usage, source: 'upstream' }
      if (!measured) {
        measured = await countUsage(upstream.model, prompt, tally).catch((error: unknown) => {
          logger.error({ err: error, call: call.id }, 'could not count the tokens of an LLM call; it pays the flat price')
          return undefined
        })
      }
      const cost = measured ? usageCost(bounds.price, measured.usage) : bounds.flat
      const served: ServedCost = { cost: capped ? Math.min(cost, call.reserved) : cost, tokens: measured ? tokensOf(measured.usage).total : null }
      const firstTokenMs = firstTextAt === undefined ? undefined : firstTextAt - startedAt
      const logOutcome = { upstream: upstream.id, ...outcome, usage: measured?.usage, source: measured?.source ?? 'flat' as const, firstTokenMs }
      const { charged, logged } = await callBilling.settle(call, served, completion(logOutcome))
      if (!logged)
        await complete({ ...logOutcome, flux: charged })
      await reservationCommitted
      return { upstream: upstream.id, ...outcome, usage: measured?.usage, flux: charged }
    },
  }
}

export type ReservedCall = Awaited<ReturnType<typeof reserveCall>>
