import { randomUUID } from 'node:crypto'
import { createServer } from 'node:net'

import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest'

import { startTcpProxy } from '@airi/tooling/test/tcp-proxy'
import { testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { manualClock } from '../clock.ts'
import { createMemoryAdapters } from './memory.ts'
import type { AdapterHooks, Adapters } from './ports.ts'
import { createRedisAdapters } from './redis.ts'

interface Subject {
  adapters: Adapters
  /** Lets the TTL of `key`, set to `ttlSeconds`, run out (each factory says how). */
  outlive: (key: string, ttlSeconds: number) => Promise<void>
  close: () => Promise<void>
}

const factories: Array<[string, (hooks?: AdapterHooks) => Promise<Subject>]> = [
  // In process, TTLs run on the adapter's clock: moved past the TTL, nothing waits.
  ['in-process', async (hooks) => {
    const clock = manualClock()
    const adapters = createMemoryAdapters({ ...hooks, clock })
    return {
      adapters,
      outlive: async (_key, ttlSeconds) => clock.advance(ttlSeconds * 1000 + 1),
      close: () => adapters.close(),
    }
  }],
  // Redis keeps its own time: check it holds the key with that TTL, then let it
  // run out at once (PEXPIRE 1) instead of waiting it out.
  ['redis', async (hooks) => {
    const url = inject('redisUrl')
    const prefix = testRedisPrefix()
    const adapters = await createRedisAdapters({ url, prefix, ...hooks })
    const inspector = new Redis(url)
    return {
      adapters,
      async outlive(key, ttlSeconds) {
        const ttlMs = await inspector.pttl(prefix + key)
        expect(ttlMs, `TTL of ${key}`).toBeGreaterThan((ttlSeconds - 1) * 1000)
        expect(ttlMs, `TTL of ${key}`).toBeLessThanOrEqual(ttlSeconds * 1000)
        await inspector.pexpire(prefix + key, 1)
        await until(async () => await inspector.exists(prefix + key) === 0, `${key} to expire`)
      },
      async close() {
        await adapters.close()
        await inspector.quit()
      },
    }
  }],
]

/** A `beforeSubscribe` hook whose outcome a test decides per channel: pass, fail, or wait for release. */
function subscribeGate() {
  const calls: string[] = []
  const rules = new Map<string, () => Promise<void>>()
  return {
    calls,
    hooks: {
      beforeSubscribe: async (channel: string) => {
        calls.push(channel)
        const rule = rules.get(channel)
        rules.delete(channel)
        await rule?.()
      },
    } satisfies AdapterHooks,
    /** The next subscribe of `channel` fails with `error`. */
    refuse(channel: string, error: Error): void {
      rules.set(channel, async () => {
        throw error
      })
    },
    /** The next subscribe of `channel` waits until `settle` is called (with an error: fails). */
    hold(channel: string): { settle: (error?: Error) => void } {
      let settle!: (error?: Error) => void
      const settled = new Promise<void>((resolve, reject) => {
        settle = error => (error ? reject(error) : resolve())
      })
      rules.set(channel, () => settled)
      return { settle }
    },
  }
}

/** A promise and whether it has settled yet. */
function track<T>(promise: Promise<T>): { promise: Promise<T>, settled: () => boolean } {
  let settled = false
  promise.then(() => (settled = true), () => (settled = true))
  return { promise, settled: () => settled }
}

/** Lets every already-queued callback run (a message delivery, a premature resolution). */
const drain = () => new Promise(resolve => setImmediate(resolve))

function nextMessage(adapters: Adapters, channel: string): { received: string[], unsubscribe: Promise<() => Promise<void>> } {
  const received: string[] = []
  return { received, unsubscribe: adapters.pubsub.subscribe(channel, message => received.push(message)) }
}

describe.each(factories)('adapter contract: %s', (_name, create) => {
  let subject: Subject
  let adapters: Adapters

  beforeAll(async () => {
    subject = await create()
    adapters = subject.adapters
  })
  afterAll(async () => {
    await subject.close()
  })

  describe('cache', () => {
    it('returns null for a missing key and the value after set', async () => {
      expect(await adapters.cache.get('missing')).toBeNull()
      await adapters.cache.set('a', 'one')
      expect(await adapters.cache.get('a')).toBe('one')
    })

    it('overwrites and deletes several keys at once', async () => {
      await adapters.cache.set('b', '1')
      await adapters.cache.set('c', '2')
      await adapters.cache.set('b', '3')
      expect(await adapters.cache.get('b')).toBe('3')
      await adapters.cache.del('b', 'c')
      expect(await adapters.cache.get('b')).toBeNull()
      expect(await adapters.cache.get('c')).toBeNull()
    })

    it('take hands a value to exactly one of many concurrent callers and leaves nothing behind', async () => {
      const key = `take:${randomUUID()}`
      await adapters.cache.set(key, 'ticket', 60)
      const taken = await Promise.all(Array.from({ length: 20 }, () => adapters.cache.take(key)))
      expect(taken.filter(value => value === 'ticket')).toHaveLength(1)
      expect(taken.filter(value => value === null)).toHaveLength(19)
      expect(await adapters.cache.get(key)).toBeNull()
      expect(await adapters.cache.take(key)).toBeNull()
    })

    it('take does not return an expired value', async () => {
      const key = `take:${randomUUID()}`
      await adapters.cache.set(key, 'v', 2)
      await subject.outlive(key, 2)
      expect(await adapters.cache.take(key)).toBeNull()
    })

    it('expires a value after its TTL', async () => {
      await adapters.cache.set('short', 'v', 2)
      expect(await adapters.cache.get('short')).toBe('v')
      await subject.outlive('short', 2)
      expect(await adapters.cache.get('short')).toBeNull()
    })
  })

  describe('guarded cache entries', () => {
    it('a miss is filled with the version its read returned, and then read back', async () => {
      const miss = await adapters.cache.read('g:a')
      expect(miss.value).toBeNull()
      expect(await adapters.cache.fill('g:a', 'one', miss.version, 60)).toBe(true)
      expect((await adapters.cache.read('g:a')).value).toBe('one')
    })

    it('refuses a fill read before an invalidation, on a missing key and on an invalidated one', async () => {
      const before = await adapters.cache.read('g:b')
      await adapters.cache.invalidate('g:b', 60)
      expect(await adapters.cache.fill('g:b', 'old', before.version, 60)).toBe(false)
      expect((await adapters.cache.read('g:b')).value).toBeNull()

      const between = await adapters.cache.read('g:b')
      await adapters.cache.invalidate('g:b', 60)
      expect(await adapters.cache.fill('g:b', 'old', between.version, 60)).toBe(false)

      const after = await adapters.cache.read('g:b')
      expect(await adapters.cache.fill('g:b', 'new', after.version, 60)).toBe(true)
      expect((await adapters.cache.read('g:b')).value).toBe('new')
    })

    it('keeps the first of two fills of one version, and an invalidation drops the value', async () => {
      const miss = await adapters.cache.read('g:c')
      expect(await adapters.cache.fill('g:c', 'first', miss.version, 60)).toBe(true)
      expect(await adapters.cache.fill('g:c', 'second', miss.version, 60)).toBe(false)
      expect((await adapters.cache.read('g:c')).value).toBe('first')
      await adapters.cache.invalidate('g:c', 60)
      expect((await adapters.cache.read('g:c')).value).toBeNull()
      await adapters.cache.del('g:c')
      expect(await adapters.cache.read('g:c')).toEqual(miss)
    })

    it('forgets a filled value after its TTL', async () => {
      const miss = await adapters.cache.read('g:d')
      expect(await adapters.cache.fill('g:d', 'v', miss.version, 2)).toBe(true)
      expect((await adapters.cache.read('g:d')).value).toBe('v')
      await subject.outlive('g:d', 2)
      expect((await adapters.cache.read('g:d')).value).toBeNull()
    })
  })

  describe('pub/sub', () => {
    it('delivers to every subscriber of a channel, in order, and not to other channels', async () => {
      const first = nextMessage(adapters, 'ch:1')
      const second = nextMessage(adapters, 'ch:1')
      const other = nextMessage(adapters, 'ch:2')
      await Promise.all([first.unsubscribe, second.unsubscribe, other.unsubscribe])

      for (const message of ['m1', 'm2', 'm3'])
        await adapters.pubsub.publish('ch:1', message)
      await until(() => first.received.length === 3 && second.received.length === 3)

      expect(first.received).toEqual(['m1', 'm2', 'm3'])
      expect(second.received).toEqual(['m1', 'm2', 'm3'])
      expect(other.received).toEqual([])
      await Promise.all([first, second, other].map(async s => (await s.unsubscribe)()))
    })

    it('stops delivering to an unsubscribed handler while others keep receiving', async () => {
      const leaving = nextMessage(adapters, 'ch:3')
      const staying = nextMessage(adapters, 'ch:3')
      const unsubscribe = await leaving.unsubscribe
      await staying.unsubscribe

      await adapters.pubsub.publish('ch:3', 'before')
      await until(() => leaving.received.length === 1 && staying.received.length === 1)
      await unsubscribe()
      await adapters.pubsub.publish('ch:3', 'after')
      // Both handlers are called from the one delivery, so `leaving` would have it by now.
      await until(() => staying.received.length === 2)

      expect(leaving.received).toEqual(['before'])
      expect(staying.received).toEqual(['before', 'after'])
      await (await staying.unsubscribe)()
    })

    it('keeps delivering when one handler throws', async () => {
      const received: string[] = []
      const bad = await adapters.pubsub.subscribe('ch:4', () => {
        throw new Error('handler failure')
      })
      const good = await adapters.pubsub.subscribe('ch:4', message => received.push(message))
      await adapters.pubsub.publish('ch:4', 'x')
      await until(() => received.length === 1)
      expect(received).toEqual(['x'])
      await Promise.all([bad(), good()])
    })
  })

  describe('pub/sub subscribe confirmation', () => {
    let gatedSubject: Subject
    let gated: Adapters
    let gate: ReturnType<typeof subscribeGate>

    beforeAll(async () => {
      gate = subscribeGate()
      gatedSubject = await create(gate.hooks)
      gated = gatedSubject.adapters
    })
    afterAll(async () => {
      await gatedSubject.close()
    })

    it('a refused subscribe rejects, leaves nothing behind, and the next subscribe tries again', async () => {
      gate.refuse('ch:refused', new Error('refused'))
      await expect(gated.pubsub.subscribe('ch:refused', () => {})).rejects.toThrow('refused')

      const received: string[] = []
      const unsubscribe = await gated.pubsub.subscribe('ch:refused', message => received.push(message))
      expect(gate.calls.filter(channel => channel === 'ch:refused')).toHaveLength(2)
      await gated.pubsub.publish('ch:refused', 'after')
      await until(() => received.length === 1)
      expect(received).toEqual(['after'])
      await unsubscribe()
    })

    it('concurrent subscribers all wait for the one confirmation, and all fail with it', async () => {
      const held = gate.hold('ch:held')
      const first = track(gated.pubsub.subscribe('ch:held', () => {}))
      const second = track(gated.pubsub.subscribe('ch:held', () => {}))
      await until(() => gate.calls.includes('ch:held'))
      await drain()
      expect(first.settled()).toBe(false)
      expect(second.settled()).toBe(false)

      held.settle(new Error('refused'))
      await expect(first.promise).rejects.toThrow('refused')
      await expect(second.promise).rejects.toThrow('refused')
      expect(gate.calls.filter(channel => channel === 'ch:held')).toHaveLength(1)

      // Nothing was left behind: the next subscriber subscribes again and receives.
      const received: string[] = []
      const unsubscribe = await gated.pubsub.subscribe('ch:held', message => received.push(message))
      await gated.pubsub.publish('ch:held', 'm')
      await until(() => received.length === 1)
      await unsubscribe()
    })

    it('a second subscriber resolves only once the channel is confirmed, and then receives', async () => {
      const held = gate.hold('ch:slow')
      const firstReceived: string[] = []
      const secondReceived: string[] = []
      const first = track(gated.pubsub.subscribe('ch:slow', message => firstReceived.push(message)))
      const second = track(gated.pubsub.subscribe('ch:slow', message => secondReceived.push(message)))
      await until(() => gate.calls.includes('ch:slow'))
      await drain()
      expect(second.settled()).toBe(false)

      held.settle()
      const unsubscribeSecond = await second.promise
      // Published the moment the second subscribe resolved: both must get it.
      await gated.pubsub.publish('ch:slow', 'first message')
      await until(() => firstReceived.length === 1 && secondReceived.length === 1)
      await Promise.all([unsubscribeSecond(), (await first.promise)()])
    })
  })

  describe('fixed-window counter', () => {
    it('counts hits within a window and starts over after it', async () => {
      const hits = []
      for (let i = 0; i < 3; i++)
        hits.push(await adapters.counters.hitWindow('rate:test:ip', 2))
      expect(hits.map(hit => hit.count)).toEqual([1, 2, 3])
      expect(hits[2]!.resetInMs).toBeGreaterThan(1000)
      expect(hits[2]!.resetInMs).toBeLessThanOrEqual(2000)

      await subject.outlive('rate:test:ip', 2)
      expect((await adapters.counters.hitWindow('rate:test:ip', 2)).count).toBe(1)
    })

    it('counts concurrent hits exactly', async () => {
      const hits = await Promise.all(Array.from({ length: 200 }, () => adapters.counters.hitWindow('rate:test:burst', 60)))
      expect(hits.map(hit => hit.count).sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
    })
  })

  describe('meter debt', () => {
    it('settles whole Flux and keeps the remainder below one Flux', async () => {
      expect(await adapters.counters.settleDebt('meter:a', 250, 100, 60)).toEqual({ settledFlux: 2, debt: 50 })
      expect(await adapters.counters.settleDebt('meter:a', 30, 100, 60)).toEqual({ settledFlux: 0, debt: 80 })
      expect(await adapters.counters.settleDebt('meter:a', 20, 100, 60)).toEqual({ settledFlux: 1, debt: 0 })
      expect(await adapters.counters.peekDebt('meter:a')).toBe(0)
    })

    it('puts units back without settling, and reads 0 for no debt', async () => {
      expect(await adapters.counters.peekDebt('meter:none')).toBe(0)
      expect(await adapters.counters.addDebt('meter:b', 150, 60)).toBe(150)
      expect(await adapters.counters.peekDebt('meter:b')).toBe(150)
      expect(await adapters.counters.settleDebt('meter:b', 0, 100, 60)).toEqual({ settledFlux: 1, debt: 50 })
    })

    it('settles concurrent accumulations exactly', async () => {
      const units = Array.from({ length: 300 }, (_, i) => (i * 37) % 90 + 1)
      const results = await Promise.all(units.map(u => adapters.counters.settleDebt('meter:c', u, 100, 60)))
      const total = units.reduce((sum, u) => sum + u, 0)
      const settled = results.reduce((sum, r) => sum + r.settledFlux, 0)
      expect(settled).toBe(Math.floor(total / 100))
      expect(await adapters.counters.peekDebt('meter:c')).toBe(total % 100)
    })

    it('lets the debt expire after its TTL', async () => {
      await adapters.counters.settleDebt('meter:d', 40, 100, 2)
      expect(await adapters.counters.peekDebt('meter:d')).toBe(40)
      await subject.outlive('meter:d', 2)
      expect(await adapters.counters.peekDebt('meter:d')).toBe(0)
    })
  })

  it('answers its readiness ping', async () => {
    await expect(adapters.ping()).resolves.toBeUndefined()
  })
})

describe('redis adapter: a channel the server refuses', () => {
  it('concurrent subscribers all reject, and once allowed the channel subscribes and delivers', async () => {
    const url = inject('redisUrl')
    const prefix = testRedisPrefix()
    const admin = new Redis(url)
    const user = `limited-${randomUUID()}`
    // A user that may use every key and command but only the channels under `open:`.
    await admin.call('ACL', 'SETUSER', user, 'on', '>secret', '~*', '+@all', 'resetchannels', `&${prefix}open:*`)
    const withUser = new URL(url)
    withUser.username = user
    withUser.password = 'secret'
    const adapters = await createRedisAdapters({ url: withUser.toString(), prefix })
    try {
      const outcomes = await Promise.allSettled([
        adapters.pubsub.subscribe('closed', () => {}),
        adapters.pubsub.subscribe('closed', () => {}),
      ])
      expect(outcomes.map(outcome => outcome.status)).toEqual(['rejected', 'rejected'])

      await admin.call('ACL', 'SETUSER', user, `&${prefix}closed`)
      const received: string[] = []
      const unsubscribe = await adapters.pubsub.subscribe('closed', message => received.push(message))
      await adapters.pubsub.publish('closed', 'now allowed')
      await until(() => received.length === 1)
      await unsubscribe()
    }
    finally {
      await adapters.close()
      await admin.call('ACL', 'DELUSER', user)
      await admin.quit()
    }
  })
})

describe('redis adapter: the pub/sub connection drops and comes back', () => {
  it('tells onDown once per outage (and a listener added during it at once), then onResubscribed once the channels are in force again; not on close', async () => {
    const redisUrl = new URL(inject('redisUrl'))
    const proxy = await startTcpProxy(Number(redisUrl.port))
    const proxied = new URL(redisUrl)
    proxied.port = String(proxy.port)
    const prefix = testRedisPrefix()
    const adapters = await createRedisAdapters({ url: proxied.toString(), prefix })
    const publisher = await createRedisAdapters({ url: redisUrl.toString(), prefix })
    const log: string[] = []
    try {
      const received: string[] = []
      await adapters.pubsub.subscribe('doorbell', message => received.push(message))
      adapters.pubsub.onDown!(() => log.push('down'))
      adapters.pubsub.onResubscribed!(() => log.push('resubscribed'))

      await proxy.cut()
      await until(() => log.length > 0, 'onDown', 10_000)
      // Reconnects that fail while it stays down (the port accepts and hangs up) are still the one outage.
      let attempts = 0
      const refuser = createServer((socket) => {
        attempts++
        socket.destroy()
      })
      await new Promise<void>(resolve => refuser.listen(proxy.port, '127.0.0.1', resolve))
      await until(() => attempts >= 3, 'three failed reconnects', 10_000)
      await new Promise(resolve => refuser.close(resolve))
      expect(log).toEqual(['down'])
      const late: string[] = []
      adapters.pubsub.onDown!(() => late.push('down'))
      await until(() => late.length > 0)

      await proxy.restore()
      await until(() => log.length > 1, 'onResubscribed', 10_000)
      expect(log).toEqual(['down', 'resubscribed'])
      // In force by the time it was told: a message published now arrives.
      await publisher.pubsub.publish('doorbell', 'after')
      await until(() => received.includes('after'))
    }
    finally {
      await adapters.close()
      await publisher.close()
      await proxy.close()
    }
    expect(log).toEqual(['down', 'resubscribed'])
  })
})

describe('in-process adapter bounds', () => {
  it('holds at most maxEntries cache entries and rate-limit windows, dropping the least recently used', async () => {
    const adapters = createMemoryAdapters({ maxEntries: 10 })
    for (let i = 0; i < 20; i++) {
      await adapters.cache.set(`k:${i}`, String(i), 3600)
      await adapters.counters.hitWindow(`rate:test:${i}`, 3600)
    }
    expect(await adapters.cache.get('k:0')).toBeNull()
    expect(await adapters.cache.get('k:19')).toBe('19')
    // The oldest window was dropped, so it starts over; the newest still counts.
    expect((await adapters.counters.hitWindow('rate:test:0', 3600)).count).toBe(1)
    expect((await adapters.counters.hitWindow('rate:test:19', 3600)).count).toBe(2)
  })

  it('never drops a meter debt for room', async () => {
    const adapters = createMemoryAdapters({ maxEntries: 10 })
    for (let i = 0; i < 50; i++)
      await adapters.counters.addDebt(`meter:${i}`, i + 1, 3600)
    expect(await adapters.counters.peekDebt('meter:0')).toBe(1)
    expect(await adapters.counters.peekDebt('meter:49')).toBe(50)
  })
})
