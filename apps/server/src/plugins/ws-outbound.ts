import { randomUUID } from 'node:crypto'

import { jsonEncoder, type Encoder } from '@trpc/server/adapters/ws'
import WebSocket from 'ws'

/**
 * What a tRPC WebSocket sends: frames whose large part is shared between every
 * subscription that sends the same event, and a bound on what may wait for a
 * client that does not read.
 */

/** An event whose JSON has at least this many characters is sent as a fragment shared by every frame carrying it. */
export const SHARED_PAYLOAD_MIN_CHARS = 16 * 1024

/**
 * One text message in three fragments: the frame's own envelope around one
 * event's bytes, which every subscription sending that event shares (a socket's
 * send queue holds a reference to them, not a copy).
 */
export class SplitFrame {
  constructor(readonly head: string, readonly body: Buffer, readonly tail: string) {}
}

/** Stands for the event inside its envelope; random, so no client-chosen id can imitate it. */
const PLACEHOLDER = `\u0000shared:${randomUUID()}`
const QUOTED_PLACEHOLDER = JSON.stringify(PLACEHOLDER)

/**
 * The data of a tracked subscription event as the output transformer made it:
 * `result.data = { json: { id, data }, meta? }`. Live sync hands one event to
 * every subscription (`markShared`), and the transformer reuses one `json.data`
 * for all of them, so it is the same object in every frame of that event.
 */
function trackedPayload(message: unknown): object | undefined {
  const result = (message as { result?: { type?: unknown, id?: unknown, data?: { json?: { data?: unknown } } } } | null)?.result
  const payload = result?.type === 'data' && result.id !== undefined ? result.data?.json?.data : undefined
  return typeof payload === 'object' && payload !== null ? payload : undefined
}

/**
 * tRPC's JSON encoder, except that a tracked event's data is serialized once per
 * event rather than once per subscription, and a large one is sent as a fragment
 * every frame shares (`SplitFrame`, which `boundSends` knows how to send).
 */
export function createSharingEncoder(): Encoder {
  // By the payload object, so an entry goes when the event does.
  const serialized = new WeakMap<object, string | Buffer>()
  return {
    encode(message) {
      const payload = trackedPayload(message)
      if (!payload)
        return JSON.stringify(message)
      let body = serialized.get(payload)
      if (body === undefined) {
        const json = JSON.stringify(payload)
        body = json.length >= SHARED_PAYLOAD_MIN_CHARS ? Buffer.from(json) : json
        serialized.set(payload, body)
      }
      const envelope = JSON.stringify(message, (_key, value: unknown) => (value === payload ? PLACEHOLDER : value))
      const at = envelope.indexOf(QUOTED_PLACEHOLDER)
      const head = envelope.slice(0, at)
      const tail = envelope.slice(at + QUOTED_PLACEHOLDER.length)
      // The encoder's type allows strings and bytes; the socket's `send` (see `boundSends`) also takes a SplitFrame.
      return typeof body === 'string' ? head + body + tail : new SplitFrame(head, body, tail) as unknown as string
    },
    decode: jsonEncoder.decode,
  }
}

/** What `boundSends` keeps for one socket. */
interface Bound {
  /** The socket's own `send` (its class's). */
  send: (this: WebSocket, ...args: unknown[]) => void
  maxBufferedBytes: number
  onOverflow: (socket: WebSocket) => void
  overflowed: boolean
}

const bounds = new WeakMap<WebSocket, Bound>()

/** `socket.send` as `boundSends` makes it: one function for every socket, its bound looked up by `this`. */
function boundedSend(this: WebSocket, data: unknown, ...rest: unknown[]): void {
  if (this.readyState !== WebSocket.OPEN)
    return
  const bound = bounds.get(this)!
  if (this.bufferedAmount > bound.maxBufferedBytes) {
    if (!bound.overflowed) {
      bound.overflowed = true
      bound.onOverflow(this)
    }
    return
  }
  const { send } = bound
  if (data instanceof SplitFrame) {
    // Synchronous, so no other message can come between the fragments.
    send.call(this, data.head, { binary: false, fin: false })
    send.call(this, data.body, { binary: false, fin: false })
    send.call(this, data.tail, { binary: false, fin: true })
    return
  }
  send.call(this, data, ...rest)
}

/**
 * Makes `socket.send` refuse to queue more for a client that does not read: a
 * frame is sent only while fewer than `maxBufferedBytes` wait in the socket's
 * buffers, otherwise `onOverflow` is called (once) and the frame dropped. Also
 * sends a `SplitFrame` as the fragments of one text message. No closure per
 * socket: pass one `onOverflow` for all of them.
 */
export function boundSends(socket: WebSocket, maxBufferedBytes: number, onOverflow: (socket: WebSocket) => void): void {
  bounds.set(socket, { send: socket.send as Bound['send'], maxBufferedBytes, onOverflow, overflowed: false })
  socket.send = boundedSend as WebSocket['send']
}
