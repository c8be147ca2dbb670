import { randomUUID } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { AppRouter } from '@airi/api'
import { createAiriClient, type AiriClient, type TRPCClientError } from '@airi/sdk'
import { createPacer, type FakeUpstream, type UpstreamRequest } from '@airi/tooling/fakes/openai-upstream'
import type { TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { botChat as botChatWith, createCharacter as createCharacterWith, replyEnded, startConversationDeployment, type ConversationDeployment, type Message } from './conversations-setup.ts'
import { createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Replies made on the server (issue 22, docs/conversations.md), through the SDK
 * against two instances of one deployment (one Postgres, one Redis namespace) and a
 * fake LLM upstream: streaming to every device, the prompt the upstream receives,
 * stop, idempotence, upstream failures and 402, the ledger, and replies outliving
 * their client or their instance. conversations-edits.test.ts has regenerate,
 * edits and deletions, greetings and the refusals of every procedure.
 */

const INITIAL = 100
const STORY = 'Once upon a time, a fox found a lantern in the snow and carried it home.'
// "the " pieces: the fake streams one per word, so a stall after n pieces has sent 'the ' × n.
const THE = Array.from({ length: 200 }, () => 'the').join(' ')

let deployment: ConversationDeployment
let database: TestDatabase
let redisPrefix: string
let llm: FakeUpstream
let a: TestServer
let b: TestServer
let author: TestUser
/** A character with no default model and no greeting: answers with the router's default. */
let plain: string
/** A character with prompts in two languages and its own default model. */
let storyteller: string

beforeAll(async () => {
  // Three aliases on the one fake, told apart by the upstream model they send; `chat` is the router's default.
  deployment = await startConversationDeployment({ 'chat': 'gpt-4o-mini', 'chat-pro': 'gpt-4o', 'character-model': 'gpt-4.1-mini' })
  ;({ database, redisPrefix, llm, a, b } = deployment)
  author = await createVerifiedUser(a)
  plain = await createCharacter(author, a, { prompts: [{ language: 'en', type: 'system', content: 'You are a plain helper.' }] })
  storyteller = await createCharacter(author, a, {
    defaultModelId: 'character-model',
    i18n: [{ language: 'en', name: 'Airi', description: '' }, { language: 'zh-Hans', name: '爱莉', description: '' }],
    prompts: [
      { language: 'en', type: 'system', content: 'You are Airi, a storyteller.' },
      { language: 'en', type: 'personality', content: 'Cheerful and curious.' },
      { language: 'zh-Hans', type: 'system', content: '你是爱莉，一个讲故事的人。' },
      { language: 'zh-Hans', type: 'personality', content: '开朗又好奇。' },
    ],
  })
})
afterAll(() => deployment?.close())

const client = (token: string | undefined, server: TestServer): AiriClient => deployment.client(token, server)

const createCharacter = (owner: TestUser, server: TestServer, fields: Parameters<typeof createCharacterWith>[1]) => createCharacterWith(client(owner.token, server), fields)

const botChat = (user: TestUser, character = plain, server = a) => botChatWith(client(user.token, server), character)

type ChatEvent =
  | { type: 'ready' | 'balance', messages: [] }
  | { type: 'messages' | 'edited', chatId: string, messages: Message[] }
  | { type: 'deleted', chatId: string, messages: Array<{ id: string, chatId: string, seq: number }> }
  | { type: 'reply', chatId: string, replyId: string, offset: number, delta: string, messages: [] }
  | { type: 'reply.end', chatId: string, replyId: string, messageId: string | null, status: string, error?: { code: string, message: string }, messages: [] }
type ReplyDelta = Extract<ChatEvent, { type: 'reply' }>
type ReplyEnd = Extract<ChatEvent, { type: 'reply.end' }>

/** A device of `user` on `server`: its own client and live subscription, every event kept in order. */
async function device(user: TestUser, server: TestServer, name: string) {
  const sdk = client(user.token, server)
  const events: ChatEvent[] = []
  const errors: unknown[] = []
  const subscription = sdk.chats.onMessages.subscribe(undefined, {
    onData: tracked => void events.push((tracked as unknown as { data: ChatEvent }).data),
    onError: error => errors.push(error),
  })
  await until(() => events.length > 0, `the ready event on ${name}`)
  const deltas = (replyId: string) => events.filter((event): event is ReplyDelta => event.type === 'reply' && event.replyId === replyId)
  const endIndex = (replyId: string) => events.findIndex(event => event.type === 'reply.end' && event.replyId === replyId)
  return {
    name,
    sdk,
    events,
    errors,
    deltas,
    replyText: (replyId: string) => deltas(replyId).map(event => event.delta).join(''),
    /** Waits for the reply's `reply.end` and answers it with its position among the events. */
    async ended(replyId: string): Promise<{ end: ReplyEnd, index: number }> {
      await until(() => endIndex(replyId) >= 0, `reply.end of ${replyId} on ${name}`)
      const index = endIndex(replyId)
      return { end: events[index] as ReplyEnd, index }
    },
    /** Where the `messages` event carrying `messageId` is, and the message (-1 when none did). */
    stored(messageId: string): { index: number, message?: Message } {
      const index = events.findIndex(event => event.type === 'messages' && event.messages.some(message => message.id === messageId))
      return { index, message: index < 0 ? undefined : (events[index] as { messages: Message[] }).messages.find(message => message.id === messageId) }
    },
    stop: () => subscription.unsubscribe(),
  }
}

/** One turn: respond, wait for the end, and answer what was stored and what the upstream was sent. */
async function turn(sdk: AiriClient, chatId: string, content: string, options: { model?: string, language?: string, maxTokens?: number } = {}) {
  const seen = llm.requests.length
  const { message, reply } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content }, ...options })
  const ended = await replyEnded(sdk, chatId, reply.id)
  const upstream = llm.requests.slice(seen)
  expect(upstream, 'one upstream call per turn').toHaveLength(1)
  const stored = ended.messageId ? await storedMessage(sdk, chatId, ended.messageId) : undefined
  return { message, replyId: reply.id, ended, stored, body: upstream[0]!.body as { model: string, max_tokens?: number, messages: Array<{ role: string, content: string }> } }
}

