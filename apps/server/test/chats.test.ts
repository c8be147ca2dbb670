import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import type { AppRouter } from '@airi/api'
import { createAiriClient, type TRPCClientError, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { startTcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser, failure } from './harness.ts'

type ChatEvent = { type: 'ready', messages: [] } | { type: 'messages', chatId: string, messages: Array<{ id: string, seq: number, content: string }>, fromSeq: number, toSeq: number }

let server: TestServer
let alice: TestUser
let bob: TestUser
let eve: TestUser
const clients: AiriClient[] = []

beforeAll(async () => {
  server = await startTestServer()
  ;[alice, bob, eve] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server), createVerifiedUser(server)])
})
afterAll(async () => {
  await Promise.all(clients.map(client => client.close()))
  await server.close()
})

function client(token?: string, baseUrl = server.baseUrl): AiriClient {
  const created = createAiriClient({ baseUrl, getToken: () => token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(created)
  return created
}

const text = (content: string) => ({ id: randomUUID(), role: 'user' as const, content })

/** Collects chat events of one subscription until stopped. */
function subscribe(sdk: AiriClient, input?: { lastEventId?: string | null }) {
  const events: Array<{ id: string, data: ChatEvent }> = []
  const errors: unknown[] = []
  const subscription = sdk.chats.onMessages.subscribe(input, {
    onData: (tracked) => { events.push(tracked as unknown as { id: string, data: ChatEvent }) },
    onError: error => errors.push(error),
  })
  const contents = () => events.flatMap(event => event.data.messages.map(message => message.content))
  const messageEvents = () => events.map(event => event.data).filter(data => data.type === 'messages')
  /** The first event (`ready`) has arrived: the client holds a position to resume from. */
  const ready = () => until(() => events.length > 0, 'the ready event')
  return { events, errors, contents, messageEvents, ready, stop: () => subscription.unsubscribe() }
}

async function groupChat(title = 'Group'): Promise<string> {
  const chat = await client(alice.token).chats.create.mutate({ type: 'group', title, members: [{ type: 'user', id: bob.id }] })
  return chat.id
}

describe('chats: authorization on every procedure', () => {
  let chatId: string
  beforeAll(async () => {
    chatId = await groupChat()
  })

  it('answers 401 without a user', async () => {
    const anonymous = client()
    const calls: Array<() => Promise<unknown>> = [
      () => anonymous.chats.list.query(),
      () => anonymous.chats.get.query({ chatId }),
      () => anonymous.chats.create.mutate({ type: 'group', members: [] }),
      () => anonymous.chats.update.mutate({ chatId, title: 'x' }),
      () => anonymous.chats.delete.mutate({ chatId }),
      () => anonymous.chats.addMembers.mutate({ chatId, members: [{ type: 'user', id: eve.id }] }),
      () => anonymous.chats.removeMember.mutate({ chatId, member: { type: 'user', id: bob.id } }),
      () => anonymous.chats.sendMessages.mutate({ chatId, messages: [text('hi')] }),
      () => anonymous.chats.pullMessages.query({ chatId }),
    ]
    for (const call of calls)
      expect((await failure(call())).data?.httpStatus).toBe(401)
    const sub = subscribe(anonymous)
    await until(() => sub.errors.length > 0)
    expect((sub.errors[0] as TRPCClientError<AppRouter>).data?.httpStatus).toBe(401)
  })

  it('answers 404 to a non-member, without revealing the chat', async () => {
    const stranger = client(eve.token)
    const calls: Array<() => Promise<unknown>> = [
      () => stranger.chats.get.query({ chatId }),
      () => stranger.chats.update.mutate({ chatId, title: 'mine now' }),
      () => stranger.chats.delete.mutate({ chatId }),
      () => stranger.chats.addMembers.mutate({ chatId, members: [{ type: 'user', id: eve.id }] }),
      () => stranger.chats.removeMember.mutate({ chatId, member: { type: 'user', id: bob.id } }),
      () => stranger.chats.sendMessages.mutate({ chatId, messages: [text('let me in')] }),
      () => stranger.chats.pullMessages.query({ chatId }),
    ]
    for (const call of calls)
      expect((await failure(call())).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    expect((await failure(stranger.chats.get.query({ chatId: 'no-such-chat' }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    expect((await stranger.chats.list.query()).map(chat => chat.id)).not.toContain(chatId)
  })

  it('answers 403 to a member who is not the creator, for creator-only operations', async () => {
    const member = client(bob.token)
    for (const call of [
      () => member.chats.update.mutate({ chatId, title: 'renamed' }),
      () => member.chats.delete.mutate({ chatId }),
      () => member.chats.addMembers.mutate({ chatId, members: [{ type: 'user', id: eve.id }] }),
      () => member.chats.removeMember.mutate({ chatId, member: { type: 'user', id: alice.id } }),
    ])
      expect((await failure(call())).data).toMatchObject({ httpStatus: 403 })
  })

  it('answers bad input with 400 naming the field', async () => {
    const sdk = client(alice.token)
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => sdk.chats.create.mutate({ type: 'nope' as 'group', members: [] }), 'type'],
      [() => sdk.chats.get.query({ chatId: '' }), 'chatId'],
      [() => sdk.chats.update.mutate({ chatId, title: 'x'.repeat(201) }), 'title'],
      [() => sdk.chats.addMembers.mutate({ chatId, members: [] }), 'members'],
      [() => sdk.chats.removeMember.mutate({ chatId, member: { type: 'robot' as 'user', id: 'x' } }), 'member.type'],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [] }), 'messages'],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [{ id: '', role: 'user', content: 'x' }] }), 'messages.0.id'],
      [() => sdk.chats.pullMessages.query({ chatId, afterSeq: -1 }), 'afterSeq'],
      [() => sdk.chats.delete.mutate({} as { chatId: string }), 'chatId'],
    ]
    for (const [call, field] of cases) {
      const error = await failure(call())
      expect(error.data?.httpStatus, field).toBe(400)
      expect(Object.keys(error.data?.fieldErrors ?? {}), field).toContain(field)
    }
    const sub = subscribe(sdk, { lastEventId: 'not-a-cursor' })
    await until(() => sub.errors.length > 0)
    expect((sub.errors[0] as TRPCClientError<AppRouter>).data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CURSOR' })
  })
})

