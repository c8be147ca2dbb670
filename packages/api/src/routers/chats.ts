import { tracked } from '@trpc/server'
import { z } from 'zod'

import { createRouter, protectedProcedure, relayed } from '../trpc.ts'
import { id, jsonObject, text } from './schemas.ts'

const memberRef = z.object({ type: z.enum(['user', 'character']), id })

/** How a reply is made: the model alias, its output cap, the language of the character's prompts. */
const replyOptions = {
  model: text().min(1).max(200).optional(),
  maxTokens: z.number().int().min(1).max(1_000_000).optional(),
  language: text().regex(/^[a-z]{1,8}(?:-[a-z0-9]{1,8})*$/i, 'a language tag such as en or zh-Hans').optional(),
}

/** The caller's languages: the one asked for first, then those of Accept-Language. */
const languagesOf = (language: string | undefined, accepted: string[]) => language ? [language, ...accepted] : accepted

const chatsInput = {
  /** Optional, so `chats.list.query()` lists every chat. */
  list: z.object({ characterId: id.optional() }).optional(),
  create: z.object({
    type: z.enum(['private', 'bot', 'group', 'channel']),
    title: text().trim().max(200).nullish(),
    members: z.array(memberRef).max(500).default([]),
  }),
  byId: z.object({ chatId: id }),
  update: z.object({ chatId: id, title: text().trim().max(200).nullable() }),
  addMembers: z.object({ chatId: id, members: z.array(memberRef).min(1).max(500) }),
  removeMember: z.object({ chatId: id, member: memberRef }),
  sendMessages: z.object({
    chatId: id,
    messages: z.array(z.object({
      /** Chosen by the client (e.g. a UUID), so resending the same message is a no-op. */
      id,
      role: z.enum(['user', 'assistant', 'system']),
      content: text().max(100_000),
      metadata: jsonObject.optional(),
    })).min(1).max(100),
  }),
  pullMessages: z.object({ chatId: id, afterSeq: z.number().int().min(0).default(0), limit: z.number().int().min(1).max(500).default(100) }),
  onMessages: z.object({ lastEventId: text().max(64).nullish() }).optional(),
  respond: z.object({
    chatId: id,
    message: z.object({ id, content: text().trim().min(1).max(100_000) }),
    ...replyOptions,
  }),
  regenerate: z.object({ chatId: id, messageId: id, ...replyOptions }),
  reply: z.object({ chatId: id, replyId: id }),
  editMessage: z.object({ chatId: id, messageId: id, content: text().trim().min(1).max(100_000) }),
  deleteMessages: z.object({ chatId: id, messageIds: z.array(id).min(1).max(100) }),
}

/** A live event with its id, which a client resumes from. */
const trackedEvent = <T>({ id, event }: { id: string, event: T }) => tracked(id, event)

export const chatsRouter = createRouter({
  list: protectedProcedure.input(chatsInput.list).query(({ ctx, input }) => ctx.services.chats.list(ctx.user.id, input)),
  get: protectedProcedure.input(chatsInput.byId).query(({ ctx, input }) => ctx.services.chats.get(ctx.user.id, input.chatId)),
  create: protectedProcedure.input(chatsInput.create).mutation(({ ctx, input }) => ctx.services.chats.create(ctx.user.id, { ...input, languages: ctx.languages, userName: ctx.user.name })),
  update: protectedProcedure.input(chatsInput.update).mutation(({ ctx, input }) => ctx.services.chats.update(ctx.user.id, input)),
  delete: protectedProcedure.input(chatsInput.byId).mutation(({ ctx, input }) => ctx.services.chats.delete(ctx.user.id, input.chatId)),
  addMembers: protectedProcedure.input(chatsInput.addMembers).mutation(({ ctx, input }) => ctx.services.chats.addMembers(ctx.user.id, input)),
  removeMember: protectedProcedure.input(chatsInput.removeMember).mutation(({ ctx, input }) => ctx.services.chats.removeMember(ctx.user.id, input)),
  sendMessages: protectedProcedure.input(chatsInput.sendMessages).mutation(({ ctx, input }) => ctx.services.chats.sendMessages(ctx.user.id, input)),
  pullMessages: protectedProcedure.input(chatsInput.pullMessages).query(({ ctx, input }) => ctx.services.chats.pullMessages(ctx.user.id, input)),

  /** Stores the caller's message and starts the character's reply (docs/conversations.md). */
  respond: protectedProcedure.input(chatsInput.respond).mutation(({ ctx, input: { language, ...input } }) =>
    ctx.services.chats.respond(ctx.user.id, { ...input, languages: languagesOf(language, ctx.languages), userName: ctx.user.name })),
  regenerate: protectedProcedure.input(chatsInput.regenerate).mutation(({ ctx, input: { language, ...input } }) =>
    ctx.services.chats.regenerate(ctx.user.id, { ...input, languages: languagesOf(language, ctx.languages), userName: ctx.user.name })),
  getReply: protectedProcedure.input(chatsInput.reply).query(({ ctx, input }) => ctx.services.chats.getReply(ctx.user.id, input)),
  stopReply: protectedProcedure.input(chatsInput.reply).mutation(({ ctx, input }) => ctx.services.chats.stopReply(ctx.user.id, input)),
  editMessage: protectedProcedure.input(chatsInput.editMessage).mutation(({ ctx, input }) => ctx.services.chats.editMessage(ctx.user.id, input)),
  deleteMessages: protectedProcedure.input(chatsInput.deleteMessages).mutation(({ ctx, input }) => ctx.services.chats.deleteMessages(ctx.user.id, input)),

  /**
   * New messages of every chat of the caller, after a first `ready` event. Event ids
   * are tracked: a client that reconnects with `lastEventId` (the SDK does it by
   * itself) gets what it missed first. The service reads the start position before
   * this resolves, so before tRPC confirms the subscription (`started`).
   */
  onMessages: protectedProcedure.input(chatsInput.onMessages).subscription(async ({ ctx, input, signal }) =>
    relayed(await ctx.services.chats.subscribe(ctx.user.id, { lastEventId: input?.lastEventId, signal }), trackedEvent, ctx.logger)),
})
