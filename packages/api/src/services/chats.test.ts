import { randomUUID } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'

import type { KyselyPlugin } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { createMemoryPubSub } from '../adapters/memory.ts'
import { silentLogger } from '../logger.ts'
import { createChatFanout } from './chat-fanout.ts'
import { createChatService, type ChatService } from './chats.ts'

let database: TestDatabase
beforeAll(async () => {
  database = await createTestDatabase()
})
afterAll(() => database.drop())

/** Any event shape: what a subscriber sees of it. */
interface SeenEvent { id: string, event: { messages: Array<{ content: string }> } }

/** A service on its own in-process pub/sub: its doorbells reach only its own subscribers. */
function service(options: { resyncIntervalMs?: number, db?: TestDatabase['db'] } = {}): ChatService {
  return createChatService({ db: options.db ?? database.db, fanout: createChatFanout({ pubsub: createMemoryPubSub(), logger: silentLogger }), logger: silentLogger, resyncIntervalMs: options.resyncIntervalMs })
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
  const contents = () => events.flatMap(({ event }) => event.messages.map(m => m.content))
  return { events, contents, done }
}

/**
 * Sends into `chatId` until every one of `subs` has received a message, so all are
 * live, then waits for them to receive every message sent; returns how many.
 */
async function sendUntilSeen(chats: ChatService, userId: string, chatId: string, subs: Array<ReturnType<typeof consume>>): Promise<number> {
  const deadline = Date.now() + 30_000
  let sent = 0
  while (!subs.every(sub => sub.contents().length > 0)) {
    if (Date.now() > deadline)
      throw new Error('timed out waiting for the subscriptions to receive a message')
    await chats.sendMessages(userId, { chatId, messages: [message(`hello ${++sent}`)] })
    await sleep(50)
  }
  await until(() => subs.every(sub => sub.contents().length >= sent), 'every message sent', 30_000)
  return sent
}

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

describe('live sync without its doorbell', () => {
  it('still delivers a message whose doorbell was lost, at the next periodic re-check', async () => {
    const userId = await createUser()
    // Two instances whose pub/sub do not reach each other: every doorbell is lost.
    const listening = service({ resyncIntervalMs: 100 })
    const sending = service()
    const chat = await sending.create(userId, { type: 'group', members: [] })

    const controller = new AbortController()
    // No need to wait for the subscription: its start position is fixed once it resolves.
    const sub = consume(await listening.subscribe(userId, { signal: controller.signal }))
    await sending.sendMessages(userId, { chatId: chat.id, messages: [message('rang into the void')] })
    await until(() => sub.contents().length > 0, 'the re-check to find the message')

    expect(sub.contents()).toEqual(['rang into the void'])
    controller.abort()
    await sub.done
  })
})

describe('the start of a subscription', () => {
  it('delivers a message sent right after the subscription is confirmed, before its stream is read', async () => {
    const userId = await createUser()
    const chats = service()
    const chat = await chats.create(userId, { type: 'group', members: [] })
    await chats.sendMessages(userId, { chatId: chat.id, messages: [message('before')] })

    const controller = new AbortController()
    // tRPC confirms ('started') once it holds the stream; this is that moment.
    const stream = await chats.subscribe(userId, { signal: controller.signal })
    await chats.sendMessages(userId, { chatId: chat.id, messages: [message('in that instant')] })
    const sub = consume(stream)
    // Once anything arrives the subscription is live; probes sent after it show what it skipped.
    const deadline = Date.now() + 10_000
    for (let probe = 1; sub.contents().length === 0; probe++) {
      if (Date.now() > deadline)
        throw new Error('timed out waiting for any message')
      await chats.sendMessages(userId, { chatId: chat.id, messages: [message(`probe ${probe}`)] })
      await sleep(20)
    }
    expect(sub.contents()[0]).toBe('in that instant')
    expect(sub.contents()).not.toContain('before')
    controller.abort()
    await sub.done
  })

  it('starts with a ready event carrying the position, and resumes from it with what was sent meanwhile', async () => {
    const userId = await createUser()
    const chats = service()
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
    const chats = service()
    for (const lastEventId of ['not-a-cursor', '-1', '1.5', '99999'])
      await expect(chats.subscribe(userId, { lastEventId })).rejects.toMatchObject({ code: 'INVALID_CURSOR', status: 400 })
  })
})

describe('membership and the feed', () => {
  it('delivers what is sent after joining a chat (not its history), and nothing of a chat the user has left', async () => {
    const [owner, joiner] = [await createUser(), await createUser()]
    const chats = service()
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
    const chats = service()
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

  it('1 000 idle subscriptions cost one re-check query per interval on the instance, not one per connection', async () => {
    let queries = 0
    const counting: KyselyPlugin = {
      transformQuery({ node }) {
        queries++
        return node
      },
      async transformResult({ result }) {
        return result
      },
    }
    const intervalMs = 50
    const listening = service({ resyncIntervalMs: intervalMs, db: database.db.withPlugin(counting) })
    const sending = service()
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

    queries = 0
    const idleSince = performance.now()
    await until(() => queries >= 3, 'three re-check queries')
    const elapsed = performance.now() - idleSince
    // setInterval never fires more often than its interval: slowness only lowers this.
    const mostTicks = Math.floor(elapsed / intervalMs) + 1
    expect(queries).toBeLessThanOrEqual(mostTicks)
    expect(subs.map(sub => sub.events.length)).toEqual(seen)

    controller.abort()
    await Promise.all(subs.map(sub => sub.done))
  }, 60_000)
})
