import { randomUUID } from 'node:crypto'

import type { ChatType, Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { CharacterService } from '../characters/index.ts'
import type { Users } from '../users.ts'
import { toMessage, type ChatChange } from './events.ts'
import type { createLiveSync } from './live-sync.ts'
import { toChatView, type ChatListItem, type ChatReads, type ChatView, type MemberRef } from './reads.ts'
import { withNames } from './prompt.ts'
import { appendMessages } from './store.ts'

const creatorOnly = () => new ApiError(403, 'FORBIDDEN', 'Only the chat\'s creator can do this')

/** The user members' ids: whose chat lists a change concerns. */
const usersOf = (members: MemberRef[]) => members.filter(ref => ref.type === 'user').map(ref => ref.id)

export interface ChatManagementDeps {
  db: Db
  reads: ChatReads
  /** Whether characters named as members exist, and a bot chat's greeting: the characters service owns them. */
  characters: Pick<CharacterService, 'existing' | 'persona'>
  /** Announces a greeting to the creator's devices, and chat changes to every member's. */
  live: Pick<ReturnType<typeof createLiveSync>, 'announce' | 'announceChat'>
  /** Whether users named as members exist: the users port over better-auth's table. */
  users: Pick<Users, 'existing'>
  logger: Logger
}

/** Chats and their members: list, read, create, rename, delete, add and remove members. */
export function createChatManagement({ db, reads: { memberChats, requireMembership, members, lastMessages, view }, characters, users, live, logger }: ChatManagementDeps) {
  /** Users and characters named as members must exist. */
  async function assertMembersExist(refs: MemberRef[]): Promise<void> {
    const userIds = refs.filter(ref => ref.type === 'user').map(ref => ref.id)
    const characterIds = refs.filter(ref => ref.type === 'character').map(ref => ref.id)
    const [knownUsers, knownCharacters] = await Promise.all([users.existing(userIds), characters.existing(characterIds)])
    const unknown = refs.filter(ref => !(ref.type === 'user' ? knownUsers : knownCharacters).has(ref.id))
    if (unknown.length > 0)
      throw new ApiError(400, 'UNKNOWN_MEMBER', 'Some members do not exist', { field: 'members', unknown })
  }

  /**
   * Tells `users`' devices of a change to a chat, after it committed. The change is
   * stored already, so a failed announcement only costs them a re-read of `chats.list`.
   */
  async function announce(users: string[], change: ChatChange): Promise<void> {
    await live.announceChat(users, change)
      .catch((error: unknown) => logger.warn({ err: error, chatId: change.chatId }, 'could not announce a chat change; devices re-read chats.list on reconnect'))
  }

  return {
    /** The caller's chats, newest activity first, each with its last message; with `characterId` only bot chats with that character. */
    async list(userId: string, input: { characterId?: string } = {}): Promise<ChatListItem[]> {
      const { characterId } = input
      const chats = await memberChats(userId).selectAll('chats')
        .$if(characterId !== undefined, query => query.where('chats.type', '=', 'bot').where(({ exists, selectFrom }) => exists(
          selectFrom('chat_members as character').select('character.id').whereRef('character.chat_id', '=', 'chats.id')
            .where('character.member_type', '=', 'character').where('character.member_id', '=', characterId!).where('character.deleted_at', 'is', null),
        )))
        .orderBy('chats.updated_at', 'desc').execute()
      const ids = chats.map(chat => chat.id)
      const [byChat, last] = await Promise.all([members(ids), lastMessages(ids)])
      return chats.map(chat => ({ ...toChatView(chat, byChat.get(chat.id)!), lastMessage: last.get(chat.id) ?? null }))
    },

    async get(userId: string, chatId: string): Promise<ChatView> {
      await requireMembership(userId, chatId)
      return view(chatId)
    },

    /**
     * Private chats hold the creator and one other user; bot chats the creator and
     * characters; groups and channels anyone. The creator is always a member.
     */
    async create(userId: string, input: { type: ChatType, title?: string | null, members: MemberRef[], languages?: string[], userName?: string }): Promise<ChatView> {
      const others = input.members.filter(ref => !(ref.type === 'user' && ref.id === userId))
        .filter((ref, index, all) => all.findIndex(other => other.type === ref.type && other.id === ref.id) === index)
      const otherUsers = others.filter(ref => ref.type === 'user')
      if (input.type === 'private' && (otherUsers.length !== 1 || others.length !== 1))
        throw new ApiError(400, 'INVALID_MEMBERS', 'A private chat has exactly one other user', { field: 'members' })
      if (input.type === 'bot' && (otherUsers.length > 0 || others.length === 0))
        throw new ApiError(400, 'INVALID_MEMBERS', 'A bot chat has one or more characters and no other users', { field: 'members' })
      await assertMembersExist(others)

      // A bot chat opens with its first character's greeting, in the caller's language.
      const firstCharacter = input.type === 'bot' ? others.find(ref => ref.type === 'character') : undefined
      const persona = firstCharacter && await characters.persona(firstCharacter.id, input.languages ?? [])
      const greeting = persona?.greetings[0] && withNames(persona.greetings[0], { char: persona.name, user: input.userName ?? '' }).trim()
      const { chatId, greeted } = await db.transaction().execute(async (trx) => {
        const chat = await trx.insertInto('chats').values({ type: input.type, title: input.title ?? null, creator_id: userId })
          .returningAll().executeTakeFirstOrThrow()
        await trx.insertInto('chat_members').values([{ type: 'user' as const, id: userId }, ...others].map(ref => ({
          chat_id: chat.id,
          member_type: ref.type,
          member_id: ref.id,
        }))).execute()
        const greeted = greeting
          ? await appendMessages(trx, chat.id, [{ id: randomUUID(), senderId: firstCharacter!.id, role: 'assistant', content: greeting, metadata: { greeting: true } }])
          : undefined
        return { chatId: chat.id, greeted }
      })
      const chat = await view(chatId)
      // Before the greeting, so a device knows the chat when its first message arrives.
      await announce(usersOf(chat.members), { change: 'created', chatId, chat })
      if (greeted)
        await live.announce(chatId, greeted.rows.map(toMessage), greeted.heads)
      return chat
    },

    async update(userId: string, input: { chatId: string, title: string | null }): Promise<ChatView> {
      const chat = await requireMembership(userId, input.chatId)
      if (chat.creator_id !== userId)
        throw creatorOnly()
      await db.updateTable('chats').set({ title: input.title, updated_at: new Date() }).where('id', '=', chat.id).execute()
      const updated = await view(chat.id)
      await announce(usersOf(updated.members), { change: 'updated', chatId: chat.id, chat: updated })
      return updated
    },

    /** Soft delete; messages stay in the database but no one can read the chat any more. */
    async delete(userId: string, chatId: string): Promise<{ id: string }> {
      const chat = await requireMembership(userId, chatId)
      if (chat.creator_id !== userId)
        throw creatorOnly()
      // Read before the deletion: whose lists the chat leaves.
      const before = usersOf((await members([chat.id])).get(chat.id)!)
      await db.updateTable('chats').set({ deleted_at: new Date(), updated_at: new Date() }).where('id', '=', chatId).execute()
      await announce(before, { change: 'deleted', chatId: chat.id, chat: null })
      return { id: chatId }
    },

    async addMembers(userId: string, input: { chatId: string, members: MemberRef[] }): Promise<ChatView> {
      const chat = await requireMembership(userId, input.chatId)
      if (chat.creator_id !== userId)
        throw creatorOnly()
      if (chat.type === 'private')
        throw new ApiError(400, 'INVALID_MEMBERS', 'A private chat cannot take more members', { field: 'members' })
      if (chat.type === 'bot' && input.members.some(ref => ref.type === 'user'))
        throw new ApiError(400, 'INVALID_MEMBERS', 'A bot chat takes only characters', { field: 'members' })
      await assertMembersExist(input.members)
      const current = (await members([chat.id])).get(chat.id)!
      const fresh = input.members.filter(ref => !current.some(member => member.type === ref.type && member.id === ref.id))
        .filter((ref, index, all) => all.findIndex(other => other.type === ref.type && other.id === ref.id) === index)
      if (fresh.length === 0)
        return view(chat.id)
      await db.insertInto('chat_members').values(fresh.map(ref => ({ chat_id: chat.id, member_type: ref.type, member_id: ref.id })))
        .onConflict(oc => oc.columns(['chat_id', 'member_type', 'member_id']).where('deleted_at', 'is', null).doNothing())
        .execute()
      const updated = await view(chat.id)
      // The chat is new in the lists of those added; the others see its members change.
      await Promise.all([
        announce(usersOf(fresh), { change: 'created', chatId: chat.id, chat: updated }),
        announce(usersOf(current), { change: 'updated', chatId: chat.id, chat: updated }),
      ])
      return updated
    },

    /** The creator removes anyone; any member can remove themselves (leave). */
    async removeMember(userId: string, input: { chatId: string, member: MemberRef }): Promise<{ removed: boolean }> {
      const chat = await requireMembership(userId, input.chatId)
      const leaving = input.member.type === 'user' && input.member.id === userId
      if (!leaving && chat.creator_id !== userId)
        throw creatorOnly()
      const result = await db.updateTable('chat_members').set({ deleted_at: new Date() })
        .where('chat_id', '=', chat.id).where('member_type', '=', input.member.type).where('member_id', '=', input.member.id)
        .where('deleted_at', 'is', null).executeTakeFirst()
      const removed = Number(result.numUpdatedRows) > 0
      if (removed) {
        // The chat leaves the removed user's list; the others see its members change.
        const updated = await view(chat.id)
        await Promise.all([
          announce(input.member.type === 'user' ? [input.member.id] : [], { change: 'deleted', chatId: chat.id, chat: null }),
          announce(usersOf(updated.members), { change: 'updated', chatId: chat.id, chat: updated }),
        ])
      }
      return { removed }
    },
  }
}
