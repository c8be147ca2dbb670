import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { createTestDatabase, testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createCharacter } from './conversations-setup.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Chat lists that stay live (SPEC §4.2): a chat created, renamed or deleted, or a
 * member added or removed, reaches every subscription of each user it concerns on
 * every instance as a `chat` event; `chats.list` carries each chat's last message
 * and filters to one character's bot chats.
 */

let a: TestServer
let b: TestServer
const clients: AiriClient[] = []
const subscriptions: Array<{ unsubscribe: () => void }> = []

beforeAll(async () => {
  const database = await createTestDatabase()
  // Two instances of one deployment: one Postgres, one Redis namespace.
  const shared = { database, redisPrefix: testRedisPrefix() }
  a = await startTestServer(shared)
  b = await startTestServer(shared)
})
afterAll(async () => {
  for (const subscription of subscriptions)
    subscription.unsubscribe()
  await Promise.all(clients.map(client => client.close()))
  await Promise.all([a?.close(), b?.close()])
  await a?.database.drop()
})

function client(user: TestUser, server: TestServer = a): AiriClient {
  const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(created)
  return created
}

interface ChatEvent {
  type: 'chat'
  change: 'created' | 'updated' | 'deleted'
  chatId: string
  chat: { id: string, title: string | null, createdAt: Date, members: Array<{ type: string, id: string }> } | null
  messages: []
}

/** A device of `user` on `server`, keeping the `chat` events of its live subscription. */
async function device(user: TestUser, server: TestServer) {
  const events: Array<{ type: string }> = []
  subscriptions.push(client(user, server).chats.onMessages.subscribe(undefined, {
    onData: tracked => void events.push(tracked.data),
  }))
  await until(() => events.length > 0, 'the ready event')
  const chats = () => events.filter((event): event is ChatEvent => event.type === 'chat')
  /** Waits for the `change` of `chatId` and returns it. */
  async function next(change: ChatEvent['change'], chatId: string): Promise<ChatEvent> {
    await until(() => chats().some(event => event.change === change && event.chatId === chatId), `a ${change} event of chat ${chatId}`)
    return chats().find(event => event.change === change && event.chatId === chatId)!
  }
  return { chats, next }
}

const members = (...users: TestUser[]) => users.map(user => ({ type: 'user' as const, id: user.id }))

describe('chat events on the user\'s feed', () => {
  it('a chat created, renamed and deleted on instance A reaches the user\'s subscription on instance B', async () => {
    const alice = await createVerifiedUser(a)
    const phone = await device(alice, b)
    const sdk = client(alice)

    const chat = await sdk.chats.create.mutate({ type: 'group', title: 'Plans', members: [] })
    const created = await phone.next('created', chat.id)
    expect(created).toEqual({ type: 'chat', change: 'created', chatId: chat.id, chat, messages: [] })
    expect(created.chat!.createdAt).toBeInstanceOf(Date)

    const renamed = await sdk.chats.update.mutate({ chatId: chat.id, title: 'Trip' })
    expect(await phone.next('updated', chat.id)).toEqual({ type: 'chat', change: 'updated', chatId: chat.id, chat: renamed, messages: [] })

    await sdk.chats.delete.mutate({ chatId: chat.id })
    expect(await phone.next('deleted', chat.id)).toEqual({ type: 'chat', change: 'deleted', chatId: chat.id, chat: null, messages: [] })
    expect(phone.chats().map(event => event.change)).toEqual(['created', 'updated', 'deleted'])
  })

  it('adding a user brings them the chat and the others its new members; removing takes it away; a stranger hears nothing', async () => {
    const [alice, bob, carol] = await Promise.all([createVerifiedUser(a), createVerifiedUser(a), createVerifiedUser(a)])
    const [alicePhone, bobPhone, carolPhone] = await Promise.all([device(alice, a), device(bob, b), device(carol, b)])
    const sdk = client(alice)
    const chat = await sdk.chats.create.mutate({ type: 'group', title: 'Club', members: [] })
    await alicePhone.next('created', chat.id)

    const joined = await sdk.chats.addMembers.mutate({ chatId: chat.id, members: members(bob) })
    expect(joined.members).toEqual(members(alice, bob))
    expect((await bobPhone.next('created', chat.id)).chat).toEqual(joined)
    expect((await alicePhone.next('updated', chat.id)).chat).toEqual(joined)

    expect(await sdk.chats.removeMember.mutate({ chatId: chat.id, member: { type: 'user', id: bob.id } })).toEqual({ removed: true })
    expect(await bobPhone.next('deleted', chat.id)).toMatchObject({ chat: null })
    await until(() => alicePhone.chats().filter(event => event.change === 'updated').length === 2, 'alice\'s second update')
    expect(alicePhone.chats().at(-1)!.chat!.members).toEqual(members(alice))
    expect(bobPhone.chats().map(event => event.change)).toEqual(['created', 'deleted'])

    // A marker of carol's own, published through instance A after all of the above, arrives after it.
    const own = await client(carol).chats.create.mutate({ type: 'group', title: 'Mine', members: [] })
    await carolPhone.next('created', own.id)
    expect(carolPhone.chats().map(event => event.chatId)).toEqual([own.id])
  })
})

