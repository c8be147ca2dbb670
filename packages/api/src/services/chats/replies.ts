import { randomUUID } from 'node:crypto'

import type { Chat, ChatReply, Db } from '@airi/db'

import { createLru } from '../../lru.ts'
import { keys } from '../../adapters/keys.ts'
import type { Cache } from '../../adapters/ports.ts'
import { ApiError, isUniqueViolation } from '../../errors.ts'
import type { Clock } from '../../clock.ts'
import type { Logger } from '../../logger.ts'
import type { CharacterService, Persona } from '../characters/index.ts'
import type { ConfigService } from '../config.ts'
import { createSseJsonReader, type CompletionResult, type LlmGateway, type ReservedCompletion, type Settlement } from '../llm-gateway/index.ts'
import type { RateLimits } from '../rate-limits.ts'
import { toMessage, type ReplyEnd, type ReplyStatus } from './events.ts'
import type { SyncedMessage } from './fanout.ts'
import type { createLiveSync } from './live-sync.ts'
import { buildPrompt, readHistoryAhead, type HistoryReader } from './prompt.ts'
import { createReplySlots, type SlotClaim } from './reply-slot.ts'
import { chatNotFound, type ChatReads } from './reads.ts'
import { appendMessages, asStored, type MessageToStore } from './store.ts'

type LiveSync = ReturnType<typeof createLiveSync>

/** Memories read for one message; the reply fits them to its budget. */
type Memories = Awaited<ReturnType<ReplyMemory['recall']>>
const NO_MEMORIES: Memories = { within: () => ({ lines: [], markUsed: async () => {} }) }

/** What a reply knows of memory (the memory domain's, wired by the composition root). */
interface ReplyMemory {
  /** Memories for a prompt answering `message`, best first; `within` keeps what fits `tokens` as `count` counts them. */
  recall: (userId: string, characterId: string, message: string) => Promise<{ within: (budget: { count: (text: string) => number, tokens: number }) => { lines: string[], markUsed: () => Promise<void> } }>
  /** A reply was completed and stored: extraction may follow (it returns at once). */
  afterReply: (turn: { userId: string, characterId: string, messageId: string, userMessage: string, reply: string, language?: string }) => void
}

export interface ReplyDeps {
  db: Db
  reads: Pick<ChatReads, 'requireMembership'>
  live: Pick<LiveSync, 'announce' | 'announceReply' | 'requestStop' | 'onStopRequest'>
  gateway: Pick<LlmGateway, 'reserve' | 'tokenCounter' | 'staleAfterMs'>
  characters: Pick<CharacterService, 'persona'>
  config: Pick<ConfigService, 'get'>
  cache: Cache
  rateLimits?: Pick<RateLimits, 'hit'>
  logger: Logger
  /** Reads the time for the staleness of a reply whose instance stopped. */
  clock: Clock
  /** Deltas of one reply go out at most this often (the first at once). */
  deltaIntervalMs?: number
  /** Long-term memory: recalled into prompts, extracted after completed replies. */
  memory?: ReplyMemory
}

export interface ReplyOptions {
  model?: string
  maxTokens?: number
  /** The caller's languages, most preferred first: the character's prompts are picked in the first it has. */
  languages: string[]
  /** The caller's name, for a character's `{{user}}`. */
  userName: string
}

export interface ReplyView {
  replyId: string
  status: ReplyStatus
  text: string
  messageId: string | null
  error?: { code: string, message: string }
}

interface BotChat {
  chat: Chat
  members: Array<{ member_type: 'user' | 'character', member_id: string }>
}

/** What a turn read ahead of the chat: the slot claimed with a guessed character and model, and that character's persona. */
interface Ahead {
  guess: SlotClaim
  claimed: boolean
  persona: Persona | undefined
  /** The guessed character's memories for the message, read beside the chat. */
  memories: Promise<Memories> | undefined
}