async function messagesOf(sdk: AiriClient, chatId: string): Promise<Message[]> {
  return (await sdk.chats.pullMessages.query({ chatId, limit: 500 })).messages as Message[]
}

async function storedMessage(sdk: AiriClient, chatId: string, messageId: string): Promise<Message> {
  const message = (await messagesOf(sdk, chatId)).find(candidate => candidate.id === messageId)
  expect(message, `stored message ${messageId}`).toBeDefined()
  return message!
}

const signed = (row: { type: string, amount: number }) => row.type === 'debit' ? row.amount : -row.amount

/** What the ledger took for one gateway call (reservation, settlement and refunds together), and its reservation. */
async function callLedger(callId: string) {
  const rows = await a.database.db.selectFrom('flux_transaction').select(['type', 'amount', 'request_id']).where('request_id', 'like', `llm:${callId}:%`).execute()
  return { net: rows.reduce((sum, row) => sum + signed(row), 0), reserved: rows.find(row => row.request_id === `llm:${callId}:reserve`)?.amount ?? 0, rows }
}

/** Every row of the user's ledger but the first (`initial`) one. */
async function spendingRows(userId: string) {
  return a.database.db.selectFrom('flux_transaction').select(['type', 'amount', 'request_id', 'balance_after']).where('user_id', '=', userId).where('type', '!=', 'initial').orderBy('seq').execute()
}

const balanceOf = (user: TestUser) => a.api.services.billing.getBalance(user.id)

/** The chat's server-made replies, as stored. */
const repliesIn = (messages: Message[]) => messages.filter(message => message.role === 'assistant' && typeof message.metadata?.callId === 'string')

/** Splits a prompt into its leading system text and the conversation after it. */
function promptParts(body: { messages: Array<{ role: string, content: string }> }) {
  const firstOther = body.messages.findIndex(message => message.role !== 'system')
  const system = body.messages.slice(0, firstOther < 0 ? body.messages.length : firstOther)
  return {
    system: system.map(message => message.content).join('\n'),
    conversation: body.messages.slice(system.length).map(({ role, content }) => ({ role, content })),
  }
}

