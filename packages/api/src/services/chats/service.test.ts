import { randomUUID } from 'node:crypto'
import { setMaxListeners } from 'node:events'

import type { KyselyPlugin } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { startTcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createMemoryAdapters, createMemoryPubSub } from '../../adapters/memory.ts'
import { systemClock } from '../../clock.ts'
import { createMetrics } from '../../metrics.ts'
import { createBillingService } from '../billing/index.ts'
import { createConfigService } from '../config.ts'
import { createLlmGateway } from '../llm-gateway/index.ts'
import { createUpstreamKeyPool } from '../upstream-keys.ts'
import type { PubSub } from '../../adapters/ports.ts'
import { createRedisAdapters } from '../../adapters/redis.ts'
import { silentLogger } from '../../logger.ts'
import { createCharacterService } from '../characters/index.ts'
import { createUsers } from '../users.ts'
import { createChatFanout } from './fanout.ts'
import { createChatService, type ChatService } from './service.ts'

let database: TestDatabase
beforeAll(async () => {
  database = await createTestDatabase()
})
afterAll(() => database.drop())

/** Any event shape: what a subscriber sees of it. */
interface SeenEvent { id: string, event: { messages: Array<{ content?: string }> | Array<{ id: string }> } }

/**
 * An instance of the service. On its own in-process pub/sub unless given one: then
 * its notices reach only its own subscribers. Services sharing a pub/sub are
 * instances of one deployment.
 */
async function service(options: { resyncIntervalMs?: number, db?: TestDatabase['db'], pubsub?: PubSub, subscriptionsPerUser?: number } = {}): Promise<ChatService> {
  const db = options.db ?? database.db
  const pubsub = options.pubsub ?? createMemoryPubSub()
  // Replies are not made here (apps/server/test/conversations.test.ts does), but the service is built whole.
  const { cache } = createMemoryAdapters()
  const config = await createConfigService({ db, cache, pubsub, logger: silentLogger, clock: systemClock })
  const billing = createBillingService({ db, cache, logger: silentLogger, metrics: createMetrics(), initialFlux: () => config.get('INITIAL_USER_FLUX') })
  const gateway = createLlmGateway({ db, config, billing, metrics: createMetrics(), logger: silentLogger, keyVault: undefined, keyPool: createUpstreamKeyPool({ keyVault: undefined, logger: silentLogger, clock: systemClock }), clock: systemClock })
  return createChatService({
    db,
    characters: createCharacterService({ db }),
    users: createUsers({ db }),
    fanout: createChatFanout({ pubsub, logger: silentLogger }),
    logger: silentLogger,
    resyncIntervalMs: options.resyncIntervalMs,
    subscriptionsPerUser: options.subscriptionsPerUser,
    conversations: { gateway, config, cache, clock: systemClock },
  })
}

/** Counts the statements issued through the returned db. */
function countingDb() {
  const counter = { queries: 0 }
  const plugin: KyselyPlugin = {
    transformQuery({ node }) {
      counter.queries++
      return node
    },
    async transformResult({ result }) {
      return result
    },
  }
  return { db: database.db.withPlugin(plugin), counter }
}

async function createUser(): Promise<string> {
  const userId = `user-${randomUUID()}`
  await database.db.insertInto('user').values({ id: userId, name: 'U', email: `${userId}@example.com`, emailVerified: true, image: null, createdAt: new Date(), updatedAt: new Date() }).execute()
  return userId
}

const message = (content: string) => ({ id: randomUUID(), role: 'user', content })

/** Consumes a subscription in the background, keeping every event. */
function consume(stream: AsyncIterable<SeenEvent>) {
  const events: SeenEvent[] = []
  const done = (async () => {
    for await (const event of stream)
      events.push(event)
  })()
  const contents = () => events.flatMap(({ event }) => (event.messages as Array<{ content?: string }>).map(m => m.content))
  return { events, contents, done }
}

/**
 * Sends into `chatId` until every one of `subs` has received a message, so all are
 * live, then waits for them to receive every message sent; returns how many.
 */
