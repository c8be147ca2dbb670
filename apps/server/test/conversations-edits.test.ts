import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'
import type { FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { until } from '@airi/tooling/test/until'

import { botChat as botChatWith, createCharacter as createCharacterWith, replyEnded, startConversationDeployment, type ConversationDeployment, type Message } from './conversations-setup.ts'
import { badRequestFields, createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Replies made on the server, after the fact (issue 22, docs/conversations.md):
 * regenerate and retry, edits and deletions as live and replayed feed entries, the
 * greeting a bot chat starts with, and the refusals and checks of every new
 * procedure. Two instances of one deployment and a fake LLM upstream;
 * conversations.test.ts has streaming, the prompt, stop, idempotence, upstream
 * failures, the ledger, and replies outliving their client or instance.
 */

const INITIAL = 100
const GREETING = 'Hello! I am Airi. What shall we talk about?'

let deployment: ConversationDeployment
let llm: FakeUpstream
let a: TestServer
let b: TestServer
let author: TestUser
let plain: string
let greeter: string

beforeAll(async () => {
  deployment = await startConversationDeployment({ chat: 'gpt-4o-mini' })
  ;({ llm, a, b } = deployment)
  author = await createVerifiedUser(a)
  plain = await createCharacter(author, [{ language: 'en', type: 'system', content: 'You are a plain helper.' }])
  greeter = await createCharacter(author, [
    { language: 'en', type: 'system', content: 'You are Airi.' },
    { language: 'en', type: 'greetings', content: GREETING },
    { language: 'zh-Hans', type: 'greetings', content: '你好！我是爱莉。' },
  ])
})
afterAll(() => deployment?.close())

const client = (token: string | undefined, server: TestServer = a): AiriClient => deployment.client(token, server)

type Prompt = Parameters<AiriClient['characters']['create']['mutate']>[0]['prompts']

const createCharacter = (owner: TestUser, prompts: Prompt) => createCharacterWith(client(owner.token), {
  i18n: [{ language: 'en', name: 'Airi', description: '' }, { language: 'zh-Hans', name: '爱莉', description: '' }],
  prompts,
})

const botChat = (user: TestUser, character = plain) => botChatWith(client(user.token), character)

interface ChatEvent { type: string, chatId?: string, messages: Array<{ id: string, chatId: string, seq: number, content?: string }> }

/** A device of `user` on `server`, keeping every event (and its id, to resume from) in order. */
async function device(user: TestUser, server: TestServer, name: string, lastEventId?: string) {
  const sdk = client(user.token, server)
  const events: Array<{ id: string, data: ChatEvent }> = []
  const errors: unknown[] = []
  const subscription = sdk.chats.onMessages.subscribe(lastEventId ? { lastEventId } : undefined, {
    onData: tracked => void events.push(tracked as unknown as { id: string, data: ChatEvent }),
    onError: error => errors.push(error),
  })
  await until(() => events.length > 0, `the first event on ${name}`)
  const ofType = (type: string) => events.map(event => event.data).filter(data => data.type === type)
  return {
    sdk,
    events,
    errors,
    ofType,
    /** Every message content any event carried. */
    contents: () => events.flatMap(event => event.data.messages.map(message => message.content)),
    /** Waits for an event of `type` that carries every one of `ids`. */
    async carried(type: string, ids: string[]): Promise<ChatEvent> {
      const find = () => ofType(type).find(data => ids.every(id => data.messages.some(message => message.id === id)))
      await until(() => find() !== undefined, `a ${type} event with ${ids.join(', ')} on ${name}`)
      return find()!
    },
    lastId: () => events.at(-1)!.id,
    stop: () => subscription.unsubscribe(),
  }
}

async function messagesOf(sdk: AiriClient, chatId: string, afterSeq = 0): Promise<Message[]> {
  return (await sdk.chats.pullMessages.query({ chatId, afterSeq, limit: 500 })).messages as Message[]
}

type UpstreamBody = { messages: Array<{ role: string, content: string }> }

/** One turn; answers the user message, the ended reply, its stored message and what the upstream was sent. */
async function turn(sdk: AiriClient, chatId: string, content: string) {
  const seen = llm.requests.length
  const { message, reply } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content } })
  const ended = await replyEnded(sdk, chatId, reply.id)
  const stored = (await messagesOf(sdk, chatId)).find(candidate => candidate.id === ended.messageId)
  return { message, replyId: reply.id, ended, stored, body: llm.requests[seen]?.body as UpstreamBody | undefined }
}

