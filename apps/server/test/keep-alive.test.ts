import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'

import { KeepAlive, type KeptAlive } from '../src/plugins/socket-limits.ts'

/**
 * The tRPC socket's keep-alive: one timer for every socket (it used to be two
 * timers per socket, re-made on every message). Time is faked, so the 30 s waits
 * take none.
 */

function socket(): KeptAlive & { sent: string[], terminated: boolean } {
  const kept = {
    sent: [] as string[],
    terminated: false,
    lastSeen: 0,
    pingedAt: 0,
    socket: {
      send: (data: unknown) => void kept.sent.push(String(data)),
      terminate: () => void (kept.terminated = true),
    },
  }
  return kept
}

describe('the keep-alive', () => {
  beforeEach(() => {
    vi.useFakeTimers()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('pings a quiet socket after pingMs and cuts it when no answer comes within pongWaitMs', () => {
    const keepAlive = new KeepAlive(30_000, 5_000)
    const quiet = socket()
    keepAlive.add(quiet)

    vi.advanceTimersByTime(29_000)
    expect(quiet.sent).toEqual([])
    vi.advanceTimersByTime(3_500)
    expect(quiet.sent).toEqual(['PING'])
    expect(quiet.terminated).toBe(false)
    vi.advanceTimersByTime(7_500)
    expect(quiet.terminated).toBe(true)
    keepAlive.delete(quiet)
  })

  it('keeps a socket that answers, and pings it again only after another quiet pingMs', () => {
    const keepAlive = new KeepAlive(30_000, 5_000)
    const answering = socket()
    keepAlive.add(answering)

    vi.advanceTimersByTime(32_500)
    expect(answering.sent).toEqual(['PING'])
    keepAlive.heard(answering)
    vi.advanceTimersByTime(20_000)
    expect(answering.terminated).toBe(false)
    expect(answering.sent).toEqual(['PING'])
    vi.advanceTimersByTime(12_500)
    expect(answering.sent).toEqual(['PING', 'PING'])
    keepAlive.delete(answering)
  })

  it('runs its timer only while it keeps a socket', () => {
    const keepAlive = new KeepAlive(30_000, 5_000)
    const first = socket()
    const second = socket()
    keepAlive.add(first)
    keepAlive.add(second)
    expect(vi.getTimerCount()).toBe(1)
    keepAlive.delete(first)
    expect(vi.getTimerCount()).toBe(1)
    keepAlive.delete(second)
    expect(vi.getTimerCount()).toBe(0)
  })
})
