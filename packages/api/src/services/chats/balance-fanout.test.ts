import { describe, expect, inject, it } from 'vitest'

import { startTcpProxy } from '@airi/tooling/test/tcp-proxy'
import { testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { channels } from '../../adapters/keys.ts'
import { createRedisAdapters } from '../../adapters/redis.ts'
import { silentLogger, type Logger } from '../../logger.ts'
import { createBalanceFanout, createBalanceNoticeMessage, parseBalanceNoticeMessage, type BalanceNotice } from './balance-fanout.ts'

describe('balance notice payloads', () => {
  it('round-trip through create and parse', () => {
    const value: BalanceNotice = { origin: 'instance-1', userId: 'u1', balance: 400 }
    expect(parseBalanceNoticeMessage(createBalanceNoticeMessage(value), silentLogger)).toEqual(value)
  })

  it('drops and logs malformed payloads, and create refuses to make one', () => {
    const warnings: unknown[] = []
    const logger: Logger = { ...silentLogger, warn: obj => warnings.push(obj) }
    const good = { origin: 'o', userId: 'u', balance: 1 }
    for (const raw of ['not json', '{}', JSON.stringify({ ...good, balance: -1 }), JSON.stringify({ ...good, balance: 1.5 }), JSON.stringify({ ...good, userId: '' })])
      expect(parseBalanceNoticeMessage(raw, logger)).toBeUndefined()
    expect(warnings).toHaveLength(5)
    expect(() => createBalanceNoticeMessage({ ...good, balance: -1 })).toThrow()
  })
})

describe('balance fan-out over Redis', () => {
  it('carries a notice to the other instance (not back to its sender), skips malformed ones, and retries only the newest per user while Redis refuses', async () => {
    const prefix = testRedisPrefix()
    const redisUrl = new URL(inject('redisUrl'))
    const proxy = await startTcpProxy(Number(redisUrl.port))
    const proxied = new URL(redisUrl)
    proxied.port = String(proxy.port)
    const sendingAdapters = await createRedisAdapters({ url: proxied.toString(), prefix })
    const listeningAdapters = await createRedisAdapters({ url: redisUrl.toString(), prefix })
    try {
      const sending = createBalanceFanout({ pubsub: sendingAdapters.pubsub, logger: silentLogger, retryMs: 20 })
      const listening = createBalanceFanout({ pubsub: listeningAdapters.pubsub, logger: silentLogger })
      const heard: Array<[string, number]> = []
      const ownHeard: unknown[] = []
      const stop = await listening.listen(notice => heard.push([notice.userId, notice.balance]))
      const stopOwn = await sending.listen(notice => ownHeard.push(notice))

      await listeningAdapters.pubsub.publish(channels.balance(), 'not a notice')
      await sending.publish('u1', 10)
      await until(() => heard.length === 1, 'the first notice')

      await proxy.cut()
      await sending.publish('u1', 20)
      await sending.publish('u2', 5)
      await sending.publish('u1', 30)
      await proxy.restore()
      await until(() => heard.length >= 3, 'the notices published again')
      expect(heard).toEqual([['u1', 10], ['u2', 5], ['u1', 30]])
      expect(ownHeard).toEqual([])
      await stop()
      await stopOwn()
    }
    finally {
      await proxy.close()
      await sendingAdapters.close()
      await listeningAdapters.close()
    }
  })
})
