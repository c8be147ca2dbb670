import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { FluxMeter, MeteredCall, MeterHold, MeterHolds } from '../billing/index.ts'

export interface SessionBillingDeps {
  userId: string
  /** Names the session's one debit on the meter. */
  callId: string
  meter: FluxMeter
  holds: MeterHolds
  log: Logger
  /** The session billed `ms` milliseconds (more than 0). */
  onBilled: (ms: number) => void
}

/**
 * What one session holds and bills on the `stt` meter: milliseconds are held
 * ahead of the audio (so parallel sessions and REST calls cannot together
 * promise more than the balance), and the session is billed once, at its end.
 */
export function createSessionBilling({ userId, callId, meter, holds, log, onBilled }: SessionBillingDeps) {
  const held: MeterHold[] = []
  let heldMs = 0
  let settled = false

  return {
    /** Milliseconds held so far. */
    get heldMs(): number {
      return heldMs
    },

    /**
     * Holds `needed` more milliseconds, `step` at once when the balance allows so a
     * session asks rarely; throws 402 INSUFFICIENT_FLUX when not even `needed` is covered.
     */
    async holdMore(needed: number, step = needed): Promise<void> {
      let ms = Math.max(needed, step)
      let hold: MeterHold
      try {
        hold = await holds.acquire(userId, ms)
      }
      catch (error) {
        // Near the end of the balance, exactly what this frame needs may still be covered.
        if (!(error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX') || ms === needed)
          throw error
        ms = needed
        hold = await holds.acquire(userId, ms)
      }
      // The session may have been billed (and its holds released) while this one was taken.
      if (settled)
        return hold.release()
      held.push(hold)
      heldMs += ms
    },

    /** Bills `units` milliseconds (with `usage`, the session's usage row) and releases every hold; answers the whole Flux debited. Once. */
    async settle(units: number, usage?: MeteredCall): Promise<number> {
      settled = true
      try {
        if (units <= 0)
          return 0
        await held.at(-1)?.settling().catch((error: unknown) => log.warn({ err: error }, 'could not hold the settling Flux of a transcription session'))
        const { settledFlux } = await meter.accumulate({ userId, units, callId, usage })
        onBilled(units)
        return settledFlux
      }
      catch (error) {
        // The audio was transcribed; a failed debit keeps its units owed on the meter.
        log.error({ err: error, units }, 'could not bill a streaming transcription session')
        return 0
      }
      finally {
        await Promise.all(held.splice(0).map(hold => hold.release()))
      }
    },
  }
}