/** Every row of the user's ledger but the first (`initial`) one. */
async function spendingRows(userId: string) {
  return a.database.db.selectFrom('flux_transaction').select(['type', 'amount', 'request_id']).where('user_id', '=', userId).where('type', '!=', 'initial').orderBy('seq').execute()
}

const balanceOf = (user: TestUser) => a.api.services.billing.getBalance(user.id)

const rejectedWith4xx = async (promise: Promise<unknown>) => {
  const status = (await failure(promise)).data?.httpStatus ?? 0
  expect(status >= 400 && status < 500, `status ${status}`).toBe(true)
}

describe('regenerate', () => {
  it('answers the same user message again: a new message with metadata.regenerates; the old one stays', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token)
    const chatId = await botChat(user)
    llm.behave(() => ({ kind: 'complete', content: 'First take.' }))
    const first = await turn(sdk, chatId, 'Tell me a joke.')
    expect(first.stored).toBeDefined()

    llm.behave(() => ({ kind: 'complete', content: 'Second take.' }))
    const seen = llm.requests.length
    const { reply } = await client(user.token, b).chats.regenerate.mutate({ chatId, messageId: first.stored!.id })
    expect(await replyEnded(sdk, chatId, reply.id)).toMatchObject({ status: 'complete', text: 'Second take.' })
    // The prompt answers the user message again: it ends with it.
    expect((llm.requests[seen]!.body as UpstreamBody).messages.at(-1)).toEqual({ role: 'user', content: 'Tell me a joke.' })

    const messages = await messagesOf(sdk, chatId)
    expect(messages.map(m => [m.role, m.content])).toEqual([['user', 'Tell me a joke.'], ['assistant', 'First take.'], ['assistant', 'Second take.']])
    expect(messages[2]!.metadata).toMatchObject({ replyId: reply.id, status: 'complete', answers: first.message.id, regenerates: first.stored!.id })
    expect(messages[1]!.metadata).toMatchObject({ replyId: first.replyId, status: 'complete' })

    // Only the chat's last assistant message can be regenerated, and a user message only when its reply failed.
    const before = llm.requests.length
    await rejectedWith4xx(sdk.chats.regenerate.mutate({ chatId, messageId: first.stored!.id }))
    await rejectedWith4xx(sdk.chats.regenerate.mutate({ chatId, messageId: first.message.id }))
    await rejectedWith4xx(sdk.chats.regenerate.mutate({ chatId, messageId: 'no-such-message' }))
    expect(llm.requests.length).toBe(before)
    expect(await messagesOf(sdk, chatId)).toHaveLength(3)
  })

  it('retries a turn whose reply failed, by regenerating its user message', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token)
    const chatId = await botChat(user)
    llm.behave(() => ({ kind: 'status', status: 500 }))
    const failed = await turn(sdk, chatId, 'Are you there?')
    expect(failed.ended.status).toBe('failed')

    llm.behave(() => ({ kind: 'complete', content: 'Yes, now I am.' }))
    const seen = llm.requests.length
    const { reply } = await sdk.chats.regenerate.mutate({ chatId, messageId: failed.message.id })
    const ended = await replyEnded(sdk, chatId, reply.id)
    expect(ended).toMatchObject({ status: 'complete', text: 'Yes, now I am.' })
    // The user message is in the prompt once, as the message answered.
    const prompt = (llm.requests[seen]!.body as UpstreamBody).messages
    expect(prompt.at(-1)).toEqual({ role: 'user', content: 'Are you there?' })
    expect(prompt.filter(message => message.content === 'Are you there?')).toHaveLength(1)

    const messages = await messagesOf(sdk, chatId)
    expect(messages.map(m => [m.id, m.role, m.content])).toEqual([[failed.message.id, 'user', 'Are you there?'], [ended.messageId, 'assistant', 'Yes, now I am.']])
    expect(messages[1]!.metadata).toMatchObject({ replyId: reply.id, status: 'complete', answers: failed.message.id })
  })
})

