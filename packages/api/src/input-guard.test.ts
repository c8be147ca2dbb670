import superjson from 'superjson'
import { describe, expect, it } from 'vitest'

import { guardedTransformer, markShared } from './input-guard.ts'

const { serialize } = guardedTransformer.output

function event() {
  return {
    type: 'messages',
    chatId: 'c1',
    fromSeq: 1,
    toSeq: 2,
    messages: [
      { id: 'm1', seq: 1, content: 'hi', metadata: { 'a.b': new Date(1), list: [new Map([['k', 1n]])] }, createdAt: new Date(2) },
      { id: 'm2', seq: 2, content: 'there', metadata: null, createdAt: new Date(3) },
    ],
  }
}

describe('output transformer', () => {
  it('serializes a shared tracked event once for every subscription, as superjson would', () => {
    const shared = markShared(event())
    // tRPC's WebSocket adapter builds a new `{ id, data }` per subscription.
    const first = serialize({ id: '7', data: shared })
    const second = serialize({ id: '8', data: shared })

    expect(first).toEqual(superjson.serialize({ id: '7', data: event() }))
    expect(second).toEqual(superjson.serialize({ id: '8', data: event() }))
    expect(second.json).toMatchObject({ id: '8' })
    // One walk: both frames carry the very same serialized data.
    expect((second.json as { data: unknown }).data).toBe((first.json as { data: unknown }).data)
    expect(superjson.deserialize(second)).toEqual({ id: '8', data: event() })
  })

  it('serializes a shared output sent alone (SSE) once', () => {
    const shared = markShared(event())
    expect(serialize(shared)).toEqual(superjson.serialize(event()))
    expect(serialize(shared)).toBe(serialize(shared))
  })

  it('falls back to a full walk where the data holds shared references', () => {
    const metadata = { note: new Date(5) }
    const data = markShared({ messages: [{ metadata }, { metadata }] })
    const wrapped = serialize({ id: '1', data })
    expect(wrapped).toEqual(superjson.serialize({ id: '1', data }))
    expect(superjson.deserialize(wrapped)).toEqual({ id: '1', data })
  })

  it('walks unmarked outputs afresh each time (they may change between sends)', () => {
    const value = { count: 1, at: new Date(1) }
    expect(serialize({ id: '1', data: value })).toEqual(superjson.serialize({ id: '1', data: value }))
    value.count = 2
    expect(serialize({ id: '2', data: value }).json).toEqual({ id: '2', data: { count: 2, at: new Date(1).toISOString() } })
  })
})