/** A reply being made on this instance. */
interface Running {
  id: string
  chatId: string
  userId: string
  characterId: string
  /** The chat's user members: whose subscriptions get its events. */
  users: string[]
  answersId: string
  /** The user message it answers, and the caller's first language: what extraction reads after it. */
  question: string
  language: string | undefined
  /** Notes the memories recalled into its prompt as used; called once the reply is stored (off the first delta's path). */
  markMemoriesUsed?: () => Promise<void>
  regeneratesId: string | null
  model: string
  callId: string
  text: string
  /** Characters of `text` already sent as deltas. */
  sent: number
  /** Set while deltas wait for the interval to pass. */
  cooldown?: NodeJS.Timeout
  /** A failure the upstream stream reported (an error event). */
  error?: { code: string, message: string }
  /** Aborted by `stopReply` (any instance) or the shutdown: the gateway call ends, what was generated is kept. */
  stop: AbortController
  done?: Promise<void>
  stopListening?: () => Promise<void>
}

const DEFAULT_DELTA_INTERVAL_MS = 50
/** The longest reply kept: far past any model's output cap (a message a client sends is at most 100 000). */
const MAX_REPLY_CHARS = 512 * 1024

const replyNotFound = () => new ApiError(404, 'REPLY_NOT_FOUND', 'No such reply in this chat')
const shuttingDown = () => new ApiError(503, 'SHUTTING_DOWN', 'The server is shutting down; retry the call')

/** The `error` of an OpenAI-shaped stream event (our relay's error event), if it is one. */
function streamError(payload: unknown): { code: string, message: string } | undefined {
  const error = (payload as { error?: { code?: unknown, message?: unknown } } | null)?.error
  if (!error || typeof error !== 'object')
    return undefined
  return { code: typeof error.code === 'string' ? error.code : 'UPSTREAM_UNAVAILABLE', message: typeof error.message === 'string' ? error.message : 'The upstream stream failed' }
}

/** The reply text in a chunk: the first choice's `delta.content`. */
function deltaText(payload: unknown): string {
  const choice = (payload as { choices?: Array<{ delta?: { content?: unknown } }> } | null)?.choices?.[0]
  return typeof choice?.delta?.content === 'string' ? choice.delta.content : ''
}

/**
 * Replies made on the server: `respond` stores the user's message and starts a
 * reply; the reply runs here as one streamed LLM gateway call, its text goes to
 * every subscription of the chat's users as coalesced `reply` events (through the
 * same notices as messages), and what was generated is stored once as an assistant
 * message tied to the call that paid for it. A reply is owned by the instance that
 * runs it until it is stored: `stopReply` reaches it on any instance, shutdown
 * stops it and stores what it had, and after a crash its row is read as failed once
 * no call could still be running (the gateway's deadline and margin), when
 * reconciliation has settled the call.
 */
