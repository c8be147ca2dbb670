import type { ChatSyncEvent, FeedEvent } from './events.ts'

/** Events one subscription holds for its consumer; beyond that it drops them and reads its feed later. */
const PENDING_LIMIT = 200
/**
 * Reply events one subscription holds; beyond that the oldest go. They are not
 * replayed anyway: a client that sees a gap in a reply's offset asks `getReply`.
 */
const SIDE_LIMIT = 256

/** A feed entry's event as every recipient on this instance shares it; null when none of its messages is left. */
export type SharedEvent = Promise<FeedEvent | null>

/** An event outside the feed (a reply's text or end), delivered once the position reaches `after`. */
export interface SideEvent {
  event: Extract<ChatSyncEvent, { type: 'reply' | 'reply.end' }>
  after: number
}

/**
 * One live subscription on this instance. It holds its position (a feed seq) and
 * the events handed to it that follow on directly from it; anything else it only
 * notes as `head` ("the feed reaches at least here") and reads from its feed.
 */
export function createFollower(signal: AbortSignal | undefined) {
  let wake: (() => void) | undefined
  const follower = {
    /** Unknown until the start position is read; events offered before then wait in `pending`. */
    position: undefined as number | undefined,
    pending: [] as Array<{ feedSeq: number, event: SharedEvent }>,
    head: 0,
    /** The newest balance announced and not yet handed over: only the latest matters, so one slot. */
    balance: undefined as number | undefined,
    /** Reply events not yet handed over, in order. */
    side: [] as SideEvent[],
    offerSide(entry: SideEvent): void {
      if (follower.side.length >= SIDE_LIMIT)
        follower.side.shift()
      follower.side.push(entry)
      // An event that waits for a feed entry makes sure the feed is read up to it.
      if (entry.after > 0)
        follower.bump(entry.after)
      wake?.()
    },
    /** The first reply event, if the position has reached what it waits for. */
    nextSide(position: number): SideEvent['event'] | undefined {
      const first = follower.side[0]
      if (!first || first.after > position)
        return undefined
      follower.side.shift()
      return first.event
    },
    offerBalance(balance: number): void {
      follower.balance = balance
      wake?.()
    },
    offer(feedSeq: number, event: SharedEvent): void {
      const last = follower.pending.at(-1)?.feedSeq ?? follower.position
      if (last === undefined || (feedSeq === last + 1 && follower.pending.length < PENDING_LIMIT))
        follower.pending.push({ feedSeq, event })
      else if (feedSeq > last)
        follower.bump(feedSeq)
      wake?.()
    },
    /** The feed reaches at least `head`: what is not handed over is read. */
    bump(head: number): void {
      follower.head = Math.max(follower.head, head)
      wake?.()
    },
    /** Fixes the start position; events offered early are kept only where they follow on from it. */
    start(position: number, head: number): void {
      const early = follower.pending.sort((a, b) => a.feedSeq - b.feedSeq)
      follower.pending = []
      follower.position = position
      follower.head = Math.max(follower.head, head)
      for (const { feedSeq, event } of early) {
        if (feedSeq > position)
          follower.offer(feedSeq, event)
      }
    },
    /** Gives up on what is pending (from the first entry on) and reads it from the feed instead. */
    fallBack(): void {
      follower.bump(follower.pending.at(-1)?.feedSeq ?? 0)
      follower.pending = []
    },
    async waitForNews(): Promise<void> {
      if (signal?.aborted)
        return
      await new Promise<void>((resolve) => {
        wake = resolve
      })
      wake = undefined
    },
  }
  signal?.addEventListener('abort', () => wake?.(), { once: true })
  return follower
}

export type Follower = ReturnType<typeof createFollower>
