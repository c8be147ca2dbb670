import { sql } from 'kysely'

import type { Db } from '@airi/db'

import { encodeChatCursor, eventOf, toMessage, type ChatSyncEvent } from './events.ts'
import type { SyncedMessage } from './fanout.ts'

/** Most messages in one live event (a send holds at most 100, so one send is never split). */
const PAGE = 100
/** Feed rows, and messages, one read of a subscription's feed takes at most. */
const FEED_ROWS = 100
const FEED_MESSAGES = 500
/**
 * Bytes of messages one read takes at most (past its first row, itself one send
 * within the 1 MiB body limit): each subscription that catches up holds its own
 * copy, so a backlog of large messages is read, and sent, a slice at a time.
 */
const FEED_BYTES = 1024 * 1024

interface FeedRun {
  kind: 'messages'
  chatId: string
  fromSeq: number
  toSeq: number
  /** The feed seq of the run's last row: the event's id. */
  feedSeq: number
}

/** An edit or deletion: one event of its own. */
interface FeedChange {
  kind: 'edited' | 'deleted'
  chatId: string
  ids: string[]
  feedSeq: number
}

/** Live messages of `chatId`: the range `fromSeq..toSeq`, or those named by `ids`; in seq order. */
export async function readMessages(db: Db, chatId: string, which: { fromSeq: number, toSeq: number } | { ids: string[] }): Promise<SyncedMessage[]> {
  let query = db.selectFrom('messages').selectAll().where('chat_id', '=', chatId).where('deleted_at', 'is', null)
  if ('ids' in which) {
    if (which.ids.length === 0)
      return []
    query = query.where('id', 'in', which.ids)
  }
  else {
    query = query.where('seq', '>=', which.fromSeq).where('seq', '<=', which.toSeq)
  }
  return (await query.orderBy('seq').execute()).map(toMessage)
}

/** The seq of the newest row of `userId`'s feed (0 before their first). */
export async function feedHead(db: Db, userId: string): Promise<number> {
  const row = await db.selectFrom('chat_sync_heads').select('last_seq').where('user_id', '=', userId).executeTakeFirst()
  return row?.last_seq ?? 0
}

/**
 * The next events of `userId`'s feed after `after`, consecutive rows of one chat
 * merged into one event. Rows of chats the user has left (or that were deleted)
 * are read past but not delivered. `last` is the feed seq read up to (undefined
 * when there was nothing), `more` whether more may follow it right away.
 */
export async function readFeed(db: Db, userId: string, after: number): Promise<{ events: Array<{ id: string, event: ChatSyncEvent }>, last?: number, more: boolean }> {
  const rows = await db.selectFrom('chat_sync_feed as f')
    .leftJoin('chats as c', join => join.onRef('c.id', '=', 'f.chat_id').on('c.deleted_at', 'is', null))
    .leftJoin('chat_members as m', join => join.onRef('m.chat_id', '=', 'f.chat_id').onRef('m.member_id', '=', 'f.user_id')
      .on('m.member_type', '=', 'user').on('m.deleted_at', 'is', null))
    .select(['f.seq', 'f.chat_id', 'f.from_seq', 'f.to_seq', 'f.kind', 'f.message_ids', 'c.id as live_chat', 'm.id as membership'])
    // The row's messages' size, from their stored lengths (no content is read for it).
    .select(eb => eb.selectFrom('messages as msg')
      .select(sql<string>`coalesce(sum(octet_length(msg.content) + coalesce(pg_column_size(msg.metadata), 0)), 0)`.as('bytes'))
      .whereRef('msg.chat_id', '=', 'f.chat_id').whereRef('msg.seq', '>=', 'f.from_seq').whereRef('msg.seq', '<=', 'f.to_seq')
      .where('msg.deleted_at', 'is', null)
      .as('bytes'))
    .where('f.user_id', '=', userId).where('f.seq', '>', after)
    .orderBy('f.seq').limit(FEED_ROWS).execute()

  const items: Array<FeedRun | FeedChange> = []
  let last: number | undefined
  let total = 0
  let bytes = 0
  for (const row of rows) {
    const visible = row.live_chat !== null && row.membership !== null
    const size = visible ? row.to_seq - row.from_seq + 1 : 0
    const rowBytes = visible ? Number(row.bytes ?? 0) : 0
    if (total > 0 && (total + size > FEED_MESSAGES || bytes + rowBytes > FEED_BYTES))
      break
    last = row.seq
    if (!visible)
      continue
    total += size
    bytes += rowBytes
    if (row.kind !== 'messages') {
      items.push({ kind: row.kind, chatId: row.chat_id, ids: row.message_ids ?? [], feedSeq: row.seq })
      continue
    }
    const run = items.at(-1)
    if (run?.kind === 'messages' && run.chatId === row.chat_id && run.toSeq + 1 === row.from_seq && row.to_seq - run.fromSeq < PAGE) {
      run.toSeq = row.to_seq
      run.feedSeq = row.seq
    }
    else {
      items.push({ kind: 'messages', chatId: row.chat_id, fromSeq: row.from_seq, toSeq: row.to_seq, feedSeq: row.seq })
    }
  }
  const more = rows.length === FEED_ROWS || last !== rows.at(-1)?.seq
  if (items.length === 0)
    return { events: [], last, more }

  const runs = items.filter(item => item.kind === 'messages')
  const changes = items.filter(item => item.kind !== 'messages')
  const [messages, changed] = await Promise.all([
    runs.length === 0
      ? []
      : db.selectFrom('messages').selectAll().where('deleted_at', 'is', null)
          .where(eb => eb.or(runs.map(run => eb.and([eb('chat_id', '=', run.chatId), eb('seq', '>=', run.fromSeq), eb('seq', '<=', run.toSeq)]))))
          .orderBy('seq').execute().then(rows => rows.map(toMessage)),
    // Edited messages as they are now (a deleted one is left out), deleted ones by id and seq.
    changes.length === 0
      ? []
      : db.selectFrom('messages').selectAll().where('id', 'in', changes.flatMap(change => change.ids)).orderBy('seq').execute(),
  ])
  const events: Array<{ id: string, event: ChatSyncEvent }> = []
  for (const item of items) {
    const id = encodeChatCursor(item.feedSeq)
    if (item.kind === 'messages') {
      const event = eventOf(messages.filter(message => message.chatId === item.chatId && message.seq >= item.fromSeq && message.seq <= item.toSeq))
      // Every message of the run deleted since: nothing to deliver.
      if (event)
        events.push({ id, event })
      continue
    }
    const rowsOf = changed.filter(row => row.chat_id === item.chatId && item.ids.includes(row.id))
    if (item.kind === 'edited') {
      const edited = rowsOf.filter(row => row.deleted_at === null).map(toMessage)
      if (edited.length > 0)
        events.push({ id, event: { type: 'edited', chatId: item.chatId, messages: edited } })
    }
    else if (rowsOf.length > 0) {
      events.push({ id, event: { type: 'deleted', chatId: item.chatId, messages: rowsOf.map(row => ({ id: row.id, chatId: row.chat_id, seq: row.seq })) } })
    }
  }
  return { events, last, more }
}
