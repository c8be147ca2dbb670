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

/** An event outside the feed (a reply's text or end, a memory or chat change), delivered once the position reaches `after`. */
export interface SideEvent {
  event: Extract<ChatSyncEvent, { type: 'reply' | 'reply.end' | 'memory' | 'chat' }>
  after: number
}

/**
 * One live subscription on this instance. It holds its position (a feed seq) and
 * the events handed to it that follow on directly from it; anything else it only
 * notes as `head` ("the feed reaches at least here") and reads from its feed.
 *
 * A class, so its methods live once on the prototype: an idle subscription holds
 * this object and its two arrays, not a closure per method.
 */
export class Follower {
  /** Unknown until the start position is read; events offered before then wait in `pending`. */
  position: number | undefined = undefined
  pending: Array<{ feedSeq: number, event: SharedEvent }> = []
  head = 0
  /** The newest balance announced and not yet handed over: only the latest matters, so one slot. */
  balance: number | undefined = undefined
  /** Reply events not yet handed over, in order. */
  side: SideEvent[] = []
  /** Set once it stopped counting as a subscription of this instance. */
  left = false
  private wake: (() => void) | undefined = undefined

  /** `onAbort` runs once `signal` aborts (after the consumer is woken), also for a stream never read. */
  constructor(readonly userId: string, readonly signal: AbortSignal | undefined, private readonly onAbort: (follower: Follower) => void) {
    // The follower itself is the listener (`handleEvent`): no closure per subscription.
    signal?.addEventListener('abort', this, { once: true })
  }

  handleEvent(): void {
    this.wake?.()
    this.onAbort(this)
  }

  offerSide(entry: SideEvent): void {
    if (this.side.length >= SIDE_LIMIT)
      this.side.shift()
    this.side.push(entry)
    // An event that waits for a feed entry makes sure the feed is read up to it.
    if (entry.after > 0)
      this.bump(entry.after)
    this.wake?.()
  }

  /** The first reply event, if the position has reached what it waits for. */
  nextSide(position: number): SideEvent['event'] | undefined {
    const first = this.side[0]
    if (!first || first.after > position)
      return undefined
    this.side.shift()
    return first.event
  }

  offerBalance(balance: number): void {
    this.balance = balance
    this.wake?.()
  }

  offer(feedSeq: number, event: SharedEvent): void {
    const last = this.pending.at(-1)?.feedSeq ?? this.position
    if (last === undefined || (feedSeq === last + 1 && this.pending.length < PENDING_LIMIT))
      this.pending.push({ feedSeq, event })
    else if (feedSeq > last)
      this.bump(feedSeq)
    this.wake?.()
  }

  /** The feed reaches at least `head`: what is not handed over is read. */
  bump(head: number): void {
    this.head = Math.max(this.head, head)
    this.wake?.()
  }

  /** Fixes the start position; events offered early are kept only where they follow on from it. */
  start(position: number, head: number): void {
    const early = this.pending.sort((a, b) => a.feedSeq - b.feedSeq)
    this.pending = []
    this.position = position
    this.head = Math.max(this.head, head)
    for (const { feedSeq, event } of early) {
      if (feedSeq > position)
        this.offer(feedSeq, event)
    }
  }

  /** Gives up on what is pending (from the first entry on) and reads it from the feed instead. */
  fallBack(): void {
    this.bump(this.pending.at(-1)?.feedSeq ?? 0)
    this.pending = []
  }

  /** Resolves on the next offer, bump or abort. A wake left over from an earlier wait resolves a settled promise: nothing. */
  waitForNews(): Promise<void> {
    if (this.signal?.aborted)
      return Promise.resolve()
    return new Promise<void>((resolve) => {
      this.wake = resolve
    })
  }
}
