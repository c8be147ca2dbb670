import type { ApiKeyBudgetPeriod, MeteredUsageKind, MeteredUsageStatus } from '@airi/db'

import type { AtomicCounters } from '../../adapters/ports.ts'
import { keys } from '../../adapters/keys.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Alongside, BillingService } from './ledger.ts'
import { keyBudgetExceeded } from './write.ts'

export interface MeterRuntime {
  /** Units (e.g. TTS characters) that make one Flux; rounded to a whole number of units. */
  unitsPerFlux: number
  /** How long an unsettled debt lives without activity. */
  debtTtlSeconds: number
}

/** What one metered call used, for its usage row (`metered_usage`). */
export interface MeteredCall {
  kind: MeteredUsageKind
  /** The alias the caller named. */
  model: string
  status: MeteredUsageStatus
  characters?: number
  audioMs?: number
  durationMs: number
}

/** How a streaming session's end reads on its usage row. */
export function sessionUsageStatus(end: 'finished' | 'cancelled' | 'disconnected' | 'error'): MeteredUsageStatus {
  return end === 'finished' ? 'completed' : end === 'error' ? 'failed' : 'cancelled'
}

/** The personal API key a metered call is made with: what the meter needs of its identity (a `KeyIdentity` is one). */
export interface MeterKey {
  keyId: string
  budget: { flux: number, period: ApiKeyBudgetPeriod } | null
}

/** Where the meter writes a call's usage row: in its debit's statement, or alone when nothing settled. */
export interface UsageLog {
  /** The row as part of the debit's statement; `moved` (the Flux debited) is its `flux`. Idempotent. `apiKeyId`: the key that made the call. */
  alongside: (userId: string, call: MeteredCall, apiKeyId?: string) => Alongside
  /** The row alone, with `flux` 0. */
  record: (userId: string, call: MeteredCall, apiKeyId?: string) => Promise<void>
}

export interface FluxMeterDeps {
  billing: BillingService
  counters: AtomicCounters
  logger: Logger
  /** Every call that passes its `usage` gets a row here. */
  usageLog?: UsageLog
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
  /** The call's usage row; written with the debit, so the rows add up to the ledger. */
  usage?: MeteredCall
  /**
   * The personal API key that made the call. Its units pile up in the key's own
   * debt, so every Flux they settle is the key's: its debit and usage row carry it.
   */
  apiKeyId?: string
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
 * atomic per-user debt counter (per user and personal API key for a key's calls);
 * each time it holds whole Flux, those are taken out (atomically, on Redis by a
 * Lua script) and debited through the billing service. Only whole Flux ever reach
 * the ledger.
 */
export function createFluxMeterFactory({ billing, counters, logger, usageLog }: FluxMeterDeps) {
  return function createFluxMeter({ name, resolveRuntime }: FluxMeterOptions) {
    const debtKey = (userId: string, apiKeyId?: string) => apiKeyId ? keys.fluxMeterKeyDebt(userId, name, apiKeyId) : keys.fluxMeterDebt(userId, name)
    // The debt counter works in whole units.
    const runtime = async (): Promise<MeterRuntime> => {
      const { unitsPerFlux, debtTtlSeconds } = await resolveRuntime()
      return { unitsPerFlux: Math.max(1, Math.round(unitsPerFlux)), debtTtlSeconds }
    }

    return {
      name,

      /**
       * Before calling the upstream: the user must be able to pay for what is owed
       * plus `units`. A key's call counts the key's debt; the user's other debts
       * (each below one Flux) are left out.
       */
      async assertCanAfford(userId: string, units = 0, apiKeyId?: string): Promise<void> {
        const { unitsPerFlux } = await runtime()
        const [balance, debt] = await Promise.all([billing.getBalance(userId), counters.peekDebt(debtKey(userId, apiKeyId))])
        const needed = Math.max(1, Math.ceil((debt + units) / unitsPerFlux))
        if (balance < needed)
          throw new ApiError(402, 'INSUFFICIENT_FLUX', 'Not enough Flux', { balance, requested: needed })
      },

      /**
       * Before calling the upstream with a budgeted key: what the key spent this
       * period plus its debt and `units` must stay within its budget, else 402
       * KEY_BUDGET_EXCEEDED. Its debits are owed and never refused by the budget,
       * so this is where the budget holds.
       */
      async assertWithinBudget(userId: string, apiKeyId: string, units: number): Promise<void> {
        const { unitsPerFlux } = await runtime()
        const [spend, debt] = await Promise.all([billing.keySpend(apiKeyId), counters.peekDebt(debtKey(userId, apiKeyId))])
        if (spend && spend.spent + Math.ceil((debt + units) / unitsPerFlux) > spend.budget)
          throw keyBudgetExceeded(spend.budget, spend.period)
      },

      /**
       * After the upstream call: adds `units` to the debt and debits the whole Flux
       * it settles, under `callId`. When the debit fails (or `callId` was already
       * used) the units go back, so nothing is lost or charged twice.
       */
      async accumulate({ userId, units, callId, usage, apiKeyId }: AccumulateInput): Promise<Accumulation> {
        if (!Number.isSafeInteger(units) || units < 0)
          throw new ApiError(400, 'INVALID_UNITS', 'Units must be a non-negative whole number')
        const { unitsPerFlux, debtTtlSeconds } = await runtime()
        const key = debtKey(userId, apiKeyId)
        const settlement = await counters.settleDebt(key, units, unitsPerFlux, debtTtlSeconds)
        if (settlement.settledFlux === 0) {
          if (usage && usageLog) {
            // The units stay owed and are billed with a later call: this one's row says 0 Flux.
            await usageLog.record(userId, usage, apiKeyId).catch((error: unknown) => {
              logger.error({ err: error, userId, meter: name, callId }, 'could not write the usage row of a metered call')
            })
          }
          return settlement
        }
        try {
          await billing.debit({
            userId,
            amount: settlement.settledFlux,
            requestId: `meter:${name}:${callId}`,
            description: `${name} usage`,
            metadata: { meter: name, units: settlement.settledFlux * unitsPerFlux },
            apiKeyId,
            // A replay would answer the first call's row and move nothing: those units would be lost.
            refuseReplay: true,
            alongside: usage && usageLog?.alongside(userId, usage, apiKeyId),
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

      /** Units owed by the user's session calls, or by one of the user's keys. */
      async peekDebt(userId: string, apiKeyId?: string): Promise<number> {
        return counters.peekDebt(debtKey(userId, apiKeyId))
      },
    }
  }
}
