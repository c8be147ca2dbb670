import { setTimeout as sleep } from 'node:timers/promises'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { testRedisPrefix } from '@airi/tooling/test/test-database'

import { channels } from '../adapters/keys.ts'
import { createMemoryAdapters } from '../adapters/memory.ts'
import type { Adapters } from '../adapters/ports.ts'
import { createRedisAdapters } from '../adapters/redis.ts'
import type { Logger } from '../logger.ts'
import { silentLogger } from '../logger.ts'
import { createChatDoorbellMessage, createChatFanout, parseChatDoorbellMessage, type ChatDoorbell } from './chat-fanout.ts'

describe('chat doorbell payloads', () => {
  it('round-trips through create and parse', () => {
    const bell = { head: 5 }
    expect(parseChatDoorbellMessage(createChatDoorbellMessage(bell), silentLogger)).toEqual(bell)
  })

  it('drops and logs malformed payloads', () => {
    const warnings: unknown[] = []
    const logger: Logger = { ...silentLogger, warn: obj => warnings.push(obj) }
    for (const raw of ['not json', '{}', '{"head":0}', '{"head":1.5}', '{"head":"1"}'])
      expect(parseChatDoorbellMessage(raw, logger)).toBeUndefined()
    expect(warnings).toHaveLength(5)
  })

  it('refuses to create a malformed payload', () => {
    expect(() => createChatDoorbellMessage({ head: 0 })).toThrow()
  })
})

describe.each([
  ['in-process', async () => createMemoryAdapters()],
  ['redis', () => createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })],
] as Array<[string, () => Promise<Adapters>]>)('chat fan-out (%s)', (_name, create) => {
  let adapters: Adapters
  beforeAll(async () => {
    adapters = await create()
  })
  afterAll(() => adapters.close())

  it('rings every local listener of each user once with their latest head, skips malformed rings, and unsubscribes when the last listener leaves', async () => {
    const warnings: unknown[] = []
    const fanout = createChatFanout({ pubsub: adapters.pubsub, logger: { ...silentLogger, warn: obj => warnings.push(obj) } })
    const phone: ChatDoorbell[] = []
    const browser: ChatDoorbell[] = []
    const other: ChatDoorbell[] = []
    const stopPhone = await fanout.listen('u1', bell => phone.push(bell))
    const stopBrowser = await fanout.listen('u1', bell => browser.push(bell))
    const stopOther = await fanout.listen('u2', bell => other.push(bell))
    expect(fanout.listeningUsers()).toBe(2)

    await adapters.pubsub.publish(channels.chatBroadcast('u1'), 'garbage')
    await fanout.ring([['u1', 2], ['u1', 3]])
    const deadline = Date.now() + 2000
    while ((phone.length < 1 || browser.length < 1) && Date.now() < deadline)
      await sleep(10)
    await sleep(50)
    expect(phone).toEqual([{ head: 3 }])
    expect(browser).toEqual(phone)
    expect(other).toEqual([])
    expect(warnings).toHaveLength(1)

    // A re-check rings this instance's listeners only, without pub/sub.
    expect(fanout.listeningUserIds().sort()).toEqual(['u1', 'u2'])
    fanout.ringHere('u2', { head: 7 })
    expect(other).toEqual([{ head: 7 }])

    await stopPhone()
    await stopBrowser()
    await stopOther()
    expect(fanout.listeningUsers()).toBe(0)
  })
})