describe('chats.list', () => {
  it('carries each chat\'s newest message that is not deleted, cut to 500 characters, newest activity first', async () => {
    const alice = await createVerifiedUser(a)
    const sdk = client(alice)
    const talk = await sdk.chats.create.mutate({ type: 'group', title: 'Talk', members: [] })
    const empty = await sdk.chats.create.mutate({ type: 'group', title: 'Empty', members: [] })
    const [first, second] = [{ id: randomUUID(), role: 'user' as const, content: 'first' }, { id: randomUUID(), role: 'user' as const, content: 'second', metadata: { mood: 'calm' } }]
    await sdk.chats.sendMessages.mutate({ chatId: talk.id, messages: [first, second] })
    const pulled = (await sdk.chats.pullMessages.query({ chatId: talk.id })).messages

    const listed = await sdk.chats.list.query()
    expect(listed.map(chat => chat.id)).toEqual([talk.id, empty.id])
    expect(listed[0]!.lastMessage).toEqual(pulled[1])
    expect(listed[1]!.lastMessage).toBeNull()

    await sdk.chats.deleteMessages.mutate({ chatId: talk.id, messageIds: [second.id] })
    expect((await sdk.chats.list.query({})).find(chat => chat.id === talk.id)!.lastMessage).toEqual(pulled[0])

    // 600 code points of two UTF-16 units each: the cut counts code points.
    const long = { id: randomUUID(), role: 'user' as const, content: '😀'.repeat(600) }
    await sdk.chats.sendMessages.mutate({ chatId: empty.id, messages: [long] })
    const [stored] = (await sdk.chats.pullMessages.query({ chatId: empty.id })).messages
    const [newest] = await sdk.chats.list.query()
    expect(newest!.id).toBe(empty.id)
    expect(newest!.lastMessage).toEqual({ ...stored, content: '😀'.repeat(500) })
  })

  it('with characterId lists only the caller\'s bot chats that have that character', async () => {
    const alice = await createVerifiedUser(a)
    const sdk = client(alice)
    const [kiki, momo] = await Promise.all([createCharacter(sdk, {}), createCharacter(sdk, {})])
    const withKiki = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: kiki }] })
    const both = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: momo }, { type: 'character', id: kiki }] })
    const withMomo = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: momo }] })
    const group = await sdk.chats.create.mutate({ type: 'group', members: [{ type: 'character', id: kiki }] })

    expect((await sdk.chats.list.query({ characterId: kiki })).map(chat => chat.id)).toEqual([both.id, withKiki.id])
    expect((await sdk.chats.list.query({ characterId: momo })).map(chat => chat.id)).toEqual([withMomo.id, both.id])
    expect((await sdk.chats.list.query()).map(chat => chat.id)).toEqual([group.id, withMomo.id, both.id, withKiki.id])

    // Another user's bot chat with the same character is not the caller's.
    const bob = await createVerifiedUser(a)
    await client(bob).chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: kiki }] })
    expect((await sdk.chats.list.query({ characterId: kiki })).map(chat => chat.id)).toEqual([both.id, withKiki.id])
  })
})
