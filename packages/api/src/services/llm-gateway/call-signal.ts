/**
 * One call's abort signal: any of `sources` aborting (the client leaving, the
 * server shutting down) or `timeoutMs` passing. Built by hand rather than with
 * `AbortSignal.any` and `AbortSignal.timeout`: those keep the signals, their
 * listeners and all the call state these reach alive until the timer fires,
 * the whole deadline after a call that ended in milliseconds, which under
 * sustained load is the gateway's memory growth. `release()` (once the call has
 * settled) clears the timer and takes the listeners off the sources.
 */
export interface CallSignal {
  signal: AbortSignal
  /** True once the deadline, not a source, ended the call. */
  readonly timedOut: boolean
  /** Clears the timer and the listeners; call once the call has settled. */
  release: () => void
}

export function createCallSignal(sources: AbortSignal[], timeoutMs: number): CallSignal {
  const controller = new AbortController()
  let timedOut = false
  const onAbort = (event: Event) => controller.abort((event.target as AbortSignal).reason)
  const timer = setTimeout(() => {
    timedOut = true
    controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'))
  }, timeoutMs)
  // As AbortSignal.timeout: a pending deadline does not keep the process alive.
  timer.unref()

  function release(): void {
    clearTimeout(timer)
    for (const source of sources)
      source.removeEventListener('abort', onAbort)
  }

  for (const source of sources) {
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
