import type { AtomicCounters } from '../../adapters/ports.ts'
import { keys } from '../../adapters/keys.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { BillingService } from './ledger.ts'

export interface MeterRuntime {
  /** Units (e.g. TTS characters) that make one Flux; rounded to a whole number of units. */
  unitsPerFlux: number
  /** How long an unsettled debt lives without activity. */
  debtTtlSeconds: number
}

export interface FluxMeterDeps {
  billing: BillingService
  counters: AtomicCounters
  logger: Logger
}

export interface FluxMeterOptions {
  /** Names the meter in its Redis key and in ledger request ids (e.g. `tts`). */
  name: string
  /** Read on every call, so a config change applies to the next request. */
  resolveRuntime: () => Promise<MeterRuntime>
}

export interface AccumulateInput {
  userId: string
  /** Usage of this call, in whole units (e.g. TTS characters). */
  units: number
  /**
   * Names this one call; the Flux it settles are debited under it. Unique per call:
   * a request that meters several times (a stream, chunk by chunk) passes
   * `${requestId}:${n}`. A reused id is refused (409 REQUEST_ID_REUSED) and its
   * units stay owed, so nothing is lost; a call is not retried by repeating it.
   */
  callId: string
}

export interface Accumulation {
  /** Whole Flux settled by this call and debited. */
  settledFlux: number
  /** Units still owed, below one Flux. */
  debt: number
}

export type FluxMeter = ReturnType<ReturnType<typeof createFluxMeterFactory>>

/**
 * Bills usage that comes in units smaller than one Flux. Units pile up in an
 * atomic per-user debt counter; each time it holds whole Flux, those are taken
 * out (atomically, on Redis by a Lua script) and debited through the billing
 * service. Only whole Flux ever reach the ledger.
 */
export function createFluxMeterFactory({ billing, counters, logger }: FluxMeterDeps) {
  return function createFluxMeter({ name, resolveRuntime }: FluxMeterOptions) {
    const debtKey = (userId: string) => keys.fluxMeterDebt(userId, name)
    // The debt counter works in whole units.
    const runtime = async (): Promise<MeterRuntime> => {
      const { unitsPerFlux, debtTtlSeconds } = await resolveRuntime()
      return { unitsPerFlux: Math.max(1, Math.round(unitsPerFlux)), debtTtlSeconds }
    }

    return {
      name,

      /** Before calling the upstream: the user must be able to pay for what is owed plus `units`. */
      async assertCanAfford(userId: string, units = 0): Promise<void> {
        const { unitsPerFlux } = await runtime()
        const [balance, debt] = await Promise.all([billing.getBalance(userId), counters.peekDebt(debtKey(userId))])
        const needed = Math.max(1, Math.ceil((debt + units) / unitsPerFlux))
        if (balance < needed)
          throw new ApiError(402, 'INSUFFICIENT_FLUX', 'Not enough Flux', { balance, requested: needed })
      },

      /**
       * After the upstream call: adds `units` to the debt and debits the whole Flux
       * it settles, under `callId`. When the debit fails (or `callId` was already
       * used) the units go back, so nothing is lost or charged twice.
       */
      async accumulate({ userId, units, callId }: AccumulateInput): Promise<Accumulation> {
        if (!Number.isSafeInteger(units) || units < 0)
          throw new ApiError(400, 'INVALID_UNITS', 'Units must be a non-negative whole number')
        const { unitsPerFlux, debtTtlSeconds } = await runtime()
        const key = debtKey(userId)
        const settlement = await counters.settleDebt(key, units, unitsPerFlux, debtTtlSeconds)
        if (settlement.settledFlux === 0)
          return settlement
        try {
          await billing.debit({
            userId,
            amount: settlement.settledFlux,
            requestId: `meter:${name}:${callId}`,
            description: `${name} usage`,
            metadata: { meter: name, units: settlement.settledFlux * unitsPerFlux },
            // A replay would answer the first call's row and move nothing: those units would be lost.
            refuseReplay: true,
          })
          return settlement
        }
        catch (error) {
          await counters.addDebt(key, settlement.settledFlux * unitsPerFlux, debtTtlSeconds).catch((restoreError: unknown) => {
            logger.error({ err: restoreError, userId, meter: name, units: settlement.settledFlux * unitsPerFlux }, 'could not put meter units back after a failed debit')
          })
          throw error
        }
      },

      async peekDebt(userId: string): Promise<number> {
        return counters.peekDebt(debtKey(userId))
      },
    }
  }
}