describe('a reply streams to every device and is stored once', () => {
  it('two devices of one user on two instances see the same deltas, then the stored message, then reply.end', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const phone = await device(user, a, 'phone (instance A)')
    const browser = await device(user, b, 'browser (instance B)')
    const pace = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace, usage: { prompt_tokens: 1200, completion_tokens: 800 } }))

    const seen = llm.requests.length
    const messageId = randomUUID()
    const responding = phone.sdk.chats.respond.mutate({ chatId, message: { id: messageId, content: 'Tell me a story.' } })
    await until(() => llm.requests.length > seen, 'the upstream call')
    // The first piece goes before `respond` is awaited, in case "started" means a first delta.
    pace.release()
    const { message, reply } = await responding
    expect(message).toMatchObject({ id: messageId, chatId, role: 'user', content: 'Tell me a story.', senderId: user.id })

    // Let out piece by piece: each reaches both devices before the next one is let go.
    const pieces = STORY.match(/\s*\S+\s*/g)!
    for (let count = 1; count <= pieces.length; count++) {
      if (count > 1)
        pace.release()
      const prefix = pieces.slice(0, count).join('')
      for (const seenOn of [phone, browser])
        await until(() => seenOn.replyText(reply.id) === prefix, `${count} pieces on ${seenOn.name}`)
      // A device that joins late asks for the text so far, on either instance.
      if (count === 3) {
        await until(async () => (await browser.sdk.chats.getReply.query({ chatId, replyId: reply.id })).text === prefix, 'the text so far from getReply on instance B')
        expect(await browser.sdk.chats.getReply.query({ chatId, replyId: reply.id })).toMatchObject({ replyId: reply.id, status: 'streaming', text: prefix })
      }
    }

    for (const seenOn of [phone, browser]) {
      const { end, index } = await seenOn.ended(reply.id)
      expect(end).toEqual({ type: 'reply.end', chatId, replyId: reply.id, messageId: expect.any(String), status: 'complete', messages: [] })
      // offset = characters before the delta, so the deltas tile the text with no gap or overlap.
      let offset = 0
      for (const delta of seenOn.deltas(reply.id)) {
        expect(Object.keys(delta).sort(), `the fields of a reply event on ${seenOn.name}`).toEqual(['chatId', 'delta', 'messages', 'offset', 'replyId', 'type'])
        expect(delta.offset, `offset on ${seenOn.name}`).toBe(offset)
        offset += delta.delta.length
      }
      expect(seenOn.replyText(reply.id)).toBe(STORY)
      const stored = seenOn.stored(end.messageId!)
      expect(stored.index, `the stored reply arrives on ${seenOn.name} before reply.end`).toBeGreaterThan(-1)
      expect(stored.index).toBeLessThan(index)
      expect(seenOn.stored(messageId).index, `the user message on ${seenOn.name}`).toBeGreaterThan(-1)
      expect(seenOn.errors).toEqual([])
    }
    expect(phone.deltas(reply.id).map(({ offset, delta }) => [offset, delta])).toEqual(browser.deltas(reply.id).map(({ offset, delta }) => [offset, delta]))

    const replyMessageId = (await phone.ended(reply.id)).end.messageId!
    const stored = phone.stored(replyMessageId).message!
    expect(stored).toMatchObject({ id: replyMessageId, chatId, role: 'assistant', senderId: plain, content: STORY, seq: 2 })
    // 2 000 tokens at the default price of 1 Flux per 1 000.
    expect(stored.metadata).toEqual({ replyId: reply.id, callId: expect.any(String), model: 'chat', status: 'complete', usage: { input: 1200, output: 800 }, flux: 2, answers: messageId })
    expect(browser.stored(replyMessageId).message).toEqual(stored)

    // Tied to the gateway call that paid for it.
    const callId = stored.metadata!.callId as string
    expect((await callLedger(callId)).net).toBe(2)
    expect(await a.database.db.selectFrom('llm_request_log').select(['request_id', 'model', 'flux_consumed']).where('user_id', '=', user.id).execute()).toEqual([{ request_id: callId, model: 'chat', flux_consumed: 2 }])
    expect(await balanceOf(user)).toBe(INITIAL - 2)

    expect(await client(user.token, b).chats.getReply.query({ chatId, replyId: reply.id })).toMatchObject({ replyId: reply.id, status: 'complete', text: STORY, messageId: replyMessageId })
    expect((await messagesOf(browser.sdk, chatId)).map(m => [m.seq, m.role, m.content])).toEqual([[1, 'user', 'Tell me a story.'], [2, 'assistant', STORY]])
    phone.stop()
    browser.stop()
  })
})

