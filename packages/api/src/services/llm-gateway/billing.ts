import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import type { BillingService } from '../billing.ts'
import type { ConfigService } from '../config.ts'
import { tokensOf, type Usage } from './usage.ts'

/** One gateway call as billing sees it. Its ledger rows are `llm:{id}:reserve|settle|refund`. */
export interface BilledCall {
  userId: string
  id: string
  alias: string
  reserved: number
}

export const ledgerIds = (callId: string) => ({
  reserve: `llm:${callId}:reserve`,
  settle: `llm:${callId}:settle`,
  refund: `llm:${callId}:refund`,
})

/**
 * Reservation, settlement and refund of gateway calls through the billing
 * service. Each write has its own request id derived from the call's, so a
 * retried or repeated settlement can never move Flux twice.
 */
export function createCallBilling({ billing, config, metrics, logger }: { billing: BillingService, config: ConfigService, metrics: Metrics, logger: Logger }) {
  return {
    /** Takes the whole reservation or refuses with 402; nothing reaches an upstream unpaid. */
    async reserve(call: BilledCall): Promise<void> {
      await billing.debit({ userId: call.userId, amount: call.reserved, requestId: ledgerIds(call.id).reserve, description: `LLM call (${call.alias})`, metadata: { model: call.alias, call: call.id }, allowPartial: false })
    },

    /**
     * Charges (or refunds) the difference between the reservation and the cost of
     * `usage`; without usage the reservation stands (the flat price). Returns the
     * cost and what the ledger actually took.
     */
    async settle(call: BilledCall, usage: Usage | undefined): Promise<{ cost: number, charged: number }> {
      const { total } = tokensOf(usage)
      const cost = total === null
        ? call.reserved
        : Math.max(1, Math.ceil(total * await config.get('FLUX_PER_1K_TOKENS') / 1000))
      const difference = cost - call.reserved
      const metadata = { model: call.alias, call: call.id, tokens: total }
      if (difference > 0) {
        try {
          const entry = await billing.debit({ userId: call.userId, amount: difference, requestId: ledgerIds(call.id).settle, description: `LLM usage (${call.alias})`, metadata })
          return { cost, charged: call.reserved + entry.amount }
        }
        catch (error) {
          if (!(error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX'))
            throw error
          // The balance ran out during the call: what could not be charged is counted, not lost.
          metrics.fluxUnbilled.add(difference)
          logger.warn({ userId: call.userId, call: call.id, unbilled: difference }, 'LLM usage exceeded the balance')
          return { cost, charged: call.reserved }
        }
      }
      if (difference < 0)
        await billing.credit({ userId: call.userId, amount: -difference, requestId: ledgerIds(call.id).refund, description: `LLM reservation returned (${call.alias})`, metadata })
      return { cost, charged: cost }
    },

    /** Gives the whole reservation back (nothing was delivered). */
    async refund(call: BilledCall, reason: string): Promise<void> {
      await billing.credit({ userId: call.userId, amount: call.reserved, requestId: ledgerIds(call.id).refund, description: `LLM call ${reason} (${call.alias})`, metadata: { model: call.alias, call: call.id } })
    },
  }
}

export type CallBilling = ReturnType<typeof createCallBilling>
