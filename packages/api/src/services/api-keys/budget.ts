import { sql } from 'kysely'

import type { ApiKeyBudgetPeriod, Db } from '@airi/db'

import type { Clock } from '../../clock.ts'
import { ApiError } from '../../errors.ts'

/** A key's budget as a call carries it (from the key's identity). */
export interface BudgetedKey {
  keyId: string
  budget: { flux: number, period: ApiKeyBudgetPeriod } | null
}

/** When a budget period that contains `now` began (UTC); the epoch for 'total'. */
export function periodStart(period: ApiKeyBudgetPeriod, now: Date): Date {
  if (period === 'day')
    return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()))
  if (period === 'month')
    return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1))
  return new Date(0)
}

/** What a claim took from a key's budget, to be corrected once the call's cost is known. */
export interface BudgetClaim {
  keyId: string
  periodStart: Date
  flux: number
}

export type KeyBudgets = ReturnType<typeof createKeyBudgets>

/**
 * Budgets of personal API keys (SPEC §4.17), enforced before any upstream call: a
 * call claims its reservation from `api_key_spend` (the key's running total for the
 * period) in one conditional upsert under the row's lock, so concurrent calls
 * cannot pass the budget together; the claim is then moved to what the ledger
 * actually took, settled or gave back. The ledger rows (which carry the key's id)
 * are what a key spent; this total only guards the budget, and after a crash
 * between a ledger write and its correction it errs on the side of refusing.
 */
export function createKeyBudgets({ db, clock }: { db: Db, clock: Clock }) {
  return {
    /**
     * Takes `wanted` from the key's budget, or what is left of it when that is less
     * but at least `least`; else 402 `KEY_BUDGET_EXCEEDED` and nothing is taken.
     * Undefined for a key without a budget.
     */
    async claim(key: BudgetedKey, { wanted, least }: { wanted: number, least: number }): Promise<BudgetClaim | undefined> {
      if (!key.budget)
        return undefined
      const start = periodStart(key.budget.period, new Date(clock.now()))
      const budget = key.budget.flux
      const refused = () => new ApiError(402, 'KEY_BUDGET_EXCEEDED', `This API key has spent its budget of ${budget} Flux for this ${key.budget!.period === 'total' ? 'key' : key.budget!.period}; raise it with a new key or wait for the next period`, { budget, period: key.budget!.period })
      if (budget < least)
        throw refused()
      // One statement (one round trip): the period's first claim inserts, the next ones update under the row's lock.
      const { rows } = await sql<{ claimed: string }>`INSERT INTO api_key_spend AS s (api_key_id, period_start, flux, last_claim)
        VALUES (${key.keyId}, ${start}, LEAST(${wanted}::bigint, ${budget}::bigint), LEAST(${wanted}::bigint, ${budget}::bigint))
        ON CONFLICT (api_key_id, period_start) DO UPDATE
          SET flux = s.flux + LEAST(${wanted}::bigint, ${budget}::bigint - s.flux), last_claim = LEAST(${wanted}::bigint, ${budget}::bigint - s.flux)
          WHERE ${budget}::bigint - s.flux >= ${least}::bigint
        RETURNING s.last_claim AS claimed`.execute(db)
      if (rows.length === 0)
        throw refused()
      return { keyId: key.keyId, periodStart: start, flux: Number(rows[0]!.claimed) }
    },

    /** Moves a claim by `delta` (what the ledger took beyond it, or gave back below it). */
    async adjust(claim: BudgetClaim, delta: number): Promise<void> {
      if (delta === 0)
        return
      await db.updateTable('api_key_spend').set({ flux: sql`greatest(0, flux + ${delta}::bigint)` })
        .where('api_key_id', '=', claim.keyId).where('period_start', '=', claim.periodStart).execute()
    },
  }
}