describe('the prompt the upstream receives', () => {
  it('starts with the character\'s system and personality prompts in the asked language, then the history, then the new message', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    const chatId = await botChat(user, storyteller)
    const history = [['user', 'h1: hello'], ['assistant', 'h2: hi there'], ['user', 'h3: how are you?'], ['assistant', 'h4: splendid']] as const
    await sdk.chats.sendMessages.mutate({ chatId, messages: history.map(([role, content]) => ({ id: randomUUID(), role, content })) })
    llm.behave(() => ({ kind: 'complete', content: 'An answer.' }))

    const chinese = promptParts((await turn(sdk, chatId, 'now in Chinese', { language: 'zh-Hans' })).body)
    expect(chinese.system).toContain('你是爱莉，一个讲故事的人。')
    expect(chinese.system).toContain('开朗又好奇。')
    expect(chinese.system.indexOf('你是爱莉')).toBeLessThan(chinese.system.indexOf('开朗又好奇'))
    expect(chinese.system).not.toContain('You are Airi')
    expect(chinese.conversation).toEqual([...history.map(([role, content]) => ({ role, content })), { role: 'user', content: 'now in Chinese' }])

    const english = promptParts((await turn(sdk, chatId, 'now in English', { language: 'en' })).body)
    expect(english.system).toContain('You are Airi, a storyteller.')
    expect(english.system).toContain('Cheerful and curious.')
    expect(english.system.indexOf('You are Airi')).toBeLessThan(english.system.indexOf('Cheerful and curious'))
    expect(english.system).not.toContain('你是爱莉')
    // The previous turn (with its stored reply) is history now.
    expect(english.conversation.slice(-3)).toEqual([{ role: 'user', content: 'now in Chinese' }, { role: 'assistant', content: 'An answer.' }, { role: 'user', content: 'now in English' }])

    // No language asked: the request's Accept-Language.
    const chineseBrowser = createAiriClient({
      baseUrl: a.baseUrl,
      getToken: () => user.token,
      fetch: (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), 'accept-language': 'zh-Hans,zh;q=0.9,en;q=0.5' } }),
    })
    const byHeader = promptParts((await turn(chineseBrowser, chatId, 'no language, a Chinese browser')).body)
    expect(byHeader.system).toContain('你是爱莉，一个讲故事的人。')
    expect(byHeader.system).not.toContain('You are Airi')

    // Neither (Node's fetch sends `Accept-Language: *`): the character's first language.
    const fallback = promptParts((await turn(sdk, chatId, 'no language')).body)
    expect(fallback.system).toContain('You are Airi, a storyteller.')
    expect(fallback.system).not.toContain('你是爱莉')
  })

  it('maxTokens caps the reply: sent upstream as max_tokens, and the reservation is sized on it', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    const chatId = await botChat(user)
    llm.behave(() => ({ kind: 'complete', content: 'one two three four five six' }))
    const capped = await turn(sdk, chatId, 'three words at most', { maxTokens: 3 })
    expect(capped.body).toMatchObject({ max_tokens: 3 })
    // The fake honours the cap (a piece per token).
    expect(capped.stored!.content).toBe('one two three ')
    // The prompt and 3 tokens: the smallest reservation, where the default cap (4 096) reserves 5.
    expect((await callLedger(capped.stored!.metadata!.callId)).reserved).toBe(1)
    const uncapped = await turn(sdk, chatId, 'as long as you like')
    expect((await callLedger(uncapped.stored!.metadata!.callId)).reserved).toBe(5)
  })

  it('drops the oldest history past CHAT_CONTEXT_TOKENS and keeps the newest', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    const chatId = await botChat(user, storyteller)
    // 20 messages of about 100 tokens each, against a budget of 1 000 tokens.
    const history = Array.from({ length: 20 }, (_, i) => ({ id: randomUUID(), role: i % 2 ? 'assistant' as const : 'user' as const, content: `m${i + 1} ${'the '.repeat(100)}` }))
    await sdk.chats.sendMessages.mutate({ chatId, messages: history })
    llm.behave(() => ({ kind: 'complete', content: 'Short.' }))
    await a.api.services.config.set('CHAT_CONTEXT_TOKENS', 1000)
    try {
      const { system, conversation } = promptParts((await turn(sdk, chatId, 'what did I say?', { language: 'en' })).body)
      expect(system).toContain('You are Airi, a storyteller.')
      expect(conversation.at(-1)).toEqual({ role: 'user', content: 'what did I say?' })
      const kept = conversation.slice(0, -1)
      expect(kept.length, 'some history kept').toBeGreaterThan(0)
      expect(kept.length, 'no more history than fits 1 000 tokens').toBeLessThanOrEqual(10)
      // The newest messages, in order, with none skipped.
      expect(kept).toEqual(history.slice(-kept.length).map(({ role, content }) => ({ role, content })))
    }
    finally {
      await a.api.services.config.set('CHAT_CONTEXT_TOKENS', 8000)
    }
  })

  it('uses the model asked for, else the character\'s default model, else the router\'s default', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    llm.behave(() => ({ kind: 'complete', content: 'Hi.' }))
    const withDefault = await botChat(user, storyteller)

    const asked = await turn(sdk, withDefault, 'pro please', { model: 'chat-pro' })
    expect(asked.body.model).toBe('gpt-4o')
    expect(asked.stored!.metadata).toMatchObject({ model: 'chat-pro' })

    const characters = await turn(sdk, withDefault, 'your usual')
    expect(characters.body.model).toBe('gpt-4.1-mini')
    expect(characters.stored!.metadata).toMatchObject({ model: 'character-model' })

    const routers = await turn(sdk, await botChat(user, plain), 'whatever you have')
    expect(routers.body.model).toBe('gpt-4o-mini')
    expect(routers.stored!.metadata).toMatchObject({ model: 'chat' })

    // The second turn in the chat was claimed ahead with the first turn's model: its row was corrected.
    const rows = await a.database.db.selectFrom('chat_replies').select(['model', 'character_id', 'status']).where('chat_id', '=', withDefault).orderBy('created_at').execute()
    expect(rows.map(row => [row.model, row.status])).toEqual([['chat-pro', 'complete'], ['character-model', 'complete']])
  })

  it('a turn read ahead with an outdated guess answers with the chat as it is now: the new character, its prompts, its model', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    llm.behave(() => ({ kind: 'complete', content: 'Hi.' }))
    const chatId = await botChat(user, plain)
    const first = await turn(sdk, chatId, 'hello')
    expect(first.stored!.metadata).toMatchObject({ model: 'chat' })

    // The character that answered leaves; the storyteller (its own prompts and default model) joins.
    const answered = (await a.database.db.selectFrom('chat_replies').select('character_id').where('chat_id', '=', chatId).executeTakeFirstOrThrow()).character_id
    await sdk.chats.addMembers.mutate({ chatId, members: [{ type: 'character', id: storyteller }] })
    await sdk.chats.removeMember.mutate({ chatId, member: { type: 'character', id: answered } })

    const second = await turn(sdk, chatId, 'and now?')
    expect(second.body.model).toBe('gpt-4.1-mini')
    expect(second.body.messages[0]).toMatchObject({ role: 'system', content: expect.stringContaining('You are Airi, a storyteller.') })
    expect(second.stored!.metadata).toMatchObject({ model: 'character-model' })
    expect(second.stored!.senderId).toBe(storyteller)
    const rows = await a.database.db.selectFrom('chat_replies').select(['model', 'character_id']).where('chat_id', '=', chatId).orderBy('created_at').execute()
    expect(rows).toEqual([{ model: 'chat', character_id: answered }, { model: 'character-model', character_id: storyteller }])
  })

  it('a call on a chat the caller is not in claims nothing, even where the instance has a guess for that chat', async () => {
    const owner = await createVerifiedUser(a)
    const stranger = await createVerifiedUser(a)
    llm.behave(() => ({ kind: 'complete', content: 'Hi.' }))
    const chatId = await botChat(owner, plain)
    await turn(client(owner.token, a), chatId, 'hello')

    const refused = await client(stranger.token, a).chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'let me in' } }).catch((error: unknown) => error)
    expect((refused as TRPCClientError<AppRouter>).data).toMatchObject({ httpStatus: 404, apiCode: 'CHAT_NOT_FOUND' })
    expect(await a.database.db.selectFrom('chat_replies').select('user_id').where('chat_id', '=', chatId).execute()).toEqual([{ user_id: owner.id }])
    // The owner's next turn is not blocked by anything the stranger did.
    expect((await turn(client(owner.token, a), chatId, 'still there?')).ended.status).toBe('complete')
  })
})

