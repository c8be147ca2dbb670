import { sql } from 'kysely'

import type { Db } from '@airi/db'

import { encodeChatCursor, eventOf, toMessage, type ChatSyncEvent } from './events.ts'

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
  chatId: string
  fromSeq: number
  toSeq: number
  /** The feed seq of the run's last row: the event's id. */
  feedSeq: number
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
    .select(['f.seq', 'f.chat_id', 'f.from_seq', 'f.to_seq', 'c.id as live_chat', 'm.id as membership'])
    // The row's messages' size, from their stored lengths (no content is read for it).
    .select(eb => eb.selectFrom('messages as msg')
      .select(sql<string>`coalesce(sum(octet_length(msg.content) + coalesce(pg_column_size(msg.metadata), 0)), 0)`.as('bytes'))
      .whereRef('msg.chat_id', '=', 'f.chat_id').whereRef('msg.seq', '>=', 'f.from_seq').whereRef('msg.seq', '<=', 'f.to_seq')
      .where('msg.deleted_at', 'is', null)
      .as('bytes'))
    .where('f.user_id', '=', userId).where('f.seq', '>', after)
    .orderBy('f.seq').limit(FEED_ROWS).execute()

  const runs: FeedRun[] = []
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
    const run = runs.at(-1)
    if (run && run.chatId === row.chat_id && run.toSeq + 1 === row.from_seq && row.to_seq - run.fromSeq < PAGE) {
      run.toSeq = row.to_seq
      run.feedSeq = row.seq
    }
    else {
      runs.push({ chatId: row.chat_id, fromSeq: row.from_seq, toSeq: row.to_seq, feedSeq: row.seq })
    }
  }
  const more = rows.length === FEED_ROWS || last !== rows.at(-1)?.seq
  if (runs.length === 0)
    return { events: [], last, more }

  const messages = (await db.selectFrom('messages').selectAll().where('deleted_at', 'is', null)
    .where(eb => eb.or(runs.map(run => eb.and([eb('chat_id', '=', run.chatId), eb('seq', '>=', run.fromSeq), eb('seq', '<=', run.toSeq)]))))
    .orderBy('seq').execute()).map(toMessage)
  const events: Array<{ id: string, event: ChatSyncEvent }> = []
  for (const run of runs) {
    const event = eventOf(messages.filter(message => message.chatId === run.chatId && message.seq >= run.fromSeq && message.seq <= run.toSeq))
    // Every message of the run deleted since: nothing to deliver.
    if (event)
      events.push({ id: encodeChatCursor(run.feedSeq), event })
  }
  return { events, last, more }
}
