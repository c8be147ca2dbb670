import { randomBytes } from 'node:crypto'

import { describe, expect, it } from 'vitest'

import { manualClock } from '../clock.ts'
import { ApiError } from '../errors.ts'
import { silentLogger } from '../logger.ts'
import { createKeyVault } from './key-vault.ts'
import { createUpstreamKeyPool, KEY_COOLDOWN_MS, withFallback, type KeySet, type UpstreamKeyPool } from './upstream-keys.ts'

const vault = createKeyVault(randomBytes(32))

function keySet(poolId: string, alias: string, ids: string[]): KeySet {
  return { poolId, alias, keys: ids.map(id => ({ id, ciphertext: vault.encrypt(alias, id, `sk-${id}`) })) }
}

/** The ids of the usable keys a pool hands out for `set` on one call. */
const usable = (pool: UpstreamKeyPool, set: KeySet) => [...pool.inTurn(set)].filter(turn => turn.apiKey !== undefined).map(turn => turn.id)

/** What a fallback over `set` tried, each attempt answering the status `answers` gives its key. */
async function tried(pool: UpstreamKeyPool, set: KeySet, answers: Record<string, number>): Promise<{ keys: string[], result: unknown }> {
  const keys: string[] = []
  const result = await withFallback(pool, {
    sets: [set],
    exhausted: (lastStatus, lastReason) => new ApiError(502, 'UPSTREAM_UNAVAILABLE', lastReason, { lastStatus: lastStatus ?? null }),
    attempt: async (_, key) => {
      keys.push(key.id)
      const status = answers[key.id] ?? 200
      if (status === 200)
        return { value: key.apiKey }
      return { refused: new Response('no', { status }), reason: `${key.id} answered ${status}`, rejected: () => new ApiError(status, 'UPSTREAM_REJECTED', 'rejected') }
    },
  }).catch((error: unknown) => error)
  return { keys, result }
}

describe('the upstream key pool', () => {
  it('skips a key cooled down by one user for every other user of the same pool, until the cooldown passes', async () => {
    const clock = manualClock()
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock })
    // The REST catalogue and the streaming dial name the bridge's keys the same way.
    const catalogue = keySet('streaming-tts@http://bridge', 'streaming-tts', ['a', 'b'])
    const dial = keySet('streaming-tts@http://bridge', 'streaming-tts', ['a', 'b'])

    const first = await tried(pool, catalogue, { a: 401, b: 401 })
    expect(first.keys.sort()).toEqual(['a', 'b'])
    expect(first.result).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE' })

    expect(usable(pool, dial)).toEqual([])
    clock.advance(KEY_COOLDOWN_MS.auth - 1)
    expect(usable(pool, dial)).toEqual([])
    clock.advance(1)
    expect(usable(pool, dial).sort()).toEqual(['a', 'b'])
  })

  it('cools a rate-limited key down for its Retry-After, 30 s without one', () => {
    const clock = manualClock()
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock })
    const set = keySet('llm-a', 'gpt', ['a', 'b'])
    pool.noteRefusal('llm-a', 'a', 429, '5')
    pool.noteRefusal('llm-a', 'b', 429, null)
    expect(usable(pool, set)).toEqual([])
    clock.advance(5_000)
    expect(usable(pool, set)).toEqual(['a'])
    clock.advance(KEY_COOLDOWN_MS.rateLimited - 5_000)
    expect(usable(pool, set).sort()).toEqual(['a', 'b'])
  })

  it('keeps the cooldowns of one upstream apart from another\'s keys of the same id', () => {
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock: manualClock() })
    pool.noteRefusal('llm-a', 'primary', 403, null)
    expect(usable(pool, keySet('llm-a', 'gpt', ['primary']))).toEqual([])
    expect(usable(pool, keySet('llm-b', 'gpt', ['primary']))).toEqual(['primary'])
  })

  it('hands out a key sealed under another alias as unusable and cools it down', () => {
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock: manualClock() })
    const sealed = keySet('tts@http://x', 'other-alias', ['k'])
    const turns = [...pool.inTurn({ ...sealed, alias: 'tts' })]
    expect(turns).toEqual([{ id: 'k', unusable: 'key k of tts@http://x cannot be decrypted' }])
    expect([...pool.inTurn({ ...sealed, alias: 'tts' })]).toEqual([])
  })
})

describe('the fallback loop', () => {
  it('moves on after 429 and 5xx, and answers the first success', async () => {
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock: manualClock() })
    const { keys, result } = await tried(pool, keySet('p', 'gpt', ['a', 'b', 'c']), { a: 429, b: 503 })
    expect(keys).toEqual(['a', 'b', 'c'])
    expect(result).toBe('sk-c')
    // 429 cools a key down; a 5xx is the upstream's trouble, not the key's.
    expect(usable(pool, keySet('p', 'gpt', ['a', 'b', 'c'])).sort()).toEqual(['b', 'c'])
  })

  it('ends the call on a 4xx that is the caller\'s mistake, without trying another key', async () => {
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock: manualClock() })
    const { keys, result } = await tried(pool, keySet('p', 'gpt', ['a', 'b']), { a: 400, b: 400 })
    expect(keys).toHaveLength(1)
    expect(result).toMatchObject({ status: 400, code: 'UPSTREAM_REJECTED' })
  })

  it('drains the answer it abandons', async () => {
    const pool = createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock: manualClock() })
    const abandoned: Response[] = []
    await withFallback(pool, {
      sets: [keySet('p', 'gpt', ['a', 'b'])],
      exhausted: () => new Error('exhausted'),
      attempt: async (_, key, index) => {
        if (index > 0)
          return { value: key.id }
        const response = new Response('busy', { status: 503 })
        abandoned.push(response)
        return { refused: response, reason: 'busy', rejected: () => new Error('not retryable') }
      },
    })
    expect(abandoned).toHaveLength(1)
    expect(abandoned[0]!.bodyUsed).toBe(true)
  })
})
