import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { createMemoryPubSub } from '../adapters/memory.ts'
import { silentLogger } from '../logger.ts'
import { createChatFanout } from './chat-fanout.ts'
import { createChatService, type ChatMessagesEvent } from './chats.ts'

let database: TestDatabase
beforeAll(async () => {
  database = await createTestDatabase()
})
afterAll(() => database.drop())

describe('live sync without its doorbell', () => {
  it('still delivers a message whose doorbell was lost, at the next periodic re-check', async () => {
    const userId = `user-${randomUUID()}`
    await database.db.insertInto('user').values({ id: userId, name: 'U', email: `${userId}@example.com`, emailVerified: true, image: null, createdAt: new Date(), updatedAt: new Date() }).execute()

    // Two instances whose pub/sub do not reach each other: every doorbell is lost.
    const listening = createChatService({ db: database.db, fanout: createChatFanout({ pubsub: createMemoryPubSub(), logger: silentLogger }), logger: silentLogger, resyncIntervalMs: 100 })
    const sending = createChatService({ db: database.db, fanout: createChatFanout({ pubsub: createMemoryPubSub(), logger: silentLogger }), logger: silentLogger })
    const chat = await sending.create(userId, { type: 'group', members: [] })

    const controller = new AbortController()
    const received: ChatMessagesEvent[] = []
    const consuming = (async () => {
      for await (const { event } of listening.subscribe(userId, { signal: controller.signal }))
        received.push(event)
    })()

    await new Promise(resolve => setTimeout(resolve, 50))
    await sending.sendMessages(userId, { chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'rang into the void' }] })
    const deadline = Date.now() + 2000
    while (received.length === 0 && Date.now() < deadline)
      await new Promise(resolve => setTimeout(resolve, 20))

    expect(received.map(event => event.messages.map(message => message.content))).toEqual([['rang into the void']])
    controller.abort()
    await consuming
  })
})
