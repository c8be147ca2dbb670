import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import { sql, type RawBuilder } from 'kysely'

import type { Alongside, BillingService } from '../billing.ts'
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
    async reserve(call: BilledCall, alongside?: Alongside): Promise<void> {
      await billing.debit({ userId: call.userId, amount: call.reserved, requestId: ledgerIds(call.id).reserve, description: `LLM call (${call.alias})`, metadata: { model: call.alias, call: call.id }, allowPartial: false, alongside })
    },

    /**
     * Charges (or refunds) the difference between the reservation and the cost of
     * `usage`; without usage the reservation stands (the flat price). Returns the
     * cost and what the ledger actually took. `log(flux)` (the request-log
     * completion) joins the ledger write's statement, `flux` being what the call
     * cost in the end; `logged` is false when no ledger write was needed and the
     * caller must write it on its own.
     */
    async settle(call: BilledCall, usage: Usage | undefined, log?: (flux: RawBuilder<number>) => RawBuilder<unknown>): Promise<{ cost: number, charged: number, logged: boolean }> {
      const { total } = tokensOf(usage)
      const cost = total === null
        ? call.reserved
        : Math.max(1, Math.ceil(total * await config.get('FLUX_PER_1K_TOKENS') / 1000))
      const difference = cost - call.reserved
      const metadata = { model: call.alias, call: call.id, tokens: total }
      const reserved = sql<number>`${call.reserved}::bigint`
      if (difference > 0) {
        // What the debit took on top of the reservation (less when the balance ran short, none when it was empty).
        const alongside: Alongside | undefined = log && (moved => log(sql<number>`${reserved} + ${moved}`))
        try {
          const entry = await billing.debit({ userId: call.userId, amount: difference, requestId: ledgerIds(call.id).settle, description: `LLM usage (${call.alias})`, metadata, alongside })
          return { cost, charged: call.reserved + entry.amount, logged: log !== undefined }
        }
        catch (error) {
          if (!(error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX'))
            throw error
          // The balance ran out during the call: what could not be charged is counted, not lost.
          metrics.fluxUnbilled.add(difference)
          logger.warn({ userId: call.userId, call: call.id, unbilled: difference }, 'LLM usage exceeded the balance')
          return { cost, charged: call.reserved, logged: log !== undefined }
        }
      }
      if (difference < 0) {
        const alongside: Alongside | undefined = log && (moved => log(sql<number>`${reserved} - ${moved}`))
        await billing.credit({ userId: call.userId, amount: -difference, requestId: ledgerIds(call.id).refund, description: `LLM reservation returned (${call.alias})`, metadata, alongside })
        return { cost, charged: cost, logged: log !== undefined }
      }
      return { cost, charged: cost, logged: false }
    },

    /** Gives the whole reservation back (nothing was delivered); `alongside` joins the credit's statement. */
    async refund(call: BilledCall, reason: string, alongside?: Alongside): Promise<void> {
      await billing.credit({ userId: call.userId, amount: call.reserved, requestId: ledgerIds(call.id).refund, description: `LLM call ${reason} (${call.alias})`, metadata: { model: call.alias, call: call.id }, alongside })
    },
  }
}

export type CallBilling = ReturnType<typeof createCallBilling>