export function createReplies({ db, reads, live, gateway, characters, config, cache, rateLimits, logger, clock, deltaIntervalMs = DEFAULT_DELTA_INTERVAL_MS, memory }: ReplyDeps) {
  const running = new Map<string, Running>()
  const slots = createReplySlots({ db, gateway, clock })
  /** Each chat's character and model at its last reply here: what the next turn guesses ahead with. */
  const lastAnswered = createLru<string, { characterId: string, model: string }>(10_000)
  let closing = false

  async function textTtlSeconds(): Promise<number> {
    return Math.ceil(await gateway.staleAfterMs() / 1000)
  }

  /** Sends what accumulated since the last delta, then holds further deltas for the interval. */
  function flush(reply: Running): void {
    const delta = reply.text.slice(reply.sent)
    if (!delta)
      return
    const offset = reply.sent
    reply.sent = reply.text.length
    void live.announceReply({ type: 'reply', chatId: reply.chatId, replyId: reply.id, users: reply.users, offset, delta })
      .catch((error: unknown) => logger.warn({ err: error, replyId: reply.id }, 'could not announce a reply delta'))
    // For getReply on the other instances (late joiners, gaps).
    void textTtlSeconds().then(ttl => cache.set(keys.chatReplyText(reply.id), reply.text, ttl))
      .catch((error: unknown) => logger.warn({ err: error, replyId: reply.id }, 'could not keep a reply\'s text for other instances'))
    reply.cooldown = setTimeout(() => {
      reply.cooldown = undefined
      flush(reply)
    }, deltaIntervalMs)
  }

  function append(reply: Running, text: string): void {
    if (!text || reply.text.length >= MAX_REPLY_CHARS)
      return
    reply.text += text
    // An upstream that ignores max_tokens must not grow a reply (held here and in the cache) without end.
    if (reply.text.length >= MAX_REPLY_CHARS) {
      reply.text = reply.text.slice(0, MAX_REPLY_CHARS)
      reply.error = { code: 'REPLY_TOO_LONG', message: `The reply was cut at ${MAX_REPLY_CHARS} characters` }
      reply.stop.abort(new Error('reply too long'))
    }
    // The first delta goes at once; the next wait for the interval.
    if (!reply.cooldown)
      flush(reply)
  }

  type MemberRow = BotChat['members'][number]

  async function readMembers(chatId: string): Promise<MemberRow[]> {
    return db.selectFrom('chat_members').select(['member_type', 'member_id'])
      .where('chat_id', '=', chatId).where('deleted_at', 'is', null)
      .orderBy('created_at').orderBy('member_id').execute()
  }

  /** The chat's first live character: who answers. */
  async function personaOf(members: MemberRow[], languages: string[]): Promise<Persona> {
    for (const { member_id: id } of members.filter(member => member.member_type === 'character')) {
      const persona = await characters.persona(id, languages).catch((error: unknown) => {
        if (error instanceof ApiError && error.status === 404)
          return undefined
        throw error
      })
      if (persona)
        return persona
    }
    throw new ApiError(400, 'NO_CHARACTER', 'This chat has no character left to answer; add one', { field: 'chatId' })
  }

  /** The model: the caller's, else the character's (when the router has it), else the router's default. */
  async function counterFor(model: string | undefined, persona: Persona) {
    if (model !== undefined || !persona.defaultModelId)
      return gateway.tokenCounter(model)
    return gateway.tokenCounter(persona.defaultModelId).catch((error: unknown) => {
      if (error instanceof ApiError && error.status === 404)
        return gateway.tokenCounter(undefined)
      throw error
    })
  }

  /**
   * What a new turn reads beside the chat, in a chat this instance answered in
   * before (its character and model then are the guess): the slot claimed for the
   * reply, the character's persona and its memories for the message. The turn checks
   * them against the chat it reads; a wrong guess only costs a correction.
   */
  function readAhead(userId: string, chatId: string, answers: { id: string, content: string }, options: ReplyOptions): Promise<Ahead> | undefined {
    const last = lastAnswered.get(chatId)
    if (!last)
      return undefined
    const guess: SlotClaim = { id: randomUUID(), callId: randomUUID(), chatId, userId, characterId: last.characterId, answersId: answers.id, regeneratesId: null, model: options.model ?? last.model }
    // Recall is the turn's longest read with many memories: it goes with the first round.
    const memories = recall(userId, last.characterId, answers.content)
    return Promise.all([
      slots.claimAhead(guess),
      characters.persona(last.characterId, options.languages).catch(() => undefined),
    ]).then(([claimed, persona]) => ({ guess, claimed, persona, memories }))
  }

  /** The character's memories for a message; a recall that fails costs the reply its memories, not the reply. */
  function recall(userId: string, characterId: string, message: string): Promise<Memories> {
    if (!memory)
      return Promise.resolve(NO_MEMORIES)
    return memory.recall(userId, characterId, message).catch((error: unknown) => {
      logger.warn({ err: error, userId, characterId }, 'could not recall memories; the reply goes without them')
      return NO_MEMORIES
    })
  }

  /**
   * Starts a reply to `answers` (the user message, stored by `store` while the call
   * starts, or already stored). Nothing is stored and nothing billed when this throws.
   */
  async function start(userId: string, { chat, members }: BotChat, input: ReplyOptions & {
    answers: { id: string, content: string, beforeSeq: number }
    regenerates: string | null
    store?: MessageToStore
    history: HistoryReader
    ahead?: Ahead
  }): Promise<{ replyId: string, message?: SyncedMessage }> {
    if (closing)
      throw shuttingDown()
    const { ahead } = input
    const firstCharacter = members.find(member => member.member_type === 'character')?.member_id
    const persona = ahead?.persona?.id === firstCharacter && ahead?.persona ? ahead.persona : await personaOf(members, input.languages)
    const counter = await counterFor(input.model, persona)
    lastAnswered.set(chat.id, { characterId: persona.id, model: counter.alias })
    const reply: Running = {
      id: ahead?.claimed ? ahead.guess.id : randomUUID(),
      chatId: chat.id,
      userId,
      characterId: persona.id,
      users: members.filter(member => member.member_type === 'user').map(member => member.member_id),
      answersId: input.answers.id,
      question: input.answers.content,
      language: input.languages[0],
      regeneratesId: input.regenerates,
      model: counter.alias,
      // Chosen before the claim, so the reply's row names its call from the start.
      callId: ahead?.claimed ? ahead.guess.callId : randomUUID(),
      text: '',
      sent: 0,
      stop: new AbortController(),
    }
    // The history was asked for with the chat; memories are recalled and the prompt made while the slot is claimed.
    const recalled = ahead?.memories && ahead.persona?.id === persona.id ? ahead.memories : recall(userId, persona.id, input.answers.content)
    const prompt = Promise.all([recalled, config.get('MEMORY_CONTEXT_TOKENS'), config.get('CHAT_CONTEXT_TOKENS')])
      .then(([memories, memoryTokens, budget]) => {
        const used = memories.within({ count: counter.count, tokens: memoryTokens })
        reply.markMemoriesUsed = used.markUsed
        return buildPrompt({ history: input.history, beforeSeq: input.answers.beforeSeq, persona, memories: used.lines, userName: input.userName, message: input.answers.content, counter, budget })
      })
    prompt.catch(() => {})
    if (!ahead?.claimed)
      await slots.claim(reply)
    else if (ahead.guess.characterId !== reply.characterId || ahead.guess.model !== reply.model)
      await db.updateTable('chat_replies').set({ character_id: reply.characterId, model: reply.model }).where('id', '=', reply.id).execute()
    // From here a stop request finds it, on any instance.
    running.set(reply.id, reply)
    let call: ReservedCompletion | undefined
    let started: Promise<CompletionResult> | undefined
    try {
      reply.stopListening = await live.onStopRequest((notice) => {
        if (notice.replyId === reply.id)
          reply.stop.abort(new Error('stopped'))
      })
      const messages = await prompt
      call = await gateway.reserve(userId, { model: counter.alias, messages, stream: true, ...(input.maxTokens ? { max_tokens: input.maxTokens } : {}) }, reply.stop.signal, { callId: reply.callId, kind: 'reply' })
      // The upstream is called while the message is stored (its first tokens are on the
      // way meanwhile); nothing of its answer is read before the store commits.
      started = call.start()
      started.catch(() => {})
      const store = input.store
      // One statement, so its one round trip is all the store adds before the answer is read.
      const stored = store && await appendMessages(db, chat.id, [store])
      if (store && !stored)
        throw chatNotFound()
      reply.done = run(reply, started)
      // Committed: from here the reply runs whatever happens to the announcement (devices read their feeds).
      if (stored) {
        await live.announce(chat.id, stored.rows.map(toMessage), stored.heads)
          .catch((error: unknown) => logger.warn({ err: error, chatId: chat.id }, 'could not announce a message; devices read it from their feeds'))
      }
      return { replyId: reply.id, message: stored && toMessage(stored.rows[0]!) }
    }
    catch (error) {
      running.delete(reply.id)
      await reply.stopListening?.()
      // Nothing was stored: the call, started or not, costs nothing.
      if (started) {
        call!.abandon('the reply could not be stored')
        await started.then(result => result.kind === 'stream' ? result.settled : undefined).catch(() => {})
      }
      else {
        await call?.cancel('the reply did not start').catch((cancelError: unknown) => logger.error({ err: cancelError, replyId: reply.id }, 'could not give back a reply\'s reservation; reconciliation will'))
      }
      await slots.release(reply.id)
        .catch((deleteError: unknown) => logger.error({ err: deleteError, replyId: reply.id }, 'could not remove the row of a reply that did not start'))
      if (isUniqueViolation(error))
        throw new ApiError(409, 'MESSAGE_ID_CONFLICT', 'This message id is already used', { field: 'message.id' })
      throw error
    }
  }

  /** Reads the reply's stream to its end, then stores it (or its failure) and tells every device. */
  async function run(reply: Running, started: Promise<CompletionResult>): Promise<void> {
    let settlement: Settlement | undefined
    try {
      const result = await started
      if (result.kind !== 'stream')
        throw new Error('a reply\'s call answered without a stream')
      const reader = createSseJsonReader((payload) => {
        reply.error = streamError(payload) ?? reply.error
        append(reply, deltaText(payload))
      })
      for await (const chunk of result.chunks)
        reader.feed(chunk)
      settlement = await result.settled
    }
    catch (error) {
      if (!reply.stop.signal.aborted) {
        reply.error = error instanceof ApiError
          ? { code: error.code, message: error.message }
          : { code: 'INTERNAL_ERROR', message: 'The reply failed' }
        if (!(error instanceof ApiError))
          logger.error({ err: error, replyId: reply.id }, 'a reply failed')
      }
    }
    clearTimeout(reply.cooldown)
    reply.cooldown = undefined
    flush(reply)
    clearTimeout(reply.cooldown)
    const status: ReplyEnd['status'] = reply.stop.signal.aborted || (reply.error && reply.text) ? 'stopped' : reply.error ? 'failed' : 'complete'
    try {
      const messageId = await finish(reply, status, settlement)
      void reply.markMemoriesUsed?.().catch((error: unknown) => logger.warn({ err: error, replyId: reply.id }, 'could not mark recalled memories as used'))
      // Only a whole reply: a stopped or failed one may have cut the turn's meaning short.
      if (status === 'complete' && messageId)
        memory?.afterReply({ userId: reply.userId, characterId: reply.characterId, messageId, userMessage: reply.question, reply: reply.text, language: reply.language })
    }
    catch (error) {
      logger.error({ err: error, replyId: reply.id }, 'could not store a reply; it reads as failed once its call is reconciled')
    }
    finally {
      running.delete(reply.id)
      await reply.stopListening?.().catch(() => {})
      await cache.del(keys.chatReplyText(reply.id)).catch(() => {})
    }
  }

  /**
   * Stores what was generated (when anything was) as the chat's next message, ends
   * the reply's row, and tells every device: the message first, then `reply.end`.
   * Resolves to the stored message's id (null when nothing was stored).
   */
  async function finish(reply: Running, status: ReplyEnd['status'], settlement: Settlement | undefined): Promise<string | null> {
    const end = { type: 'reply.end' as const, chatId: reply.chatId, replyId: reply.id }
    const error = status === 'complete' ? undefined : reply.error
    if (status === 'failed' || !reply.text) {
      await db.updateTable('chat_replies').set({ status, error_code: error?.code ?? null, error_message: error?.message ?? null, ended_at: new Date() })
        .where('id', '=', reply.id).execute()
      await live.announceReply({ ...end, feeds: reply.users.map(userId => [userId, 0]), messageId: null, status, ...(error ? { error } : {}) })
      return null
    }
    const metadata = {
      replyId: reply.id,
      callId: reply.callId,
      model: reply.model,
      status,
      usage: settlement?.usage ? { input: settlement.usage.prompt_tokens ?? null, output: settlement.usage.completion_tokens ?? null } : null,
      flux: settlement?.flux ?? null,
      answers: reply.answersId,
      ...(reply.regeneratesId ? { regenerates: reply.regeneratesId } : {}),
      ...(error ? { error } : {}),
    }
    const stored = await db.transaction().execute(async (trx) => {
      const appended = await appendMessages(trx, reply.chatId, [{ id: randomUUID(), senderId: reply.characterId, role: 'assistant', content: reply.text, metadata }])
      await trx.updateTable('chat_replies').set({
        status,
        message_id: appended?.rows[0]!.id ?? null,
        error_code: error?.code ?? null,
        error_message: error?.message ?? null,
        ended_at: new Date(),
      }).where('id', '=', reply.id).execute()
      return appended
    })
    if (!stored) {
      // The chat was deleted meanwhile: nobody can read it any more.
      await live.announceReply({ ...end, feeds: reply.users.map(userId => [userId, 0]), messageId: null, status })
      return null
    }
    const messages = stored.rows.map(toMessage)
    await live.announce(reply.chatId, messages, stored.heads)
    await live.announceReply({ ...end, feeds: reply.users.map(userId => [userId, stored.heads.get(userId) ?? 0]), messageId: messages[0]!.id, status, ...(error ? { error } : {}) })
    return messages[0]!.id
  }

  async function replyRow(chatId: string, replyId: string): Promise<ChatReply> {
    const row = await db.selectFrom('chat_replies').selectAll().where('id', '=', replyId).where('chat_id', '=', chatId).executeTakeFirst()
    if (!row)
      throw replyNotFound()
    return row
  }

  /** The chat, when the caller is a member and it is a bot chat, with its members (read at the same time). */
  async function requireBotChat(userId: string, chatId: string): Promise<BotChat> {
    const [chat, members] = await Promise.all([reads.requireMembership(userId, chatId), readMembers(chatId)])
    if (chat.type !== 'bot')
      throw new ApiError(400, 'NOT_A_BOT_CHAT', 'Replies are made in bot chats only', { field: 'chatId' })
    return { chat, members }
  }


  return {
    /**
     * Stores the caller's message and starts the character's reply to it. A
     * resend (same message id) answers the same reply and starts nothing.
     */
    async respond(userId: string, input: ReplyOptions & { chatId: string, message: { id: string, content: string } }): Promise<{ message: SyncedMessage, reply: { id: string } }> {
      // A turn is a send and a gateway call: it counts against both limits (asked at once).
      await Promise.all([rateLimits?.hit('chat-messages', userId), rateLimits?.hit('gateway', userId)])
      const id = asStored(input.message.id)
      // Everything a turn reads goes at once: the chat, a resend's message, the history, and what readAhead guesses.
      const history = readHistoryAhead(db, input.chatId, Number.MAX_SAFE_INTEGER)
      const ahead = readAhead(userId, input.chatId, { id, content: input.message.content }, input)
      try {
        const [botChat, existing] = await Promise.all([
          requireBotChat(userId, input.chatId),
          db.selectFrom('messages').selectAll().where('id', '=', id).executeTakeFirst(),
        ])
        const { chat } = botChat
        if (existing) {
          const reply = existing.chat_id === chat.id && existing.sender_id === userId && existing.role === 'user' && existing.deleted_at === null
            ? await db.selectFrom('chat_replies').select('id').where('chat_id', '=', chat.id).where('answers_id', '=', id).orderBy('created_at').executeTakeFirst()
            : undefined
          if (!reply)
            throw new ApiError(409, 'MESSAGE_ID_CONFLICT', 'This message id is already used', { field: 'message.id' })
          return { message: toMessage(existing), reply: { id: reply.id } }
        }
        const { replyId, message } = await start(userId, botChat, {
          ...input,
          answers: { id, content: input.message.content, beforeSeq: Number.MAX_SAFE_INTEGER },
          regenerates: null,
          store: { id, senderId: userId, role: 'user', content: input.message.content },
          history,
          ahead: await ahead,
        })
        return { message: message!, reply: { id: replyId } }
      }
      catch (error) {
        // A slot claimed ahead for a turn that did not start is given back (a resend's included).
        const read = await ahead?.catch(() => undefined)
        if (read?.claimed)
          await slots.release(read.guess.id).catch((releaseError: unknown) => logger.error({ err: releaseError, replyId: read.guess.id }, 'could not give back a reply slot'))
        throw error
      }
    },

    /**
     * Answers again the user message that `messageId` (the chat's last assistant
     * message made here) answered; or answers a user message whose reply failed,
     * when it is the chat's last message.
     */
    async regenerate(userId: string, input: ReplyOptions & { chatId: string, messageId: string }): Promise<{ reply: { id: string } }> {
      await rateLimits?.hit('gateway', userId)
      const botChat = await requireBotChat(userId, input.chatId)
      const { chat } = botChat
      const last = await db.selectFrom('messages').selectAll().where('chat_id', '=', chat.id).where('deleted_at', 'is', null)
        .where('role', 'in', ['user', 'assistant']).orderBy('seq', 'desc').limit(1).executeTakeFirst()
      const target = await db.selectFrom('messages').selectAll().where('id', '=', asStored(input.messageId)).where('chat_id', '=', chat.id)
        .where('deleted_at', 'is', null).executeTakeFirst()
      if (!target)
        throw new ApiError(404, 'MESSAGE_NOT_FOUND', 'No such message in this chat', { field: 'messageId' })
      const cannot = (message: string) => new ApiError(400, 'CANNOT_REGENERATE', message, { field: 'messageId' })
      let answers = target
      if (target.role === 'assistant') {
        const answered = (target.metadata as { answers?: unknown } | null)?.answers
        if (typeof answered !== 'string')
          throw cannot('Only replies made by the server can be regenerated')
        const lastAssistant = await db.selectFrom('messages').select('id').where('chat_id', '=', chat.id).where('deleted_at', 'is', null)
          .where('role', '=', 'assistant').orderBy('seq', 'desc').limit(1).executeTakeFirst()
        if (lastAssistant?.id !== target.id)
          throw cannot('Only the chat\'s last reply can be regenerated')
        const original = await db.selectFrom('messages').selectAll().where('id', '=', answered).where('chat_id', '=', chat.id)
          .where('deleted_at', 'is', null).executeTakeFirst()
        if (!original)
          throw cannot('The message this reply answered was deleted')
        answers = original
      }
      else if (target.role !== 'user' || target.sender_id !== userId || last?.id !== target.id) {
        throw cannot('Give the chat\'s last reply, or your last message when its reply failed')
      }
      const { replyId } = await start(userId, botChat, {
        ...input,
        answers: { id: answers.id, content: answers.content, beforeSeq: answers.seq },
        history: readHistoryAhead(db, chat.id, answers.seq),
        regenerates: target.role === 'assistant' ? target.id : null,
      })
      return { reply: { id: replyId } }
    },

    /** The text of a reply so far and how it stands: for a device that joined late or saw a gap. */
    async getReply(userId: string, input: { chatId: string, replyId: string }): Promise<ReplyView> {
      await reads.requireMembership(userId, input.chatId)
      const row = await replyRow(input.chatId, input.replyId)
      const error = row.error_code ? { error: { code: row.error_code, message: row.error_message ?? '' } } : {}
      if (row.status === 'streaming') {
        const local = running.get(row.id)
        if (local)
          return { replyId: row.id, status: 'streaming', text: local.text, messageId: null }
        if (row.created_at.getTime() < clock.now() - await gateway.staleAfterMs())
          return { replyId: row.id, status: 'failed', text: '', messageId: null, error: { code: 'INTERRUPTED', message: 'The server making this reply stopped' } }
        return { replyId: row.id, status: 'streaming', text: await cache.get(keys.chatReplyText(row.id)) ?? '', messageId: null }
      }
      const message = row.message_id
        ? await db.selectFrom('messages').select('content').where('id', '=', row.message_id).where('deleted_at', 'is', null).executeTakeFirst()
        : undefined
      return { replyId: row.id, status: row.status, text: message?.content ?? '', messageId: row.message_id, ...error }
    },

    /** Ends a streaming reply, on whichever instance makes it; what was generated is stored. */
    async stopReply(userId: string, input: { chatId: string, replyId: string }): Promise<{ stopped: boolean }> {
      await reads.requireMembership(userId, input.chatId)
      const row = await replyRow(input.chatId, input.replyId)
      if (row.status !== 'streaming')
        return { stopped: false }
      const local = running.get(row.id)
      if (local)
        local.stop.abort(new Error('stopped'))
      else
        await live.requestStop(row.chat_id, row.id)
      return { stopped: true }
    },

    /** Stops taking replies, stops those under way and waits until each is stored. */
    async close(): Promise<void> {
      closing = true
      const replies = [...running.values()]
      for (const reply of replies)
        reply.stop.abort(new Error('the server is shutting down'))
      await Promise.all(replies.map(reply => reply.done))
    },
  }
}

