import superjson from 'superjson'
import { describe, expect, it } from 'vitest'

import { findInputProblem, guardedTransformer, markShared, sentAsPlainJson } from './input-guard.ts'

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

describe('hostile keys', () => {
  const HOSTILE_KEYS = ['__proto__', 'constructor', 'prototype']

  it('sends field errors keyed by __proto__, constructor or prototype as they are (superjson throws on them)', () => {
    for (const key of HOSTILE_KEYS) {
      const fieldErrors = sentAsPlainJson(Object.create(null) as Record<string, string[]>)
      fieldErrors[key] = [`"${key}" is not allowed as a key`]
      const shape = { message: 'm', code: -32600, data: { code: 'BAD_REQUEST', httpStatus: 400, path: 'chats.create', details: undefined, fieldErrors } }
      expect(() => superjson.serialize(shape), key).toThrow(/prototype pollution/)

      const sent = JSON.parse(JSON.stringify(serialize(shape))) as { json: { data: { fieldErrors: object, path: string } } }
      expect(Object.keys(sent.json.data.fieldErrors), key).toEqual([key])
      expect(Object.getOwnPropertyDescriptor(sent.json.data.fieldErrors, key)?.value).toEqual([`"${key}" is not allowed as a key`])
      expect(sent.json.data.path).toBe('chats.create')
      // The rest still goes through superjson (undefined is annotated, not dropped).
      expect(serialize(shape).meta?.values).toEqual({ 'data.details': ['undefined'] })
    }
  })

  it('names the field in the data, not superjson\'s annotations of it', () => {
    for (const key of HOSTILE_KEYS) {
      const raw = JSON.parse(`{"json":{"a":1,"${key}":"2020-01-01T00:00:00.000Z"},"meta":{"values":{"${key}":["Date"]},"v":1}}`) as unknown
      expect(findInputProblem(raw)?.issues, key).toEqual([{ path: ['json', key], message: `"${key}" is not allowed as a key` }])
    }
  })
})