describe('chats: lifecycle', () => {
  it('creates, lists, renames, adds and removes members, lets a member leave, and deletes', async () => {
    const owner = client(alice.token)
    const chat = await owner.chats.create.mutate({ type: 'group', title: 'Friends', members: [{ type: 'user', id: bob.id }, { type: 'user', id: bob.id }] })
    const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id)
    expect([...chat.members].sort(byId)).toEqual([{ type: 'user', id: alice.id }, { type: 'user', id: bob.id }].sort(byId))
    expect((await client(bob.token).chats.list.query()).map(c => c.id)).toContain(chat.id)

    expect((await owner.chats.update.mutate({ chatId: chat.id, title: 'Best friends' })).title).toBe('Best friends')
    expect((await owner.chats.addMembers.mutate({ chatId: chat.id, members: [{ type: 'user', id: eve.id }] })).members).toHaveLength(3)
    expect(await client(eve.token).chats.removeMember.mutate({ chatId: chat.id, member: { type: 'user', id: eve.id } })).toEqual({ removed: true })
    await failure(client(eve.token).chats.get.query({ chatId: chat.id }))
    expect(await owner.chats.removeMember.mutate({ chatId: chat.id, member: { type: 'user', id: bob.id } })).toEqual({ removed: true })
    expect((await owner.chats.get.query({ chatId: chat.id })).members).toEqual([{ type: 'user', id: alice.id }])

    await owner.chats.delete.mutate({ chatId: chat.id })
    expect((await failure(owner.chats.get.query({ chatId: chat.id }))).data?.httpStatus).toBe(404)
    expect((await owner.chats.list.query()).map(c => c.id)).not.toContain(chat.id)
  })

  it('enforces the shape of private and bot chats, and that members exist', async () => {
    const sdk = client(alice.token)
    expect((await failure(sdk.chats.create.mutate({ type: 'private', members: [] }))).data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_MEMBERS' })
    expect((await failure(sdk.chats.create.mutate({ type: 'private', members: [{ type: 'user', id: bob.id }, { type: 'user', id: eve.id }] }))).data?.apiCode).toBe('INVALID_MEMBERS')
    expect((await failure(sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'user', id: bob.id }] }))).data?.apiCode).toBe('INVALID_MEMBERS')
    expect((await failure(sdk.chats.create.mutate({ type: 'group', members: [{ type: 'user', id: 'ghost' }] }))).data).toMatchObject({ httpStatus: 400, apiCode: 'UNKNOWN_MEMBER' })
    const direct = await sdk.chats.create.mutate({ type: 'private', members: [{ type: 'user', id: bob.id }] })
    expect(direct.type).toBe('private')
    expect((await failure(sdk.chats.addMembers.mutate({ chatId: direct.id, members: [{ type: 'user', id: eve.id }] }))).data?.apiCode).toBe('INVALID_MEMBERS')
  })
})