describe('stop', () => {
  it('stopped from the other instance mid-stream: the upstream is aborted within a second, the partial text is stored and billed for what was generated', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const watcher = await device(user, b, 'device on instance B')
    // Five pieces, then the upstream waits: only a stop can end this call.
    llm.behave(() => ({ kind: 'complete', content: THE, stallAfter: 5 }))
    const seen = llm.requests.length
    const { reply } = await client(user.token, a).chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Talk until I stop you.' } })
    const partial = 'the '.repeat(5)
    await until(() => watcher.replyText(reply.id) === partial, 'five pieces on instance B')
    const upstream: UpstreamRequest = llm.requests[seen]!

    const stopping = client(user.token, b)
    const stopAt = Date.now()
    expect(await stopping.chats.stopReply.mutate({ chatId, replyId: reply.id })).toEqual({ stopped: true })
    await until(() => upstream.aborted, 'the upstream request to be aborted')
    // Event-driven end to end (no timer on the path): milliseconds on a quiet machine. The
    // bound is loose so a busy CI machine cannot fail it; it still catches a stop that
    // waits for the stream's deadline (120 s) instead of ending the call.
    expect(upstream.abortedAt! - stopAt, 'ms from stopReply to the upstream abort').toBeLessThan(5000)

    const { end } = await watcher.ended(reply.id)
    expect(end).toMatchObject({ status: 'stopped', messageId: expect.any(String) })
    expect(await stopping.chats.getReply.query({ chatId, replyId: reply.id })).toMatchObject({ status: 'stopped', text: partial, messageId: end.messageId })
    const stored = await storedMessage(stopping, chatId, end.messageId!)
    expect(stored).toMatchObject({ role: 'assistant', content: partial, metadata: { replyId: reply.id, status: 'stopped', model: 'chat' } })
    expect(stored.metadata!.usage.output).toBeGreaterThan(0)

    // Billed for the prompt and five pieces (our count): more than nothing, less than the reservation.
    const { net, reserved } = await callLedger(stored.metadata!.callId)
    expect(net).toBeGreaterThan(0)
    expect(net).toBeLessThan(reserved)
    expect(stored.metadata!.flux).toBe(net)
    expect(await balanceOf(user)).toBe(INITIAL - net)

    // Already over: nothing left to stop.
    expect(await stopping.chats.stopReply.mutate({ chatId, replyId: reply.id })).toEqual({ stopped: false })
    watcher.stop()
  })

  it('an upstream that ignores max_tokens and never stops: the reply is cut at its bound, stopped, and kept', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    // Far more than the 512 Ki characters a reply may hold; the fake ends it only when the connection goes.
    llm.behave(() => ({ kind: 'flood', totalBytes: 64 * 1024 * 1024 }))
    const seen = llm.requests.length
    const sdk = client(user.token, a)
    const { reply } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Say everything.' } })
    const ended = await replyEnded(sdk, chatId, reply.id)
    expect(ended).toMatchObject({ status: 'stopped', error: { code: 'REPLY_TOO_LONG' } })
    expect(ended.text).toHaveLength(512 * 1024)
    await until(() => llm.requests[seen]!.aborted, 'the upstream request to be aborted')
    expect(llm.requests[seen]!.bytesWritten).toBeLessThan(64 * 1024 * 1024)
    const stored = await storedMessage(sdk, chatId, ended.messageId!)
    expect(stored.metadata).toMatchObject({ status: 'stopped', error: { code: 'REPLY_TOO_LONG' } })
  })
})

