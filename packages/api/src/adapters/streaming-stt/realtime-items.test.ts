import { describe, expect, it } from 'vitest'

import { createItemLedger } from './realtime-items.ts'

describe('the Realtime item ledger', () => {
  it('is not done before the commit, however many items completed', () => {
    const items = createItemLedger()
    items.speechStopped('a')
    items.committed('a')
    items.completed('a')
    expect(items.done).toBe(false)
  })

  it('waits for the commit\'s own item when detected utterances arrive after the commit was sent', () => {
    const items = createItemLedger()
    items.commitSent()
    items.speechStopped('a')
    items.committed('a')
    items.completed('a')
    expect(items.done).toBe(false)
    items.committed('b')
    expect(items.done).toBe(false)
    items.completed('b')
    expect(items.done).toBe(true)
  })

  it('waits for every committed item after the commit is answered', () => {
    const items = createItemLedger()
    items.speechStopped('a')
    items.committed('a')
    items.commitSent()
    items.committed('b')
    items.completed('b')
    expect(items.done).toBe(false)
    items.completed('a')
    expect(items.done).toBe(true)
  })

  it('takes input_audio_buffer_commit_empty after the commit as its answer, and no other error', () => {
    const items = createItemLedger()
    expect(items.commitWasEmpty('input_audio_buffer_commit_empty')).toBe(false)
    items.commitSent()
    expect(items.commitWasEmpty('server_error')).toBe(false)
    expect(items.done).toBe(false)
    expect(items.commitWasEmpty('input_audio_buffer_commit_empty')).toBe(true)
    expect(items.done).toBe(true)
  })

  it('does not wait again for an item that completed before its committed event', () => {
    const items = createItemLedger()
    items.commitSent()
    items.completed('a')
    items.committed('a')
    expect(items.done).toBe(true)
  })
})
