import superjson from 'superjson'
import { describe, expect, it } from 'vitest'

import { createSharingEncoder, SHARED_PAYLOAD_MIN_CHARS, SplitFrame } from '../src/plugins/ws-outbound.ts'

/**
 * The frames of one live event (issue 20): every subscription's frame used to be
 * its own string with its own copy of the event, so a 1 MB send to 256 paused
 * subscriptions held 256 MB. Now the event's bytes are made once and shared.
 */

/** A tracked event's frame as tRPC's ws adapter builds it, after the output transformer. */
function frame(subscriptionId: number, eventId: string, json: object) {
  return { id: subscriptionId, jsonrpc: '2.0', result: { type: 'data', id: eventId, data: { json: { id: eventId, data: json }, meta: { values: { 'data.messages.0.createdAt': ['Date'] } } } } }
}

const text = (frameOrString: unknown) => frameOrString instanceof SplitFrame
  ? frameOrString.head + frameOrString.body.toString() + frameOrString.tail
  : frameOrString as string

describe('the sharing encoder', () => {
  it('sends a large event\'s bytes once for every subscription: one Buffer in each frame, the same text as JSON', () => {
    const encoder = createSharingEncoder()
    const event = superjson.serialize({ type: 'messages', messages: [{ content: 'x'.repeat(100_000), createdAt: new Date(0) }] }).json as object
    const first = encoder.encode(frame(1, '7', event)) as unknown
    const second = encoder.encode(frame(2, '7', event)) as unknown

    expect(first).toBeInstanceOf(SplitFrame)
    expect(second).toBeInstanceOf(SplitFrame)
    expect((first as SplitFrame).body).toBe((second as SplitFrame).body)
    expect((first as SplitFrame).body.length).toBeGreaterThanOrEqual(100_000)
    // Only the envelope is the frame's own.
    expect(Buffer.byteLength((first as SplitFrame).head) + Buffer.byteLength((first as SplitFrame).tail)).toBeLessThan(200)
    expect(text(first)).toBe(JSON.stringify(frame(1, '7', event)))
    expect(text(second)).toBe(JSON.stringify(frame(2, '7', event)))
  })

  it('keeps a small event, an untracked result and an error as one plain string', () => {
    const encoder = createSharingEncoder()
    const small = { type: 'messages', messages: [{ content: 'hi' }] }
    expect(JSON.stringify(small).length).toBeLessThan(SHARED_PAYLOAD_MIN_CHARS)
    expect(encoder.encode(frame(1, '8', small))).toBe(JSON.stringify(frame(1, '8', small)))
    const query = { id: 3, result: { type: 'data', data: { json: { content: 'y'.repeat(100_000) } } } }
    expect(encoder.encode(query)).toBe(JSON.stringify(query))
    const error = { id: 4, error: { json: { message: 'no' } } }
    expect(encoder.encode(error)).toBe(JSON.stringify(error))
  })

  it('cannot be fooled by a client-chosen id that looks like its placeholder', () => {
    const encoder = createSharingEncoder()
    const event = { type: 'messages', messages: [{ content: 'z'.repeat(SHARED_PAYLOAD_MIN_CHARS) }] }
    const sneaky = { ...frame(1, '9', event), id: '\u0000shared:00000000-0000-0000-0000-000000000000' }
    expect(text(encoder.encode(sneaky))).toBe(JSON.stringify(sneaky))
  })
})
