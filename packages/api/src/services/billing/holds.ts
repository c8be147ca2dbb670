import { keys } from '../../adapters/keys.ts'
import type { AtomicCounters } from '../../adapters/ports.ts'
import type { Logger } from '../../logger.ts'
import type { FluxMeter, MeterRuntime } from './meter.ts'

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
 */
export function createMeterHolds({ counters, meter, resolveRuntime, logger, ttlSeconds = 600 }: MeterHoldsDeps) {
  return {
    /** Holds `units` for `userId`, or throws 402 INSUFFICIENT_FLUX (holding nothing) when debt + holds exceed the balance. */
    async acquire(userId: string, units: number): Promise<MeterHold> {
      const key = keys.fluxMeterHeld(userId, meter.name)
      let held = 0
      const add = async (amount: number) => {
        await counters.addDebt(key, amount, ttlSeconds)
        held += amount
      }
      const release = async () => {
        const amount = held
        held = 0
        if (amount > 0) {
          await counters.addDebt(key, -amount, ttlSeconds).catch((error: unknown) => {
            logger.warn({ err: error, userId, meter: meter.name, units: amount }, 'could not release a meter hold; it lapses with its TTL')
          })
        }
      }

      const total = await counters.addDebt(key, units, ttlSeconds)
      held = units
      try {
        // A hold whose release failed after its key expired can leave the counter below zero; never count less than this call.
        await meter.assertCanAfford(userId, Math.max(total, units))
      }
      catch (error) {
        await release()
        throw error
      }
      return {
        async settling() {
          const { unitsPerFlux } = await resolveRuntime()
          await add(Math.max(1, Math.round(unitsPerFlux)))
        },
        release,
      }
    },
  }
}

export type MeterHolds = ReturnType<typeof createMeterHolds>
