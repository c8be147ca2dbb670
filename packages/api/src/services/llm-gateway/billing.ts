import type { Logger } from '../../logger.ts'
import type { Alongside, BillingService } from '../billing/index.ts'
import type { FluxFromMoved } from './request-log.ts'

/** One gateway call as billing sees it. Its ledger rows are `llm:{id}:reserve|settle|refund`. */
export interface BilledCall {
  userId: string
  id: string
  alias: string
  /** What the reservation took: the most the call may be served for. */
  reserved: number
  /** The personal API key that made the call: every ledger row of the call carries it. */
  apiKeyId?: string
}

export const ledgerIds = (callId: string) => ({
  reserve: `llm:${callId}:reserve`,
  settle: `llm:${callId}:settle`,
  refund: `llm:${callId}:refund`,
})

/** What a call was served for: its cost in Flux, and the tokens it was priced on (null: the flat price). */
export interface ServedCost {
  cost: number
  tokens: number | null
}

/**
 * Reservation, settlement and refund of gateway calls through the billing
 * service. Each write has its own request id derived from the call's, so a
 * retried or repeated settlement can never move Flux twice.
 */
export function createCallBilling({ billing, logger }: { billing: BillingService, logger: Logger }) {
  return {
    /**
     * Reserves `wanted`, or the whole balance when it is less but at least
     * `least`; else 402 and nothing reaches an upstream. Returns what was taken.
     */
    async reserve(call: Omit<BilledCall, 'reserved'>, { wanted, least }: { wanted: number, least: number }, alongside?: Alongside, afterCommit?: (work: Promise<void>) => void): Promise<number> {
      const entry = await billing.debit({ userId: call.userId, amount: wanted, atLeast: least, requestId: ledgerIds(call.id).reserve, description: `LLM call (${call.alias})`, metadata: { model: call.alias, call: call.id }, apiKeyId: call.apiKeyId, alongside, afterCommit })
      return entry.amount
    },

    /**
     * Settles the call on what it was served for: refunds what the reservation
     * took beyond the cost, or charges the rest. Usage past the reservation (an
     * upstream that ignored max_tokens, a prompt we counted short) is charged
     * while the balance lasts and the remainder is written on the settlement row
     * as `unbilled`, never only counted. `log(flux)` (the request-log completion)
     * joins the ledger write's statement, `flux` being what the call was charged;
     * `logged` is false when nothing had to move, and the caller completes the
     * row on its own.
     */
    async settle(call: BilledCall, { cost, tokens }: ServedCost, log?: (flux: FluxFromMoved) => Alongside): Promise<{ charged: number, unbilled: number, logged: boolean }> {
      const difference = cost - call.reserved
      const metadata = { model: call.alias, call: call.id, tokens, cost }
      if (difference > 0) {
        // What the debit took on top of the reservation (less when the balance ran short, none when it was empty).
        const alongside = log?.({ base: call.reserved, sign: 1 })
        const entry = await billing.debit({ userId: call.userId, amount: difference, served: true, requestId: ledgerIds(call.id).settle, description: `LLM usage (${call.alias})`, metadata, apiKeyId: call.apiKeyId, alongside })
        const unbilled = difference - entry.amount
        if (unbilled > 0)
          logger.warn({ userId: call.userId, call: call.id, unbilled }, 'LLM usage exceeded the reservation and the balance; the rest is recorded as unbilled')
        return { charged: call.reserved + entry.amount, unbilled, logged: log !== undefined }
      }
      if (difference < 0) {
        const alongside = log?.({ base: call.reserved, sign: -1 })
        await billing.credit({ userId: call.userId, amount: -difference, requestId: ledgerIds(call.id).refund, description: `LLM reservation returned (${call.alias})`, metadata, apiKeyId: call.apiKeyId, alongside })
        return { charged: cost, unbilled: 0, logged: log !== undefined }
      }
      return { charged: cost, unbilled: 0, logged: false }
    },

    /** Gives back `amount` of the reservation (all of it by default: nothing was delivered); `alongside` joins the credit's statement. */
    async refund(call: BilledCall, reason: string, { amount = call.reserved, alongside }: { amount?: number, alongside?: Alongside } = {}): Promise<void> {
      await billing.credit({ userId: call.userId, amount, requestId: ledgerIds(call.id).refund, description: `LLM call ${reason} (${call.alias})`, metadata: { model: call.alias, call: call.id }, apiKeyId: call.apiKeyId, alongside })
    },
  }
}

export type CallBilling = ReturnType<typeof createCallBilling>