describe('messages', () => {
  it('20 concurrent sendMessages into one chat get seqs 1..N with no gap or duplicate', async () => {
    const chatId = await groupChat('Busy')
    const senders = [client(alice.token), client(bob.token)]
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => senders[i % 2]!.chats.sendMessages.mutate({
      chatId,
      messages: i % 5 === 0 ? [text(`m${i}a`), text(`m${i}b`)] : [text(`m${i}`)],
    })))
    const total = results.reduce((sum, result) => sum + result.messages.length, 0)
    expect(total).toBe(24)
    const pulled = await client(alice.token).chats.pullMessages.query({ chatId, limit: 500 })
    expect(pulled.messages.map(message => message.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
    expect(pulled.lastSeq).toBe(total)
    // Each call got a contiguous run.
    for (const result of results)
      expect(result.toSeq - result.fromSeq + 1).toBe(result.messages.length)
  })

  it('makes a resend a no-op, and refuses an id used in another chat', async () => {
    const chatId = await groupChat('Resend')
    const sdk = client(alice.token)
    const message = text('only once')
    const first = await sdk.chats.sendMessages.mutate({ chatId, messages: [message] })
    const again = await sdk.chats.sendMessages.mutate({ chatId, messages: [message, message] })
    expect(again).toEqual(first)
    expect((await sdk.chats.pullMessages.query({ chatId })).messages).toHaveLength(1)

    const otherChat = await groupChat('Other')
    expect((await failure(sdk.chats.sendMessages.mutate({ chatId: otherChat, messages: [message] }))).data).toMatchObject({ httpStatus: 409, apiCode: 'MESSAGE_ID_CONFLICT' })
  })

  it('pulls forward from afterSeq in pages', async () => {
    const chatId = await groupChat('Pages')
    const sdk = client(bob.token)
    await sdk.chats.sendMessages.mutate({ chatId, messages: Array.from({ length: 7 }, (_, i) => text(`p${i + 1}`)) })
    const first = await sdk.chats.pullMessages.query({ chatId, afterSeq: 0, limit: 3 })
    const second = await sdk.chats.pullMessages.query({ chatId, afterSeq: first.messages.at(-1)!.seq, limit: 3 })
    const third = await sdk.chats.pullMessages.query({ chatId, afterSeq: second.messages.at(-1)!.seq, limit: 3 })
    expect([...first.messages, ...second.messages, ...third.messages].map(message => message.content)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'])
    expect(third.messages).toHaveLength(1)
  })
})

describe('live sync', () => {
  it('pushes a message to every connection of every member (phone and browser alike)', async () => {
    const chatId = await groupChat('Live')
    const alicePhone = subscribe(client(alice.token))
    const aliceBrowser = subscribe(client(alice.token))
    const bobBrowser = subscribe(client(bob.token))
    const eveBrowser = subscribe(client(eve.token))
    for (const sub of [alicePhone, aliceBrowser, bobBrowser, eveBrowser])
      await sub.ready()

    await client(alice.token).chats.sendMessages.mutate({ chatId, messages: [text('hello everyone')] })
    for (const sub of [alicePhone, aliceBrowser, bobBrowser])
      await until(() => sub.contents().includes('hello everyone'))
    expect(alicePhone.events.at(-1)!.data).toMatchObject({ type: 'messages', chatId, fromSeq: 1, toSeq: 1 })
    expect(eveBrowser.contents()).toEqual([])
    for (const sub of [alicePhone, aliceBrowser, bobBrowser, eveBrowser])
      sub.stop()
  })

  it('delivers a large message whole to every connection (its bytes are shared by their frames, sent in fragments)', async () => {
    const chatId = await groupChat('Large')
    const subs = [subscribe(client(alice.token)), subscribe(client(alice.token)), subscribe(client(bob.token))]
    for (const sub of subs)
      await sub.ready()
    // Multi-byte characters too, so a fragment boundary counted in characters instead of bytes would show.
    const content = 'é✓'.repeat(20_000) + 'x'.repeat(50_000)
    await client(alice.token).chats.sendMessages.mutate({ chatId, messages: [text(content), text('after')] })
    for (const sub of subs) {
      await until(() => sub.contents().includes('after'))
      expect(sub.contents()).toEqual([content, 'after'])
      expect(sub.messageEvents().at(-1)!.messages[0]).toMatchObject({ seq: 1 })
      sub.stop()
    }
  })

  it('replays exactly the 50 messages a subscriber missed, in order, then goes live', async () => {
    const chatId = await groupChat('Catch-up')
    const sender = client(alice.token)
    await sender.chats.sendMessages.mutate({ chatId, messages: [text('before')] })

    const first = subscribe(client(bob.token))
    await first.ready()
    await sender.chats.sendMessages.mutate({ chatId, messages: [text('seen live')] })
    await until(() => first.contents().includes('seen live'))
    const lastEventId = first.events.at(-1)!.id
    first.stop()

    for (let i = 1; i <= 50; i++)
      await sender.chats.sendMessages.mutate({ chatId, messages: [text(`missed ${i}`)] })

    const resumed = subscribe(client(bob.token), { lastEventId })
    await until(() => resumed.contents().length >= 50)
    await sender.chats.sendMessages.mutate({ chatId, messages: [text('live again')] })
    await until(() => resumed.contents().includes('live again'))
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(resumed.contents()).toEqual([...Array.from({ length: 50 }, (_, i) => `missed ${i + 1}`), 'live again'])
    const seqs = resumed.events.flatMap(event => event.data.messages.map(message => message.seq))
    expect(seqs).toEqual(Array.from({ length: 51 }, (_, i) => i + 3))
    resumed.stop()
  })

  it('resumes by itself after the connection drops: the SDK passes the last event id', async () => {
    const chatId = await groupChat('Flaky network')
    const proxy = await startTcpProxy(Number(new URL(server.baseUrl).port))
    try {
      const sub = subscribe(client(bob.token, `http://127.0.0.1:${proxy.port}`))
      const sender = client(alice.token)
      await sub.ready()
      await sender.chats.sendMessages.mutate({ chatId, messages: [text('one')] })
      await until(() => sub.contents().includes('one'))

      await proxy.cut()
      for (const content of ['two', 'three', 'four'])
        await sender.chats.sendMessages.mutate({ chatId, messages: [text(content)] })
      await proxy.restore()
      await until(() => sub.contents().includes('four'))
      await sender.chats.sendMessages.mutate({ chatId, messages: [text('five')] })
      await until(() => sub.contents().includes('five'))
      expect(sub.contents()).toEqual(['one', 'two', 'three', 'four', 'five'])
      sub.stop()
    }
    finally {
      await proxy.close()
    }
  })

  it('resumes after a drop before any message arrived: the first event already carries a position', async () => {
    const chatId = await groupChat('Dropped early')
    const proxy = await startTcpProxy(Number(new URL(server.baseUrl).port))
    try {
      const sub = subscribe(client(bob.token, `http://127.0.0.1:${proxy.port}`))
      await sub.ready()
      expect(sub.events[0]!.data).toEqual({ type: 'ready', messages: [] })

      await proxy.cut()
      await client(alice.token).chats.sendMessages.mutate({ chatId, messages: [text('while cut off')] })
      await proxy.restore()
      await until(() => sub.contents().includes('while cut off'), 'the message sent while cut off')
      expect(sub.contents()).toEqual(['while cut off'])
      sub.stop()
    }
    finally {
      await proxy.close()
    }
  })

  it('tells a subscriber about a chat created after it subscribed', async () => {
    const sub = subscribe(client(bob.token))
    await sub.ready()
    const chatId = await groupChat('Brand new')
    await client(alice.token).chats.sendMessages.mutate({ chatId, messages: [text('welcome')] })
    await until(() => sub.contents().includes('welcome'))
    expect(sub.contents()).toEqual(['welcome'])
    sub.stop()
  })
})

describe('two server instances on one Postgres and Redis', () => {
  let a: TestServer
  let b: TestServer
  beforeAll(async () => {
    const database = await createTestDatabase()
    const redisPrefix = testRedisPrefix()
    a = await startTestServer({ database, redisPrefix })
    b = await startTestServer({ database, redisPrefix })
  })
  afterAll(async () => {
    await a.close()
    await b.close()
    await a.database.drop()
  })

  it('a message sent through instance A reaches a subscriber connected to instance B', async () => {
    const sender = await createVerifiedUser(a)
    const receiver = await createVerifiedUser(a)
    const chat = await client(sender.token, a.baseUrl).chats.create.mutate({ type: 'private', members: [{ type: 'user', id: receiver.id }] })

    const sub = subscribe(client(receiver.token, b.baseUrl))
    await sub.ready()
    await client(sender.token, a.baseUrl).chats.sendMessages.mutate({ chatId: chat.id, messages: [text('across instances')] })
    await until(() => sub.contents().includes('across instances'))
    expect(sub.messageEvents()[0]).toMatchObject({ chatId: chat.id, fromSeq: 1, toSeq: 1 })
    sub.stop()
  })

  it('a send to a chat with many listening members reaches every subscription on both instances exactly once, in order', async () => {
    const users = await Promise.all(Array.from({ length: 12 }, () => createVerifiedUser(a)))
    const [owner, ...others] = users
    const chat = await client(owner!.token, a.baseUrl).chats.create.mutate({ type: 'group', members: others.map(user => ({ type: 'user' as const, id: user.id })) })
    // Two connections per member, one on each instance.
    const subs = users.flatMap(user => [a, b].map(server => subscribe(client(user.token, server.baseUrl))))
    for (const sub of subs)
      await sub.ready()

    // Small sends ride in the notice; the large one is read once per instance. Sent through both instances.
    const large = 'x'.repeat(40_000)
    const sent = ['one', 'two', large, 'four']
    for (const [index, content] of sent.entries())
      await client(users[index % users.length]!.token, (index % 2 ? b : a).baseUrl).chats.sendMessages.mutate({ chatId: chat.id, messages: [text(content)] })
    for (const sub of subs)
      await until(() => sub.contents().length >= sent.length, 'every message on every subscription')
    // Anything delivered twice would have arrived by the time one more message has.
    await client(owner!.token, a.baseUrl).chats.sendMessages.mutate({ chatId: chat.id, messages: [text('last')] })
    for (const sub of subs)
      await until(() => sub.contents().includes('last'), 'the last message')
    for (const sub of subs) {
      expect(sub.contents()).toEqual([...sent, 'last'])
      expect(sub.messageEvents().map(event => event.type === 'messages' && event.fromSeq)).toEqual([1, 2, 3, 4, 5])
      const ids = sub.events.map(event => Number(event.id))
      expect(ids).toEqual([...ids].sort((x, y) => x - y))
      expect(new Set(ids).size).toBe(ids.length)
      sub.stop()
    }
  })
})

describe('account deletion', () => {
  it('soft-deletes private and bot chats with the user\'s messages; in groups only the membership goes', async () => {
    const leaving = await createVerifiedUser(server)
    const friend = await createVerifiedUser(server)
    const [character] = await server.database.db.insertInto('characters').values({
      version: '1', cover_url: 'https://example.com/c.png', avatar_url: 'https://example.com/a.png', character_id: 'bot', creator_id: friend.id, owner_id: friend.id,
    }).returning('id').execute()
    const sdk = client(leaving.token)
    const direct = await sdk.chats.create.mutate({ type: 'private', members: [{ type: 'user', id: friend.id }] })
    const bot = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character!.id }] })
    const group = await client(friend.token).chats.create.mutate({ type: 'group', members: [{ type: 'user', id: leaving.id }] })
    for (const chatId of [direct.id, bot.id, group.id])
      await sdk.chats.sendMessages.mutate({ chatId, messages: [text(`from leaving in ${chatId}`)] })
    await client(friend.token).chats.sendMessages.mutate({ chatId: group.id, messages: [text('from friend')] })

    await server.api.services.userDeletion.run(leaving.id)
    await server.api.services.chats.deleteAllForUser(leaving.id) // idempotent

    expect((await failure(client(friend.token).chats.get.query({ chatId: direct.id }))).data?.httpStatus).toBe(404)
    const groupView = await client(friend.token).chats.get.query({ chatId: group.id })
    expect(groupView.members).toEqual([{ type: 'user', id: friend.id }])
    // Group messages stay, anonymous by nothing but a bare sender id.
    expect((await client(friend.token).chats.pullMessages.query({ chatId: group.id })).messages.map(m => m.content)).toEqual([`from leaving in ${group.id}`, 'from friend'])
    const personal = await server.database.db.selectFrom('messages').select(['chat_id', 'deleted_at']).where('chat_id', 'in', [direct.id, bot.id]).execute()
    expect(personal.every(row => row.deleted_at !== null)).toBe(true)
  })
})
