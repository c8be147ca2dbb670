import { setTimeout as sleep } from 'node:timers/promises'

import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest'

import { testRedisPrefix } from '@airi/tooling/test/test-database'

import { createMemoryAdapters } from './memory.ts'
import type { Adapters } from './ports.ts'
import { createRedisAdapters } from './redis.ts'

const factories: Array<[string, () => Promise<Adapters>]> = [
  ['in-process', async () => createMemoryAdapters()],
  ['redis', () => createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })],
]

function nextMessage(adapters: Adapters, channel: string): { received: string[], unsubscribe: Promise<() => Promise<void>> } {
  const received: string[] = []
  return { received, unsubscribe: adapters.pubsub.subscribe(channel, message => received.push(message)) }
}

async function until(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline)
      throw new Error('condition not met in time')
    await sleep(10)
  }
}

describe.each(factories)('adapter contract: %s', (_name, create) => {
  let adapters: Adapters

  beforeAll(async () => {
    adapters = await create()
  })
  afterAll(async () => {
    await adapters.close()
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

    it('expires a value after its TTL', async () => {
      await adapters.cache.set('short', 'v', 1)
      expect(await adapters.cache.get('short')).toBe('v')
      await sleep(1100)
      expect(await adapters.cache.get('short')).toBeNull()
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
      await until(() => staying.received.length === 2)
      await sleep(50)

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
      await Promise.all([bad(), good()])
    })
  })

  describe('fixed-window counter', () => {
    it('counts hits within a window and starts over after it', async () => {
      const hits = []
      for (let i = 0; i < 3; i++)
        hits.push(await adapters.counters.hitWindow('rate:test:ip', 1))
      expect(hits.map(hit => hit.count)).toEqual([1, 2, 3])
      expect(hits[2]!.resetInMs).toBeGreaterThan(0)
      expect(hits[2]!.resetInMs).toBeLessThanOrEqual(1000)

      await sleep(1100)
      expect((await adapters.counters.hitWindow('rate:test:ip', 1)).count).toBe(1)
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
      await adapters.counters.settleDebt('meter:d', 40, 100, 1)
      expect(await adapters.counters.peekDebt('meter:d')).toBe(40)
      await sleep(1100)
      expect(await adapters.counters.peekDebt('meter:d')).toBe(0)
    })
  })

  it('answers its readiness ping', async () => {
    await expect(adapters.ping()).resolves.toBeUndefined()
  })
})