describe('one reply at a time', () => {
  it('a resent message (same id) starts nothing new, while streaming and after; the upstream is called once', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const pace = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace }))
    const seen = llm.requests.length
    const message = { id: randomUUID(), content: 'Only once, please.' }
    const responding = client(user.token, a).chats.respond.mutate({ chatId, message })
    await until(() => llm.requests.length > seen, 'the upstream call')
    pace.release()
    const first = await responding

    // Resent through the other instance while the reply streams (a client that never saw the answer).
    const again = await client(user.token, b).chats.respond.mutate({ chatId, message })
    expect(again.reply.id).toBe(first.reply.id)
    expect(again.message.id).toBe(message.id)
    pace.releaseAll()
    const ended = await replyEnded(client(user.token, a), chatId, first.reply.id)
    expect(ended.status).toBe('complete')

    const late = await client(user.token, a).chats.respond.mutate({ chatId, message })
    expect(late.reply.id).toBe(first.reply.id)
    expect(llm.requests.length - seen).toBe(1)
    expect((await messagesOf(client(user.token, a), chatId)).map(m => [m.role, m.content])).toEqual([['user', 'Only once, please.'], ['assistant', STORY]])
  })

  it('20 parallel respond calls on one chat: one is accepted, the rest answer 409 REPLY_IN_PROGRESS and store nothing', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const pace = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace }))
    const seen = llm.requests.length
    // A client each (no batching), spread over both instances.
    const sent = Array.from({ length: 20 }, (_, i) => ({ id: randomUUID(), content: `attempt ${i}` }))
    const settling = Promise.allSettled(sent.map((message, i) => client(user.token, i % 2 ? b : a).chats.respond.mutate({ chatId, message })))
    await until(() => llm.requests.length > seen, 'the upstream call')
    pace.release()
    const results = await settling

    const accepted = results.filter(result => result.status === 'fulfilled').map(result => result.value)
    expect(accepted).toHaveLength(1)
    const winner = accepted[0]!
    for (const result of results.filter(result => result.status === 'rejected'))
      expect((result.reason as TRPCClientError<AppRouter>).data).toMatchObject({ httpStatus: 409, apiCode: 'REPLY_IN_PROGRESS', details: { replyId: winner.reply.id } })

    pace.releaseAll()
    expect((await replyEnded(client(user.token, a), chatId, winner.reply.id)).status).toBe('complete')
    expect(llm.requests.length - seen).toBe(1)
    expect((await messagesOf(client(user.token, a), chatId)).map(m => [m.role, m.id])).toEqual([['user', winner.message.id], ['assistant', expect.any(String)]])
    expect((await spendingRows(user.id)).filter(row => row.request_id?.endsWith(':reserve'))).toHaveLength(1)
  })
})

