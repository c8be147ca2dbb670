import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { startTcpProxy } from '@airi/tooling/test/tcp-proxy'
import { testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { channels } from '../../adapters/keys.ts'
import { createMemoryAdapters } from '../../adapters/memory.ts'
import type { Adapters } from '../../adapters/ports.ts'
import { createRedisAdapters } from '../../adapters/redis.ts'
import type { Logger } from '../../logger.ts'
import { silentLogger } from '../../logger.ts'
import { createChatFanout, createChatSyncNoticeMessage, parseChatSyncNoticeMessage, type ChatSyncNotice, type FeedNotice } from './fanout.ts'

const notice = (chatId: string, feeds: Array<[string, number]>): Omit<FeedNotice, 'origin'> => ({ chatId, fromSeq: 1, toSeq: 1, feeds })

describe('chat sync notice payloads', () => {
  it('round-trips through create and parse, dates included', () => {
    const value: ChatSyncNotice = {
      origin: 'instance-1',
      chatId: 'c1',
      fromSeq: 3,
      toSeq: 3,
      feeds: [['u1', 7], ['u2', 1]],
      messages: [{ id: 'm', chatId: 'c1', seq: 3, senderId: 'u1', role: 'user', content: 'hi', metadata: null, createdAt: new Date('2026-01-02T03:04:05.678Z') }],
    }
    expect(parseChatSyncNoticeMessage(createChatSyncNoticeMessage(value), silentLogger)).toEqual(value)
  })

  it('drops and logs malformed payloads', () => {
    const warnings: unknown[] = []
    const logger: Logger = { ...silentLogger, warn: obj => warnings.push(obj) }
    const good = { origin: 'o', chatId: 'c', fromSeq: 1, toSeq: 1, feeds: [] }
    for (const raw of ['not json', '{}', JSON.stringify({ ...good, feeds: [['u', 0]] }), JSON.stringify({ ...good, fromSeq: 2 }), JSON.stringify({ ...good, feeds: [['u']] })])
      expect(parseChatSyncNoticeMessage(raw, logger)).toBeUndefined()
    expect(warnings).toHaveLength(5)
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

  it('carries one notice to every other instance once, not back to its sender, and skips malformed ones', async () => {
    const warnings: unknown[] = []
    const logger: Logger = { ...silentLogger, warn: obj => warnings.push(obj) }
    const a = createChatFanout({ pubsub: adapters.pubsub, logger })
    const b = createChatFanout({ pubsub: adapters.pubsub, logger })
    const heardByA: ChatSyncNotice[] = []
    const heardByB: ChatSyncNotice[] = []
    const heardByB2: ChatSyncNotice[] = []
    const stopA = await a.listen(value => heardByA.push(value))
    const stopB = await b.listen(value => heardByB.push(value))
    const stopB2 = await b.listen(value => heardByB2.push(value))

    await adapters.pubsub.publish(channels.chatSync(), 'garbage')
    await a.publish(notice('c1', [['u1', 2], ['u2', 5]]))
    await b.publish(notice('c2', [['u1', 3]]))
    await until(() => heardByB.length > 0 && heardByB2.length > 0 && heardByA.length > 0 && warnings.length >= 2, 'the notices')
    expect(heardByB).toEqual([{ ...notice('c1', [['u1', 2], ['u2', 5]]), origin: a.origin }])
    expect(heardByB2).toEqual(heardByB)
    expect(heardByA).toEqual([{ ...notice('c2', [['u1', 3]]), origin: b.origin }])

    await stopA()
    await stopB()
    await stopB2()
  })
})

describe('chat fan-out when Redis refuses a publish', () => {
  it('publishes the notice again once Redis can be reached, in order', async () => {
    const prefix = testRedisPrefix()
    const redisUrl = new URL(inject('redisUrl'))
    const proxy = await startTcpProxy(Number(redisUrl.port))
    const proxied = new URL(redisUrl)
    proxied.port = String(proxy.port)
    const sendingAdapters = await createRedisAdapters({ url: proxied.toString(), prefix })
    const listeningAdapters = await createRedisAdapters({ url: redisUrl.toString(), prefix })
    try {
      const sending = createChatFanout({ pubsub: sendingAdapters.pubsub, logger: silentLogger, retryMs: 20 })
      const listening = createChatFanout({ pubsub: listeningAdapters.pubsub, logger: silentLogger })
      const heard: string[] = []
      const stop = await listening.listen(value => heard.push(value.type === 'memory' ? value.userId : value.chatId))

      await proxy.cut()
      await sending.publish(notice('first', [['u', 1]]))
      await sending.publish(notice('second', [['u', 2]]))
      await proxy.restore()
      await until(() => heard.length >= 2, 'the notices published again')
      expect(heard).toEqual(['first', 'second'])
      await stop()
    }
    finally {
      await proxy.close()
      await sendingAdapters.close()
      await listeningAdapters.close()
    }
  })
})
