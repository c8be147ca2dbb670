/**
 * The time, as a dependency: services that keep TTLs or measure durations read
 * it from a `Clock` they are given, so a test advances time instead of sleeping.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch, as `Date.now()`. */
  now: () => number
}

export const systemClock: Clock = { now: () => Date.now() }

export interface ManualClock extends Clock {
  /** Moves the time forward by `ms`. */
  advance: (ms: number) => void
}

/** A clock that stands still until a test advances it; starts at `start` (now, by default). */
export function manualClock(start = Date.now()): ManualClock {
  let time = start
  return {
    now: () => time,
    advance(ms) {
      if (ms < 0)
        throw new RangeError('a clock only moves forward')
      time += ms
    },
  }
}