async function sendUntilSeen(chats: ChatService, userId: string, chatId: string, subs: Array<ReturnType<typeof consume>>): Promise<number> {
  let sent = 0
  // A notice sent before a subscription has joined pub/sub is not seen by it: each poll sends another.
  await until(async () => {
    if (subs.every(sub => sub.contents().length > 0))
      return true
    await chats.sendMessages(userId, { chatId, messages: [message(`hello ${++sent}`)] })
    return false
  }, 'the subscriptions to receive a message', 30_000)
  await until(() => subs.every(sub => sub.contents().length >= sent), 'every message sent', 30_000)
  return sent
}

describe('live sync when pub/sub drops', () => {
  it('delivers what was sent while this instance\'s pub/sub connection was down, once it is back', async () => {
    const userId = await createUser()
    const prefix = testRedisPrefix()
    const redisUrl = new URL(inject('redisUrl'))
    // The listening instance reaches Redis through a proxy the test can cut; the sending one directly.
    const proxy = await startTcpProxy(Number(redisUrl.port))
    const proxied = new URL(redisUrl)
    proxied.port = String(proxy.port)
    const listeningAdapters = await createRedisAdapters({ url: proxied.toString(), prefix })
    const sendingAdapters = await createRedisAdapters({ url: redisUrl.toString(), prefix })
    try {
      const listening = await service({ pubsub: listeningAdapters.pubsub })
      const sending = await service({ pubsub: sendingAdapters.pubsub })
      const chat = await sending.create(userId, { type: 'group', members: [] })
      const controller = new AbortController()
      const sub = consume(await listening.subscribe(userId, { signal: controller.signal }))
      const live = await sendUntilSeen(sending, userId, chat.id, [sub])

      await proxy.cut()
      await sending.sendMessages(userId, { chatId: chat.id, messages: [message('while cut off')] })
      await proxy.restore()
      // Nothing else is sent: only the re-check after reconnecting can find it.
      await until(() => sub.contents().includes('while cut off'), 'the message sent while cut off')
      expect(sub.contents().slice(live)).toEqual(['while cut off'])
      controller.abort()
      await sub.done
    }
    finally {
      await proxy.close()
      await listeningAdapters.close()
      await sendingAdapters.close()
    }
  })
})

describe('the start of a subscription', () => {
  it('delivers a message sent right after the subscription is confirmed, before its stream is read', async () => {
    const userId = await createUser()
    const chats = await service()
    const chat = await chats.create(userId, { type: 'group', members: [] })
    await chats.sendMessages(userId, { chatId: chat.id, messages: [message('before')] })

    const controller = new AbortController()
    // tRPC confirms ('started') once it holds the stream; this is that moment.
    const stream = await chats.subscribe(userId, { signal: controller.signal })
    await chats.sendMessages(userId, { chatId: chat.id, messages: [message('in that instant')] })
    const sub = consume(stream)
    // Once anything arrives the subscription is live; probes sent after it show what it skipped.
    let probe = 0
    await until(async () => {
      if (sub.contents().length > 0)
        return true
      await chats.sendMessages(userId, { chatId: chat.id, messages: [message(`probe ${++probe}`)] })
      return false
    }, 'any message', 10_000)
    expect(sub.contents()[0]).toBe('in that instant')
    expect(sub.contents()).not.toContain('before')
    controller.abort()
    await sub.done
  })

  it('starts with a ready event carrying the position, and resumes from it with what was sent meanwhile', async () => {
    const userId = await createUser()
    const chats = await service()
    const chat = await chats.create(userId, { type: 'group', members: [] })
    await chats.sendMessages(userId, { chatId: chat.id, messages: [message('old')] })

    const first = new AbortController()
    const sub = consume(await chats.subscribe(userId, { signal: first.signal }))
    await until(() => sub.events.length > 0, 'the ready event')
    expect(sub.events[0]!.event).toEqual({ type: 'ready', messages: [] })
    first.abort()
    await sub.done

    await chats.sendMessages(userId, { chatId: chat.id, messages: [message('while away')] })
    const second = new AbortController()
    const resumed = consume(await chats.subscribe(userId, { lastEventId: sub.events[0]!.id, signal: second.signal }))
    await until(() => resumed.contents().length > 0, 'the missed message')
    expect(resumed.contents()).toEqual(['while away'])
    second.abort()
    await resumed.done
  })

  it('refuses an id that is not a position of this user\'s feed', async () => {
    const userId = await createUser()
    const chats = await service()
    for (const lastEventId of ['not-a-cursor', '-1', '1.5', '99999'])
      await expect(chats.subscribe(userId, { lastEventId })).rejects.toMatchObject({ code: 'INVALID_CURSOR', status: 400 })
  })
})

