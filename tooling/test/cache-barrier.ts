import type { Cache } from '@airi/api'

export interface CacheBarrier {
  /** Pass this to the service under test instead of the real cache. */
  cache: Cache
  /**
   * Arms the barrier: the next write-back (`set` or `fill`) waits before reaching
   * the real cache. `reached` resolves when it is waiting; `release` lets it go on.
   */
  pauseNextWrite: () => { reached: Promise<void>, release: () => void }
}

/**
 * Wraps a real cache adapter so a test can stop a reader between its Postgres read
 * and its cache write-back, run a writer, then let the reader finish: the
 * interleaving a cache race needs, forced instead of hoped for.
 */
export function cacheBarrier(inner: Cache): CacheBarrier {
  let armed: { arrive: () => void, released: Promise<void> } | undefined

  async function passBarrier(): Promise<void> {
    const barrier = armed
    armed = undefined
    if (barrier) {
      barrier.arrive()
      await barrier.released
    }
  }

  return {
    cache: {
      ...inner,
      async set(...args) {
        await passBarrier()
        return inner.set(...args)
      },
      async fill(...args) {
        await passBarrier()
        return inner.fill(...args)
      },
    },
    pauseNextWrite() {
      let arrive!: () => void
      let release!: () => void
      const reached = new Promise<void>(resolve => (arrive = resolve))
      const released = new Promise<void>(resolve => (release = resolve))
      armed = { arrive, released }
      return { reached, release }
    },
  }
}