describe('edits and deletions', () => {
  it('reach the other device live, and a subscription resumed from an older position receives what it missed', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const phone = await device(user, a, 'phone (instance A)')
    const browser = await device(user, b, 'browser (instance B)')
    llm.behave(() => ({ kind: 'complete', content: 'I will remember Tom.' }))
    const first = await turn(phone.sdk, chatId, 'My cat is called Tom.')
    const also = { id: randomUUID(), role: 'user' as const, content: 'I also have a dog.' }
    await phone.sdk.chats.sendMessages.mutate({ chatId, messages: [also] })
    await browser.carried('messages', [also.id])

    // A laptop that saw everything so far, then goes to sleep.
    const laptop = await device(user, b, 'laptop')
    await phone.sdk.chats.sendMessages.mutate({ chatId, messages: [{ id: randomUUID(), role: 'user', content: 'marker' }] })
    await until(() => laptop.contents().includes('marker'), 'the marker on the laptop')
    const lastEventId = laptop.lastId()
    laptop.stop()

    // Sent and deleted while the laptop sleeps: it must never see it.
    const fleeting = { id: randomUUID(), role: 'user' as const, content: 'Oops, wrong chat.' }
    await phone.sdk.chats.sendMessages.mutate({ chatId, messages: [fleeting] })

    const { message: edited } = await phone.sdk.chats.editMessage.mutate({ chatId, messageId: first.message.id, content: 'My cat is called Felix.' })
    expect(edited).toMatchObject({ id: first.message.id, chatId, seq: 1, role: 'user', content: 'My cat is called Felix.' })
    const editedEvent = await browser.carried('edited', [first.message.id])
    expect(editedEvent).toMatchObject({ type: 'edited', chatId, messages: [{ id: first.message.id, seq: 1, content: 'My cat is called Felix.' }] })
    expect(Object.keys(editedEvent).sort()).toEqual(['chatId', 'messages', 'type'])

    const doomed = [first.stored!.id, also.id, fleeting.id]
    const { deleted } = await phone.sdk.chats.deleteMessages.mutate({ chatId, messageIds: doomed })
    expect([...deleted].sort()).toEqual([...doomed].sort())
    const gone = await browser.carried('deleted', doomed)
    expect(Object.keys(gone).sort()).toEqual(['chatId', 'messages', 'type'])
    expect(gone.chatId).toBe(chatId)
    expect([...gone.messages].sort((x, y) => x.seq - y.seq)).toEqual([{ id: first.stored!.id, chatId, seq: 2 }, { id: also.id, chatId, seq: 3 }, { id: fleeting.id, chatId, seq: 5 }])
    // Already deleted: nothing deleted now (`deleted` lists only what this call deleted).
    const deletingAgain = await phone.sdk.chats.deleteMessages.mutate({ chatId, messageIds: [also.id] }).catch((error: Error) => `refused: ${error.message}`)
    expect(deletingAgain).toEqual({ deleted: [] })
    await rejectedWith4xx(phone.sdk.chats.editMessage.mutate({ chatId, messageId: also.id, content: 'back from the dead' }))

    // Never returned again by a read.
    const remaining = await messagesOf(phone.sdk, chatId)
    expect(remaining.map(m => [m.seq, m.content])).toEqual([[1, 'My cat is called Felix.'], [4, 'marker']])
    expect(await messagesOf(browser.sdk, chatId, 2)).toEqual([remaining[1]])

    const resumed = await device(user, b, 'laptop, resumed', lastEventId)
    expect((await resumed.carried('edited', [first.message.id])).messages).toMatchObject([{ content: 'My cat is called Felix.' }])
    await resumed.carried('deleted', doomed)
    // Then live again.
    await phone.sdk.chats.sendMessages.mutate({ chatId, messages: [{ id: randomUUID(), role: 'user', content: 'after' }] })
    await until(() => resumed.contents().includes('after'), 'a live message on the resumed laptop')
    expect(resumed.contents()).not.toContain('Oops, wrong chat.')
    expect(resumed.errors).toEqual([])

    // A subscription from the start does not bring deleted messages back either.
    const fresh = await device(user, a, 'new device', '0')
    await until(() => fresh.contents().includes('after'), 'the feed replayed from the start')
    for (const content of ['I will remember Tom.', 'I also have a dog.', 'Oops, wrong chat.'])
      expect(fresh.contents()).not.toContain(content)
    // Reply text and ends are live only: never replayed.
    expect([...fresh.ofType('reply'), ...fresh.ofType('reply.end')]).toEqual([])
    for (const seen of [phone, browser, fresh])
      seen.stop()
    resumed.stop()
  })

  it('only the caller\'s own user messages can be edited; another user\'s messages can be neither edited nor deleted', async () => {
    const [alice, bob, eve] = await Promise.all([createVerifiedUser(a), createVerifiedUser(a), createVerifiedUser(a)])
    const group = (await client(alice.token).chats.create.mutate({ type: 'group', title: 'Friends', members: [{ type: 'user', id: bob.id }] })).id
    const fromAlice = { id: randomUUID(), role: 'user' as const, content: 'from alice' }
    const fromBob = { id: randomUUID(), role: 'user' as const, content: 'from bob' }
    await client(alice.token).chats.sendMessages.mutate({ chatId: group, messages: [fromAlice] })
    await client(bob.token).chats.sendMessages.mutate({ chatId: group, messages: [fromBob] })
    const evesChat = await botChat(eve)
    llm.behave(() => ({ kind: 'complete', content: 'A reply is not yours to edit.' }))
    const alicesBot = await botChat(alice)
    const aliceTurn = await turn(client(alice.token), alicesBot, 'hello')

    const aliceSdk = client(alice.token)
    const bobSdk = client(bob.token)
    const eveSdk = client(eve.token)
    await rejectedWith4xx(bobSdk.chats.editMessage.mutate({ chatId: group, messageId: fromAlice.id, content: 'bob was here' }))
    await rejectedWith4xx(bobSdk.chats.deleteMessages.mutate({ chatId: group, messageIds: [fromAlice.id] }))
    // Bob's own message with Alice's: refused as a whole.
    await rejectedWith4xx(bobSdk.chats.deleteMessages.mutate({ chatId: group, messageIds: [fromBob.id, fromAlice.id] }))
    // Alice created the group, but only a bot chat's creator may delete others' messages.
    await rejectedWith4xx(aliceSdk.chats.deleteMessages.mutate({ chatId: group, messageIds: [fromBob.id] }))
    await rejectedWith4xx(aliceSdk.chats.editMessage.mutate({ chatId: group, messageId: fromBob.id, content: 'alice was here' }))
    // A reply is the character's, not the caller's: not editable.
    await rejectedWith4xx(aliceSdk.chats.editMessage.mutate({ chatId: alicesBot, messageId: aliceTurn.stored!.id, content: 'better answer' }))
    // Not a member: the chat is not found. Someone else's ids through one's own chat: refused.
    expect((await failure(eveSdk.chats.editMessage.mutate({ chatId: group, messageId: fromAlice.id, content: 'x' }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    expect((await failure(eveSdk.chats.deleteMessages.mutate({ chatId: group, messageIds: [fromAlice.id] }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    await rejectedWith4xx(eveSdk.chats.editMessage.mutate({ chatId: evesChat, messageId: fromAlice.id, content: 'x' }))
    await rejectedWith4xx(eveSdk.chats.deleteMessages.mutate({ chatId: evesChat, messageIds: [fromAlice.id, aliceTurn.stored!.id] }))

    expect((await messagesOf(aliceSdk, group)).map(m => m.content)).toEqual(['from alice', 'from bob'])
    expect((await messagesOf(aliceSdk, alicesBot)).map(m => m.content)).toEqual(['hello', 'A reply is not yours to edit.'])
  })
})

describe('greetings', () => {
  it('a bot chat made with a character that has a greeting starts with it as an assistant message; no Flux moves', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token)
    expect((await sdk.flux.balance.query()).flux).toBe(INITIAL)
    const other = await device(user, b, 'device on instance B')
    const seen = llm.requests.length

    const chatId = await botChat(user, greeter)
    const messages = await messagesOf(sdk, chatId)
    expect(messages).toMatchObject([{ seq: 1, role: 'assistant', senderId: greeter, content: GREETING }])
    expect(messages[0]!.metadata?.callId).toBeUndefined()
    await other.carried('messages', [messages[0]!.id])

    expect(llm.requests.length).toBe(seen)
    expect((await sdk.flux.balance.query()).flux).toBe(INITIAL)
    expect(await a.database.db.selectFrom('flux_transaction').select('type').where('user_id', '=', user.id).execute()).toEqual([{ type: 'initial' }])

    // The greeting is the conversation's first turn in the prompt.
    llm.behave(() => ({ kind: 'complete', content: 'Cats, then.' }))
    const { body } = await turn(sdk, chatId, 'Let us talk about cats.')
    expect(body!.messages.filter(message => message.role !== 'system')).toEqual([{ role: 'assistant', content: GREETING }, { role: 'user', content: 'Let us talk about cats.' }])
    other.stop()
  })

  it('a character\'s {{char}} and {{user}} read as the names: in its greeting and in the prompt; the character keeps them', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token)
    const named = await createCharacter(author, [
      { language: 'en', type: 'system', content: 'You are {{char}}, talking with {{USER}}.' },
      { language: 'en', type: 'description', content: '{{char}} is a cat.' },
      { language: 'en', type: 'greetings', content: 'Hi {{user}}, {{char}} here.' },
    ])
    const userName = user.email.split('@')[0]
    const chatId = await botChat(user, named)
    expect((await messagesOf(sdk, chatId)).map(message => message.content)).toEqual([`Hi ${userName}, Airi here.`])

    llm.behave(() => ({ kind: 'complete', content: 'Meow.' }))
    const { body } = await turn(sdk, chatId, 'Who are you?')
    expect(body!.messages[0]).toEqual({ role: 'system', content: `You are Airi, talking with ${userName}.\n\nAiri is a cat.` })
    const stored = await sdk.characters.get.query({ id: named })
    expect(stored.prompts.map(prompt => prompt.content)).toEqual(['You are {{char}}, talking with {{USER}}.', '{{char}} is a cat.', 'Hi {{user}}, {{char}} here.'])
  })

  it('a character without a greeting: the chat starts empty', async () => {
    const user = await createVerifiedUser(a)
    expect(await messagesOf(client(user.token), await botChat(user))).toEqual([])
  })
})

describe('refusals: every new procedure checks its caller and its input, and a refused call changes nothing', () => {
  it('refuses what it cannot answer (wrong chat, bad input, unknown model, taken id, no character) with 4xx, storing and billing nothing', async () => {
    const user = await createVerifiedUser(a)
    const stranger = await createVerifiedUser(a)
    const sdk = client(user.token)
    const chatId = await botChat(user)
    const group = (await sdk.chats.create.mutate({ type: 'group', title: 'Not a bot', members: [] })).id
    const strangersChat = await botChat(stranger)
    const elsewhere = { id: randomUUID(), role: 'user' as const, content: 'in the group' }
    await sdk.chats.sendMessages.mutate({ chatId: group, messages: [elsewhere] })
    const localAssistant = { id: randomUUID(), role: 'assistant' as const, content: 'made by a local model' }
    await sdk.chats.sendMessages.mutate({ chatId, messages: [localAssistant] })
    const doomed = await createCharacter(user, [])
    const orphan = await botChat(user, doomed)
    await sdk.characters.delete.mutate({ id: doomed })
    const seen = llm.requests.length
    const say = (content = 'hi') => ({ id: randomUUID(), content })

    expect((await failure(sdk.chats.respond.mutate({ chatId: group, message: say() }))).data).toMatchObject({ httpStatus: 400, apiCode: 'NOT_A_BOT_CHAT' })
    expect((await failure(sdk.chats.respond.mutate({ chatId: strangersChat, message: say() }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    expect((await failure(sdk.chats.respond.mutate({ chatId: 'no-such-chat', message: say() }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    expect(await badRequestFields(sdk.chats.respond.mutate({ chatId, message: say('') }))).toEqual(['message.content'])
    expect(await badRequestFields(sdk.chats.respond.mutate({ chatId, message: say('x'.repeat(100_001)) }))).toEqual(['message.content'])
    expect(await badRequestFields(sdk.chats.respond.mutate({ chatId, message: { id: '', content: 'hi' } }))).toEqual(['message.id'])
    expect(await badRequestFields(sdk.chats.respond.mutate({ chatId, message: say(), maxTokens: 0 }))).toEqual(['maxTokens'])
    expect((await failure(sdk.chats.respond.mutate({ chatId, message: say(), model: 'no-such-model' }))).data).toMatchObject({ httpStatus: 404, apiCode: 'MODEL_NOT_FOUND' })
    expect((await failure(sdk.chats.respond.mutate({ chatId, message: { id: elsewhere.id, content: 'hi' } }))).data).toMatchObject({ httpStatus: 409, apiCode: 'MESSAGE_ID_CONFLICT' })
    expect((await failure(sdk.chats.respond.mutate({ chatId, message: { id: localAssistant.id, content: 'hi' } }))).data).toMatchObject({ httpStatus: 409, apiCode: 'MESSAGE_ID_CONFLICT' })
    expect((await failure(sdk.chats.respond.mutate({ chatId: orphan, message: say() }))).data).toMatchObject({ httpStatus: 400, apiCode: 'NO_CHARACTER' })

    expect((await messagesOf(sdk, chatId)).map(m => m.id)).toEqual([localAssistant.id])
    expect((await messagesOf(sdk, group)).map(m => m.id)).toEqual([elsewhere.id])
    expect(await messagesOf(sdk, orphan)).toEqual([])
    expect(await messagesOf(client(stranger.token), strangersChat)).toEqual([])
    expect(llm.requests.length).toBe(seen)
    expect(await spendingRows(user.id)).toEqual([])
    expect(await balanceOf(user)).toBe(INITIAL)
  })

  it('503 CONFIG_NOT_SET when no language model is configured, storing nothing', async () => {
    const bare = await startTestServer()
    try {
      const user = await createVerifiedUser(bare)
      const sdk = createAiriClient({ baseUrl: bare.baseUrl, getToken: () => user.token })
      const character = (await sdk.characters.create.mutate({ characterId: 'bare', version: '1', coverUrl: 'https://cdn.example.com/c.png', avatarUrl: 'https://cdn.example.com/a.png', i18n: [{ language: 'en', name: 'Bare', description: '' }] })).id
      const chatId = (await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character }] })).id
      expect((await failure(sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'hi' } }))).data).toMatchObject({ httpStatus: 503, apiCode: 'CONFIG_NOT_SET' })
      expect(await sdk.chats.pullMessages.query({ chatId })).toMatchObject({ messages: [] })
    }
    finally {
      await bare.close()
    }
  })

  it('429 RATE_LIMITED past the LLM rate limit, storing and billing nothing', async () => {
    // One call per user per window, on the deployment's database (its config included); a window no test outlives.
    const limited = await startTestServer({ database: deployment.database, rateLimits: { limits: { gateway: 1 }, windowSeconds: 3600 } })
    try {
      const user = await createVerifiedUser(limited)
      const sdk = createAiriClient({ baseUrl: limited.baseUrl, getToken: () => user.token })
      const chatId = (await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: plain }] })).id
      llm.behave(() => ({ kind: 'complete', content: 'Once.' }))
      const seen = llm.requests.length
      const first = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'one' } })
      expect((await replyEnded(sdk, chatId, first.reply.id)).status).toBe('complete')
      const spent = await spendingRows(user.id)

      expect((await failure(sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'two' } }))).data).toMatchObject({ httpStatus: 429, apiCode: 'RATE_LIMITED' })
      expect((await messagesOf(sdk, chatId)).map(m => m.content)).toEqual(['one', 'Once.'])
      expect(llm.requests.length - seen).toBe(1)
      expect(await spendingRows(user.id)).toEqual(spent)
    }
    finally {
      await limited.close()
    }
  })

  it('401 without a user, 404 on another user\'s chat, 400 naming the field', async () => {
    const user = await createVerifiedUser(a)
    const stranger = await createVerifiedUser(a)
    const chatId = await botChat(user)
    llm.behave(() => ({ kind: 'complete', content: 'Mine.' }))
    const mine = await turn(client(user.token), chatId, 'hello')
    const anonymous = client(undefined)
    const other = client(stranger.token)
    const sdk = client(user.token)
    const messageId = mine.message.id
    type Call = (c: AiriClient) => Promise<unknown>
    const calls: Call[] = [
      c => c.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'x' } }),
      c => c.chats.getReply.query({ chatId, replyId: mine.replyId }),
      c => c.chats.stopReply.mutate({ chatId, replyId: mine.replyId }),
      c => c.chats.regenerate.mutate({ chatId, messageId: mine.stored!.id }),
      c => c.chats.editMessage.mutate({ chatId, messageId, content: 'changed' }),
      c => c.chats.deleteMessages.mutate({ chatId, messageIds: [messageId] }),
    ]
    for (const call of calls) {
      expect((await failure(call(anonymous))).data?.httpStatus).toBe(401)
      expect((await failure(call(other))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    }

    expect(await badRequestFields(sdk.chats.getReply.query({ chatId, replyId: '' }))).toEqual(['replyId'])
    expect(await badRequestFields(sdk.chats.stopReply.mutate({ chatId: '', replyId: mine.replyId }))).toEqual(['chatId'])
    expect(await badRequestFields(sdk.chats.regenerate.mutate({ chatId, messageId: '' }))).toEqual(['messageId'])
    expect(await badRequestFields(sdk.chats.editMessage.mutate({ chatId, messageId, content: '' }))).toEqual(['content'])
    expect(await badRequestFields(sdk.chats.editMessage.mutate({ chatId, messageId, content: 'x'.repeat(100_001) }))).toEqual(['content'])
    expect(await badRequestFields(sdk.chats.deleteMessages.mutate({ chatId, messageIds: [] }))).toEqual(['messageIds'])
    expect(await badRequestFields(sdk.chats.deleteMessages.mutate({ chatId, messageIds: Array.from({ length: 101 }, () => randomUUID()) }))).toEqual(['messageIds'])
    expect((await failure(sdk.chats.getReply.query({ chatId, replyId: 'no-such-reply' }))).data?.httpStatus).toBe(404)

    // Nothing of the refused calls happened.
    expect((await messagesOf(sdk, chatId)).map(m => [m.id, m.content])).toEqual([[messageId, 'hello'], [mine.stored!.id, 'Mine.']])
    expect(await sdk.chats.getReply.query({ chatId, replyId: mine.replyId })).toMatchObject({ status: 'complete', text: 'Mine.' })
  })
})
