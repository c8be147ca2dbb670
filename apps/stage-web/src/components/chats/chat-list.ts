import { AiriError, toAiriError } from '@airi/sdk'

import type { client } from '../../client.ts'

/** A chat as `chats.list` returns it: the chat and its newest message (content cut to 500 characters). */
export type ListedChat = Awaited<ReturnType<typeof client.chats.list.query>>[number]
/** A chat without its last message, as `chats.update` and the feed's `chat` events carry it. */
export type Chat = Omit<ListedChat, 'lastMessage'>
export type Message = Awaited<ReturnType<typeof client.chats.pullMessages.query>>['messages'][number]

/** A chat as the list shows it: the chat and its newest message (null while it has none). */
export interface ChatRow {
  chat: Chat
  last: Message | null
}

export function isNotFound(error: unknown): boolean {
  return (error instanceof AiriError ? error : toAiriError(error)).status === 404
}

/** The person's bot chats that `characterId` is in (what `chats.list({ characterId })` returns). */
export function isChatWith(chat: Chat, characterId: string): boolean {
  return chat.type === 'bot' && chat.members.some(member => member.type === 'character' && member.id === characterId)
}

export function rowOf({ lastMessage, ...chat }: ListedChat): ChatRow {
  return { chat, last: lastMessage }
}

/** The newer of two messages of one chat (by seq). */
export function newer(a: Message | null, b: Message | null): Message | null {
  return !a || (b && b.seq > a.seq) ? b : a
}

/** When the chat last moved: its newest message, else its creation (a rename is no activity). */
export function activityOf(row: ChatRow): Date {
  return row.last?.createdAt ?? row.chat.createdAt
}

/** Newest activity first. */
export function byActivity(a: ChatRow, b: ChatRow): number {
  return activityOf(b).getTime() - activityOf(a).getTime()
}

/** A message's first line with text, without the Markdown that opens it (`# `, `> `, `- `, a fence). */
export function firstLine(content: string): string {
  const line = content.split('\n').map(text => text.trim()).find(text => text !== '' && !text.startsWith('```')) ?? ''
  return line.replace(/^(?:#{1,6}\s+|>\s*|[-*+]\s+|\d+[.)]\s+)/, '').replace(/\*\*|__|`/g, '').slice(0, 200)
}

/** "now" / "5 minutes ago" / "3 hours ago" today, else a date ("Mar 4", or "Mar 4, 2024" in another year). */
export function formatWhen(date: Date, now: Date, locale: string): string {
  if (date.toDateString() === now.toDateString()) {
    const seconds = Math.max(0, (now.getTime() - date.getTime()) / 1000)
    const relative = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' })
    if (seconds < 60)
      return relative.format(0, 'second')
    if (seconds < 3600)
      return relative.format(-Math.floor(seconds / 60), 'minute')
    return relative.format(-Math.floor(seconds / 3600), 'hour')
  }
  const sameYear = date.getFullYear() === now.getFullYear()
  return new Intl.DateTimeFormat(locale, sameYear ? { month: 'short', day: 'numeric' } : { dateStyle: 'medium' }).format(date)
}

/** The full date and time, for a tooltip and an untitled chat's name. */
export function formatDateTime(date: Date, locale: string): string {
  return new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }).format(date)
}

type CharacterTexts = Awaited<ReturnType<typeof client.characters.get.query>>['i18n'][number]

/** The character's name and description in the app's language (`zh-CN` takes any `zh`), else English, else its first. */
export function textsFor(i18n: CharacterTexts[], locale: string): CharacterTexts | undefined {
  const language = locale.toLowerCase()
  const base = language.split('-')[0]!
  return i18n.find(entry => entry.language.toLowerCase() === language)
    ?? i18n.find(entry => entry.language.toLowerCase().split('-')[0] === base)
    ?? i18n.find(entry => entry.language.toLowerCase().startsWith('en'))
    ?? i18n[0]
}
