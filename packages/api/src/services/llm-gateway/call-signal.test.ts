import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'

import { createCallSignal } from './call-signal.ts'

// Fake timers: the deadlines are timers, and what a released signal must not leave behind is a pending one.
beforeEach(() => {
  vi.useFakeTimers()
})
afterEach(() => {
  vi.useRealTimers()
})

describe('call signal', () => {
  it('aborts with a TimeoutError at its deadline, and says so', () => {
    const call = createCallSignal([], 1000)
    vi.advanceTimersByTime(999)
    expect(call.signal.aborted).toBe(false)
    vi.advanceTimersByTime(1)
    expect(call.signal.aborted).toBe(true)
    expect((call.signal.reason as DOMException).name).toBe('TimeoutError')
    expect(call.timedOut).toBe(true)
  })

  it('aborts with a source, with its reason, and not as a timeout', () => {
    const client = new AbortController()
    const call = createCallSignal([client.signal], 1000)
    client.abort(new Error('client left'))
    expect(call.signal.reason).toEqual(new Error('client left'))
    expect(call.timedOut).toBe(false)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('once released keeps no timer and no longer follows its sources', () => {
    const client = new AbortController()
    const call = createCallSignal([client.signal], 1000)
    call.release()
    expect(vi.getTimerCount()).toBe(0)
    client.abort()
    expect(call.signal.aborted).toBe(false)
  })

  it('a call signal built on another is released with it', () => {
    const call = createCallSignal([], 60_000)
    const attempt = createCallSignal([call.signal], 1000)
    call.release()
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(2000)
    expect(attempt.signal.aborted).toBe(false)
  })

  it('a call signal built on another aborts with it, its own deadline or the other\'s', () => {
    const client = new AbortController()
    const call = createCallSignal([client.signal], 60_000)
    const attempt = createCallSignal([call.signal], 1000)
    vi.advanceTimersByTime(1000)
    expect(attempt.timedOut).toBe(true)
    expect(call.signal.aborted).toBe(false)

    // The call is released on its abort before `next` hears the abort event: `next` must abort all the same.
    const next = createCallSignal([call.signal], 120_000)
    vi.advanceTimersByTime(59_000)
    expect(call.timedOut).toBe(true)
    expect(next.signal.aborted).toBe(true)
    expect(next.timedOut).toBe(false)
    expect(vi.getTimerCount()).toBe(0)
  })
})
