import { keys } from '../../adapters/keys.ts'
import type { AtomicCounters } from '../../adapters/ports.ts'
import type { Logger } from '../../logger.ts'
import type { FluxMeter, MeterKey, MeterRuntime } from './meter.ts'

export interface MeterHoldsDeps {
  counters: AtomicCounters
  meter: FluxMeter
  /** The meter's runtime (its unitsPerFlux), read on every call like the meter does. */
  resolveRuntime: () => Promise<MeterRuntime>
  logger: Logger
  /**
   * How long a hold outlives its last change. Longer than any call holds it, so a
   * live hold never expires; a hold whose release failed goes at most this long
   * after the user's last call.
   */
  ttlSeconds?: number
}

export interface MeterHold {
  /** Call right before `meter.accumulate`: covers the whole Flux it moves out of the debt before their debit lands. */
  settling: () => Promise<void>
  /** Gives everything back. Idempotent; never throws. */
  release: () => Promise<void>
}

/**
 * Makes `assertCanAfford` safe under concurrency. On its own it is a check and a
 * later act: twenty calls checked at once all see the same balance, and together
 * spend far more than it. A hold sets a call's units aside (an atomic per-user
 * counter, `…:held`) before the check, and the check counts the debt plus every
 * hold, this call's included, so calls under way can never together promise more
 * than the balance covers.
 *
 * While a call's `accumulate` runs, the whole Flux it settles have left the debt
 * but are not yet debited; `settling()` holds one more Flux for that moment, so a
 * check running then does not miss them.
 *
 * A budgeted personal API key's call also holds its units on the key's own
 * counter, and its budget is checked the same way (`assertWithinBudget`): the
 * key's spend, its debt and every hold of the key, this call's included.
 */
export function createMeterHolds({ counters, meter, resolveRuntime, logger, ttlSeconds = 600 }: MeterHoldsDeps) {
  /** One held counter: what this call added to it, added and given back atomically. */
  function heldOn(key: string, userId: string) {
    let held = 0
    return {
      /** Adds `amount`; the counter's new total. */
      async add(amount: number): Promise<number> {
        const total = await counters.addDebt(key, amount, ttlSeconds)
        held += amount
        return total
      },
      async release(): Promise<void> {
        const amount = held
        held = 0
        if (amount > 0) {
          await counters.addDebt(key, -amount, ttlSeconds).catch((error: unknown) => {
            logger.warn({ err: error, userId, meter: meter.name, units: amount }, 'could not release a meter hold; it lapses with its TTL')
          })
        }
      },
    }
  }

  return {
    /**
     * Holds `units` for `userId` (and for `apiKey` when it has a budget), or throws
     * 402 INSUFFICIENT_FLUX when debt + holds exceed the balance, or 402
     * KEY_BUDGET_EXCEEDED when the key's spend + debt + holds exceed its budget;
     * a refused call holds nothing.
     */
    async acquire(userId: string, units: number, apiKey?: MeterKey): Promise<MeterHold> {
      const user = heldOn(keys.fluxMeterHeld(userId, meter.name), userId)
      const key = apiKey?.budget ? heldOn(keys.fluxMeterKeyHeld(userId, meter.name, apiKey.keyId), userId) : undefined
      const release = async () => {
        await Promise.all([user.release(), key?.release()])
      }

      try {
        // Each hold is added before its check reads anything, so of two concurrent calls the later one counts the other.
        const [total, keyTotal] = await Promise.all([user.add(units), key?.add(units)])
        // A hold whose release failed after its key expired can leave a counter below zero; never count less than this call.
        await meter.assertCanAfford(userId, Math.max(total, units), apiKey?.keyId)
        if (apiKey && keyTotal !== undefined)
          await meter.assertWithinBudget(userId, apiKey.keyId, Math.max(keyTotal, units))
      }
      catch (error) {
        await release()
        throw error
      }
      return {
        async settling() {
          const { unitsPerFlux } = await resolveRuntime()
          const amount = Math.max(1, Math.round(unitsPerFlux))
          await Promise.all([user.add(amount), key?.add(amount)])
        },
        release,
      }
    },
  }
}

export type MeterHolds = ReturnType<typeof createMeterHolds>
