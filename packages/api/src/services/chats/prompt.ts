import type { Db } from '@airi/db'

import type { Persona } from '../characters/index.ts'

/** One message of the prompt sent upstream. */
export interface PromptMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

export interface TokenCounter {
  count: (text: string) => number
  /** Tokens of a message's framing, on top of its content. */
  perMessage: number
}

/** History is read newest first, this many messages at a time, until the budget is spent. */
const HISTORY_PAGE = 50

/**
 * A character's text with the names filled in: `{{char}}` and `{{user}}` (any
 * case), as Character Cards write them, stay in the character and are read here.
 */
export function withNames(text: string, names: { char: string | null, user: string }): string {
  return text.replace(/\{\{char\}\}/gi, names.char ?? 'the character').replace(/\{\{user\}\}/gi, names.user.trim() || 'User')
}

/**
 * The line above recalled memories in the system message: fixed, so a model (and a
 * test) can tell them from the character's own prompts. It tells the model what they
 * are and not to recite them.
 */
export const MEMORY_HEADING = 'What you remember about the person from earlier conversations (use it when it helps; do not list it back):'

/** The persona's prompts as one system message: system prompts, then personality, then what is remembered. */
function systemPromptOf(persona: Persona, userName: string, memories: readonly string[]): PromptMessage | null {
  const parts = [...persona.system, ...persona.personality].map(part => withNames(part, { char: persona.name, user: userName }).trim()).filter(Boolean)
  if (memories.length > 0)
    parts.push([MEMORY_HEADING, ...memories.map(memory => `- ${memory}`)].join('\n'))
  return parts.length > 0 ? { role: 'system', content: parts.join('\n\n') } : null
}

type HistoryRow = { seq: number, role: string, content: string }

/** Reads a chat's messages before a seq, newest first, a page at a time. */
export type HistoryReader = (before: number) => Promise<HistoryRow[]>

/**
 * The history of `chatId` before `beforeSeq`, its first page asked at once: it
 * travels with the turn's other reads instead of after them.
 */
export function readHistoryAhead(db: Db, chatId: string, beforeSeq: number): HistoryReader {
  const page = (before: number) => db.selectFrom('messages').select(['seq', 'role', 'content'])
    .where('chat_id', '=', chatId).where('seq', '<', before).where('deleted_at', 'is', null)
    .where('role', 'in', ['user', 'assistant', 'system'])
    .orderBy('seq', 'desc').limit(HISTORY_PAGE).execute()
  const first = page(beforeSeq)
  first.catch(() => {})
  return before => before === beforeSeq ? first : page(before)
}

/**
 * The prompt of a reply: the persona's system message (with the memories recalled), then as many of the chat's
 * latest messages before `beforeSeq` as fit `budget` tokens (whole messages, newest
 * kept), then `message`. The system message and the new message always go in; a
 * message role the model does not take (a client's own roles) is left out.
 */
export async function buildPrompt({ history, beforeSeq, persona, memories = [], userName, message, counter, budget }: {
  history: HistoryReader
  beforeSeq: number
  persona: Persona
  /** Memories recalled for this message (already within their own budget), best first. */
  memories?: readonly string[]
  /** The person's name, for `{{user}}`. */
  userName: string
  message: string
  counter: TokenCounter
  budget: number
}): Promise<PromptMessage[]> {
  const cost = (text: string) => counter.count(text) + counter.perMessage
  const system = systemPromptOf(persona, userName, memories)
  let left = budget - cost(message) - (system ? cost(system.content) : 0)
  const kept: PromptMessage[] = []
  let before = beforeSeq
  while (left > 0) {
    const rows = await history(before)
    for (const row of rows) {
      const tokens = cost(row.content)
      if (tokens > left) {
        left = 0
        break
      }
      left -= tokens
      kept.push({ role: row.role as PromptMessage['role'], content: row.content })
    }
    if (rows.length < HISTORY_PAGE)
      break
    before = rows.at(-1)!.seq
  }
  return [...(system ? [system] : []), ...kept.reverse(), { role: 'user', content: message }]
}