describe('failures store nothing and bill nothing', () => {
  it('a message that cannot be stored after its upstream call started: the call is abandoned, nothing is stored, nothing billed', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const sdk = client(user.token, a)
    const pace = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace }))
    const seen = llm.requests.length
    const db = a.database.db
    // The message's insert waits on a lock the test holds until the upstream has the
    // request (so the store fails after the call started, never before), then fails.
    await sql`CREATE OR REPLACE FUNCTION test_refuse_message() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock(4242); RAISE EXCEPTION 'message refused by the test'; END $$`.execute(db)
    await sql`CREATE TRIGGER test_refuse_message BEFORE INSERT ON messages FOR EACH ROW
      WHEN (NEW.content = 'refused by the test') EXECUTE FUNCTION test_refuse_message()`.execute(db)
    try {
      await db.connection().execute(async (held) => {
        await sql`SELECT pg_advisory_lock(4242)`.execute(held)
        const responding = sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'refused by the test' } }).catch((error: unknown) => error)
        await until(() => llm.requests.length > seen, 'the upstream to receive the reply\'s request')
        await sql`SELECT pg_advisory_unlock(4242)`.execute(held)
        expect(((await responding) as TRPCClientError<AppRouter>).data).toMatchObject({ httpStatus: 500 })
      })
    }
    finally {
      await sql`DROP TRIGGER test_refuse_message ON messages`.execute(db)
    }
    await until(() => llm.requests[seen]!.aborted, 'the abandoned upstream request to be aborted')
    expect(await messagesOf(sdk, chatId)).toEqual([])
    await until(async () => (await db.selectFrom('llm_request_log').select('state').where('user_id', '=', user.id).execute()).every(row => row.state === 'completed'), 'the call to settle')
    const rows = await spendingRows(user.id)
    expect(rows.map(row => row.request_id!.split(':')[2])).toEqual(['reserve', 'refund'])
    expect(rows.reduce((sum, row) => sum + signed(row), 0)).toBe(0)
    expect(await balanceOf(user)).toBe(INITIAL)
    // The chat takes the next turn: the slot was given back.
    pace.releaseAll()
    llm.behave(() => ({ kind: 'complete', content: STORY }))
    const next = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Once more.' } })
    expect((await replyEnded(sdk, chatId, next.reply.id)).status).toBe('complete')
  })

  it('an upstream 500 ends the reply as failed with an error code; nothing is stored and the reservation comes back', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const watcher = await device(user, b, 'device on instance B')
    llm.behave(() => ({ kind: 'status', status: 500 }))
    const sdk = client(user.token, a)
    const { message, reply } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Are you there?' } })

    const { end } = await watcher.ended(reply.id)
    expect(end).toMatchObject({ type: 'reply.end', chatId, replyId: reply.id, messageId: null, status: 'failed', error: { code: expect.any(String), message: expect.any(String) } })
    expect(await sdk.chats.getReply.query({ chatId, replyId: reply.id })).toMatchObject({ status: 'failed', messageId: null, error: { code: end.error!.code } })
    // The person's message stays (it can be retried); no reply message.
    expect((await messagesOf(sdk, chatId)).map(m => m.id)).toEqual([message.id])
    const rows = await spendingRows(user.id)
    expect(rows.map(row => row.request_id!.split(':')[2])).toEqual(['reserve', 'refund'])
    expect(rows.reduce((sum, row) => sum + signed(row), 0)).toBe(0)
    expect(await balanceOf(user)).toBe(INITIAL)
    watcher.stop()
  })

  it('402 with a zero balance: no message stored, no upstream call', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    await a.api.services.billing.debit({ userId: user.id, amount: await balanceOf(user), requestId: `drain:${randomUUID()}` })
    const seen = llm.requests.length
    const sdk = client(user.token, a)
    expect((await failure(sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Hello?' } }))).data).toMatchObject({ httpStatus: 402, apiCode: 'INSUFFICIENT_FLUX' })
    expect(await sdk.chats.pullMessages.query({ chatId })).toMatchObject({ messages: [] })
    expect(llm.requests.length).toBe(seen)
    expect(await balanceOf(user)).toBe(0)
  })
})