describe('membership and the feed', () => {
  it('delivers what is sent after joining a chat (not its history), and nothing of a chat the user has left', async () => {
    const [owner, joiner] = [await createUser(), await createUser()]
    const chats = await service()
    const chat = await chats.create(owner, { type: 'group', members: [] })
    await chats.sendMessages(owner, { chatId: chat.id, messages: [message('history')] })
    const own = await chats.create(joiner, { type: 'group', members: [] })

    const first = new AbortController()
    const sub = consume(await chats.subscribe(joiner, { signal: first.signal }))
    await chats.addMembers(owner, { chatId: chat.id, members: [{ type: 'user', id: joiner }] })
    await chats.sendMessages(owner, { chatId: chat.id, messages: [message('after joining')] })
    await until(() => sub.contents().includes('after joining'), 'the message after joining')
    expect(sub.contents()).toEqual(['after joining'])
    first.abort()
    await sub.done

    // In the joiner's feed, but not read before they leave.
    await chats.sendMessages(owner, { chatId: chat.id, messages: [message('before leaving')] })
    await chats.removeMember(joiner, { chatId: chat.id, member: { type: 'user', id: joiner } })
    await chats.sendMessages(owner, { chatId: chat.id, messages: [message('after leaving')] })

    const second = new AbortController()
    const resumed = consume(await chats.subscribe(joiner, { lastEventId: sub.events.at(-1)!.id, signal: second.signal }))
    await chats.sendMessages(joiner, { chatId: own.id, messages: [message('own chat')] })
    await until(() => resumed.contents().includes('own chat'), 'the message of a chat still joined')
    expect(resumed.contents()).toEqual(['own chat'])
    second.abort()
    await resumed.done
  })
})

describe('cost of live sync', () => {
  it('event ids stay a few bytes for a user in 500 chats', async () => {
    const userId = await createUser()
    const chats = await service()
    const ids = await database.db.insertInto('chats').values(Array.from({ length: 500 }, () => ({ type: 'group' as const, creator_id: userId })))
      .returning('id').execute()
    await database.db.insertInto('chat_members').values(ids.map(({ id }) => ({ chat_id: id, member_type: 'user' as const, member_id: userId }))).execute()

    const controller = new AbortController()
    const sub = consume(await chats.subscribe(userId, { signal: controller.signal }))
    await sendUntilSeen(chats, userId, ids[0]!.id, [sub])
    for (const { id } of ids.slice(1, 3))
      await chats.sendMessages(userId, { chatId: id, messages: [message(`to ${id}`)] })
    await until(() => sub.contents().length >= 3, 'two more messages')
    expect(Math.max(...sub.events.map(event => event.id.length))).toBeLessThanOrEqual(20)
    controller.abort()
    await sub.done
  })

  it('1 000 idle subscriptions issue no SQL at all, however long they wait', async () => {
    const intervalMs = 50
    const { db, counter } = countingDb()
    const listening = await service({ resyncIntervalMs: intervalMs, db })
    const sending = await service()
    const users = await Promise.all(Array.from({ length: 200 }, () => createUser()))
    const chatOf = new Map(await Promise.all(users.map(async user => [user, (await sending.create(user, { type: 'group', members: [] })).id] as const)))

    const controller = new AbortController()
    setMaxListeners(2000, controller.signal)
    const byUser = await Promise.all(users.map(async user => [user, await Promise.all(Array.from({ length: 5 }, async () => consume(await listening.subscribe(user, { signal: controller.signal }))))] as const))
    const subs = byUser.flatMap(([, own]) => own)
    expect(subs).toHaveLength(1000)
    // Every subscription has seen a message: from then on all of them are caught up and parked.
    await Promise.all(byUser.map(([user, own]) => sendUntilSeen(listening, user, chatOf.get(user)!, own)))
    const seen = subs.map(sub => sub.events.length)

    counter.queries = 0
    // Waiting, not timing: whatever ran on the resync interval has had four chances.
    const idleSince = performance.now()
    await until(() => performance.now() - idleSince > 4 * intervalMs, 'four resync intervals')
    expect(counter.queries).toBe(0)
    expect(subs.map(sub => sub.events.length)).toEqual(seen)

    controller.abort()
    await Promise.all(subs.map(sub => sub.done))
  }, 60_000)

  it('a send costs a listening instance the same SQL with 5 or 50 local subscribers: the messages are read at most once', async () => {
    async function statementsPerSend(members: number): Promise<{ small: number, large: number }> {
      const pubsub = createMemoryPubSub()
      const { db, counter } = countingDb()
      const listening = await service({ db, pubsub })
      const sending = await service({ pubsub })
      const [owner, ...others] = await Promise.all(Array.from({ length: members }, () => createUser()))
      const chat = await sending.create(owner!, { type: 'group', members: others.map(id => ({ type: 'user' as const, id })) })
      const controller = new AbortController()
      setMaxListeners(200, controller.signal)
      const subs = await Promise.all([owner!, ...others].map(async user => consume(await listening.subscribe(user, { signal: controller.signal }))))
      const live = await sendUntilSeen(sending, owner!, chat.id, subs)

      // Small enough to ride along in the notice, then too large to.
      const cost: number[] = []
      for (const content of ['small', 'large '.repeat(10_000)]) {
        counter.queries = 0
        const received = live + cost.length + 1
        await sending.sendMessages(owner!, { chatId: chat.id, messages: [message(content)] })
        await until(() => subs.every(sub => sub.contents().length >= received), `the ${content.slice(0, 5)} message`)
        cost.push(counter.queries)
      }
      for (const sub of subs)
        expect(sub.contents().slice(live)).toEqual(['small', 'large '.repeat(10_000)])
      controller.abort()
      await Promise.all(subs.map(sub => sub.done))
      return { small: cost[0]!, large: cost[1]! }
    }

    const few = await statementsPerSend(5)
    const many = await statementsPerSend(50)
    expect(many).toEqual(few)
    expect(few).toEqual({ small: 0, large: 1 })
  }, 60_000)
})

