/**
 * One call's abort signal: any of `sources` aborting (the client leaving, the
 * server shutting down) or `timeoutMs` passing. Built by hand rather than with
 * `AbortSignal.any` and `AbortSignal.timeout`: those keep the signals, their
 * listeners and all the call state these reach alive until the timer fires,
 * the whole deadline after a call that ended in milliseconds, which under
 * sustained load is the gateway's memory growth. `release()` (once the call has
 * settled) clears the timer and takes the listeners off the sources.
 *
 * A call signal built on another (one upstream attempt within a call) is
 * released with it too, so a part of a call that has no settling of its own
 * (an attempt whose answer is read to its end by the caller) holds nothing once
 * the call has settled.
 */
export interface CallSignal {
  signal: AbortSignal
  /** True once the deadline, not a source, ended the call. */
  readonly timedOut: boolean
  /** Clears the timer and the listeners (and those of call signals built on this one); call once the call has settled. */
  release: () => void
}

/** For each call signal, what the call signals built on it do when it is released. */
const dependents = new WeakMap<AbortSignal, Set<(released: AbortSignal) => void>>()

export function createCallSignal(sources: AbortSignal[], timeoutMs: number): CallSignal {
  const controller = new AbortController()
  const ownDependents = new Set<(released: AbortSignal) => void>()
  dependents.set(controller.signal, ownDependents)
  let timedOut = false
  let released = false
  const onAbort = (event: Event) => controller.abort((event.target as AbortSignal).reason)
  const timer = setTimeout(() => {
    timedOut = true
    controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'))
  }, timeoutMs)
  // As AbortSignal.timeout: a pending deadline does not keep the process alive.
  timer.unref()
  // A source released on its abort may tell us before its abort event does: abort then, not just release.
  const follow = (source: AbortSignal) => (source.aborted ? controller.abort(source.reason) : release())

  function release(): void {
    if (released)
      return
    released = true
    clearTimeout(timer)
    for (const source of sources) {
      source.removeEventListener('abort', onAbort)
      dependents.get(source)?.delete(follow)
    }
    for (const dependent of [...ownDependents])
      dependent(controller.signal)
  }

  for (const source of sources) {
    dependents.get(source)?.add(follow)
    if (source.aborted) {
      controller.abort(source.reason)
      break
    }
    source.addEventListener('abort', onAbort, { once: true })
  }
  if (controller.signal.aborted)
    release()
  else
    controller.signal.addEventListener('abort', release, { once: true })

  return {
    signal: controller.signal,
    get timedOut() {
      return timedOut
    },
    release,
  }
}