describe('the ledger adds up', () => {
  it('after complete, stopped, failed, retried and regenerated replies: balance = initial − the flux of every stored reply', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    const chatId = await botChat(user)
    expect((await sdk.flux.balance.query()).flux).toBe(INITIAL)

    // Complete: 3 000 tokens → 3 Flux.
    llm.behave(() => ({ kind: 'complete', content: 'A full answer.', usage: { prompt_tokens: 2000, completion_tokens: 1000 } }))
    await turn(sdk, chatId, 'one')

    // Stopped after three pieces.
    llm.behave(() => ({ kind: 'complete', content: THE, stallAfter: 3 }))
    const seen = llm.requests.length
    const { reply: stopped } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'two' } })
    await until(async () => (await sdk.chats.getReply.query({ chatId, replyId: stopped.id })).text === 'the '.repeat(3), 'three pieces')
    await sdk.chats.stopReply.mutate({ chatId, replyId: stopped.id })
    expect((await replyEnded(sdk, chatId, stopped.id)).status).toBe('stopped')
    await until(() => llm.requests[seen]!.aborted, 'the stopped call\'s upstream request to end')

    // Failed, then retried by regenerating the user message.
    llm.behave(() => ({ kind: 'status', status: 500 }))
    const failed = await turn(sdk, chatId, 'three')
    expect(failed.ended.status).toBe('failed')
    llm.behave(() => ({ kind: 'complete', content: 'Second try.', usage: { prompt_tokens: 500, completion_tokens: 600 } }))
    const retry = await sdk.chats.regenerate.mutate({ chatId, messageId: failed.message.id })
    const retried = await replyEnded(sdk, chatId, retry.reply.id)
    expect(retried.status).toBe('complete')

    // Regenerated: the last assistant message answered again.
    llm.behave(() => ({ kind: 'complete', content: 'Third take.', usage: { prompt_tokens: 4000, completion_tokens: 2500 } }))
    const again = await sdk.chats.regenerate.mutate({ chatId, messageId: retried.messageId! })
    expect((await replyEnded(sdk, chatId, again.reply.id)).status).toBe('complete')

    const replies = repliesIn(await messagesOf(sdk, chatId))
    expect(replies.map(reply => reply.metadata!.status)).toEqual(['complete', 'stopped', 'complete', 'complete'])
    expect(replies.map(reply => reply.metadata!.flux)).toEqual([3, expect.any(Number), 2, 7])
    const spent = replies.reduce((sum, reply) => sum + (reply.metadata!.flux as number), 0)
    for (const reply of replies)
      expect((await callLedger(reply.metadata!.callId)).net, `ledger of reply ${reply.id}`).toBe(reply.metadata!.flux)

    expect(await balanceOf(user)).toBe(INITIAL - spent)
    expect((await sdk.flux.balance.query()).flux).toBe(INITIAL - spent)
    const rows = await spendingRows(user.id)
    expect(rows.reduce((sum, row) => sum + signed(row), 0)).toBe(spent)
    expect(rows.at(-1)!.balance_after).toBe(INITIAL - spent)
    // Five calls (the failed one refunded in full), each in the request log.
    const logged = await a.database.db.selectFrom('llm_request_log').select(['request_id', 'flux_consumed']).where('user_id', '=', user.id).execute()
    expect(logged).toHaveLength(5)
    expect(logged.reduce((sum, row) => sum + row.flux_consumed, 0)).toBe(spent)
  })
})

describe('a reply outlives its client, and is kept when its instance shuts down', () => {
  it('a client that disconnects mid-reply: the reply still completes and is stored', async () => {
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const leaving = await device(user, a, 'the device that leaves')
    const pace = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace }))
    const seen = llm.requests.length
    const responding = leaving.sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Tell me, then I must go.' } })
    await until(() => llm.requests.length > seen, 'the upstream call')
    pace.release(2)
    const { reply } = await responding
    await until(() => leaving.replyText(reply.id).length > 0, 'the first delta')

    // Subscription and socket gone, mid-reply.
    leaving.stop()
    await leaving.sdk.close()
    pace.releaseAll()

    const ended = await replyEnded(client(user.token, b), chatId, reply.id)
    expect(ended).toMatchObject({ status: 'complete', text: STORY })
    expect(await storedMessage(client(user.token, b), chatId, ended.messageId!)).toMatchObject({ content: STORY, metadata: { status: 'complete' } })
    expect(llm.requests[seen]).toMatchObject({ completed: true, aborted: false })
  })

  it('shutting down the instance that runs a reply stores the partial reply as stopped', async () => {
    // A third instance of the deployment, so the other two keep serving the rest of the file.
    const doomed = await startTestServer({ database, redisPrefix })
    const user = await createVerifiedUser(a)
    const chatId = await botChat(user)
    const watcher = await device(user, a, 'device on instance A')
    llm.behave(() => ({ kind: 'complete', content: THE, stallAfter: 3 }))
    const seen = llm.requests.length
    const { reply } = await client(user.token, doomed).chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Keep going.' } })
    const partial = 'the '.repeat(3)
    await until(() => watcher.replyText(reply.id) === partial, 'three pieces on instance A')

    await doomed.close()
    await until(() => llm.requests[seen]!.aborted, 'the upstream request to be cut by the shutdown')
    const { end } = await watcher.ended(reply.id)
    expect(end).toMatchObject({ status: 'stopped', messageId: expect.any(String) })
    const sdk = client(user.token, a)
    expect(await sdk.chats.getReply.query({ chatId, replyId: reply.id })).toMatchObject({ status: 'stopped', text: partial, messageId: end.messageId })
    const stored = await storedMessage(sdk, chatId, end.messageId!)
    expect(stored).toMatchObject({ role: 'assistant', content: partial, metadata: { status: 'stopped', replyId: reply.id } })
    expect((await callLedger(stored.metadata!.callId)).net).toBe(stored.metadata!.flux)
    watcher.stop()
  })
})