describe('live subscriptions per user (issue 20)', () => {
  it('refuses those past the cap exactly, even when they arrive at once; one that stops makes room', async () => {
    const chats = await service({ subscriptionsPerUser: 3 })
    const [userId, otherId] = [await createUser(), await createUser()]
    const controllers = Array.from({ length: 5 }, () => new AbortController())
    const results = await Promise.allSettled(controllers.map(controller => chats.subscribe(userId, { signal: controller.signal })))
    expect(results.map(result => result.status).sort()).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected'])
    for (const result of results.filter(result => result.status === 'rejected'))
      expect((result as PromiseRejectedResult).reason).toMatchObject({ status: 429, code: 'SUBSCRIPTION_LIMIT', details: { limit: 3 } })

    // Counted per user.
    const other = new AbortController()
    await chats.subscribe(otherId, { signal: other.signal })
    await expect(chats.subscribe(userId, {})).rejects.toMatchObject({ code: 'SUBSCRIPTION_LIMIT' })

    controllers[results.findIndex(result => result.status === 'fulfilled')]!.abort()
    const again = new AbortController()
    await chats.subscribe(userId, { signal: again.signal })
    for (const controller of [...controllers, other, again])
      controller.abort()
  })
})

describe('catching up on large messages (issue 20)', () => {
  it('reads the feed about 1 MiB at a time: no catch-up event holds more, in order and complete', async () => {
    const userId = await createUser()
    const chats = await service()
    const chat = await chats.create(userId, { type: 'group', members: [] })
    const first = new AbortController()
    const start = consume(await chats.subscribe(userId, { signal: first.signal }))
    await until(() => start.events.length > 0, 'the ready event')
    first.abort()
    await start.done

    // 15 sends of 100 000 characters: one run of one chat, merged into one 1.5 MB event before.
    const sent = Array.from({ length: 15 }, (_, index) => `${index}:`.padEnd(100_000, 'x'))
    for (const content of sent)
      await chats.sendMessages(userId, { chatId: chat.id, messages: [message(content)] })

    const second = new AbortController()
    const resumed = consume(await chats.subscribe(userId, { lastEventId: start.events[0]!.id, signal: second.signal }))
    await until(() => resumed.contents().length === sent.length, 'every missed message')
    expect(resumed.contents()).toEqual(sent)
    const largest = Math.max(...resumed.events.map(({ event }) => JSON.stringify(event).length))
    expect(largest).toBeLessThanOrEqual(1024 * 1024 + 101_000)
    second.abort()
    await resumed.done
  })
})
