import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { createDb } from '@airi/db'
import { cacheBarrier } from '@airi/tooling/test/cache-barrier'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createMemoryAdapters } from '../adapters/memory.ts'
import type { Adapters, Cache } from '../adapters/ports.ts'
import { createRedisAdapters } from '../adapters/redis.ts'
import { channels, keys } from '../adapters/keys.ts'
import { manualClock, systemClock, type Clock } from '../clock.ts'
import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { silentLogger } from '../logger.ts'
import { createConfigService, type ConfigService } from './config.ts'
import { createKeyVault, type KeyVault } from './key-vault.ts'

let database: TestDatabase
const vault = createKeyVault(Buffer.alloc(32, 3))
const closers: Array<() => Promise<unknown>> = []

beforeAll(async () => {
  database = await createTestDatabase()
})
afterAll(async () => {
  for (const close of closers.reverse())
    await close()
  await database.drop()
})

/** One "service container": its own pool, its own adapter connections, its own memory. */
async function container(adapters: Adapters, logger: Logger = silentLogger, cache: Cache = adapters.cache, localTtlMs?: number, clock: Clock = systemClock, keyVault: KeyVault | null = vault): Promise<ConfigService> {
  const db = createDb({ connectionString: database.url, maxConnections: 2 })
  const config = await createConfigService({ db, cache, pubsub: adapters.pubsub, logger, localTtlMs, clock, keyVault: keyVault ?? undefined })
  closers.push(() => db.destroy(), () => adapters.close(), () => config.close())
  return config
}

describe('operator config', () => {
  let config: ConfigService
  beforeAll(async () => {
    config = await container(createMemoryAdapters())
  })

  it('answers the schema default for an entry that was never set', async () => {
    expect(await config.get('INITIAL_USER_FLUX')).toBe(100)
    expect(await config.getOptional('STRIPE_PAYMENT_METHODS')).toBeUndefined()
  })

  it('reports a missing required entry as 503 CONFIG_NOT_SET naming the entry', async () => {
    const error = await config.getOrThrow('STRIPE_FLUX_PRODUCT_ID').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 503, code: 'CONFIG_NOT_SET', details: { key: 'STRIPE_FLUX_PRODUCT_ID' } })
    expect((error as ApiError).message).toContain('STRIPE_FLUX_PRODUCT_ID')
    expect(await config.getOptional('STRIPE_FLUX_PRODUCT_ID')).toBeUndefined()
    await expect(config.require('INITIAL_USER_FLUX', 'LLM_ROUTER_CONFIG')).rejects.toMatchObject({ details: { key: 'LLM_ROUTER_CONFIG' } })
  })

  it('validates a value against the entry schema and stores nothing when invalid', async () => {
    const error = await config.set('INITIAL_USER_FLUX', -5).catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 400, code: 'INVALID_CONFIG_VALUE', details: { key: 'INITIAL_USER_FLUX' } })
    await expect(config.set('LLM_ROUTER_CONFIG', { models: { chat: { upstreams: [{ id: 'a', baseUrl: 'not a url', model: 'm', keys: [] }] } } }))
      .rejects.toMatchObject({ code: 'INVALID_CONFIG_VALUE' })
    await expect(config.set('STRIPE_FLUX_PRODUCT_ID', undefined)).rejects.toMatchObject({ code: 'INVALID_CONFIG_VALUE' })
    const row = await database.db.selectFrom('config_entries').selectAll().where('key', 'in', ['INITIAL_USER_FLUX', 'LLM_ROUTER_CONFIG']).execute()
    expect(row).toEqual([])
  })

  it('refuses a value holding sealed keys when no key vault (LLM_ROUTER_MASTER_KEY) is configured, and stores nothing', async () => {
    const vaultless = await container(createMemoryAdapters(), silentLogger, undefined, undefined, systemClock, null)
    const routes = { models: { chat: { upstreams: [{ id: 'a', baseUrl: 'http://127.0.0.1:1/v1', model: 'm', keys: [{ id: 'k', ciphertext: vault.encrypt('chat', 'k', 'sk-test') }] }] } } }
    const error = await vaultless.set('LLM_ROUTER_CONFIG', routes).catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 400, code: 'INVALID_CONFIG_VALUE', details: { key: 'LLM_ROUTER_CONFIG', issues: [{ path: ['models', 'chat', 'upstreams', 0, 'keys', 0, 'ciphertext'] }] } })
    expect((error as ApiError).details).toMatchObject({ issues: [{ message: expect.stringContaining('LLM_ROUTER_MASTER_KEY is not set') }] })
    expect(await database.db.selectFrom('config_entries').selectAll().where('key', '=', 'LLM_ROUTER_CONFIG').execute()).toEqual([])
    // An entry without keys needs no vault.
    expect(await vaultless.set('CHAT_CONTEXT_TOKENS', 2000)).toBe(2000)
  })

  it('serves an entry from memory until its local TTL runs out, then reads the shared cache again', async () => {
    const clock = manualClock()
    const adapters = createMemoryAdapters()
    const reader = await container(adapters, silentLogger, undefined, 60_000, clock)
    expect(await reader.get('TTS_MAX_INPUT_CHARS')).toBe(4096)

    // Changed behind its back: Postgres and the shared cache, but no invalidation message.
    await database.db.insertInto('config_entries').values({ key: 'TTS_MAX_INPUT_CHARS', value: JSON.stringify(1234), updated_by: null }).execute()
    await adapters.cache.invalidate(keys.config('TTS_MAX_INPUT_CHARS'), 300)
    clock.advance(59_999)
    expect(await reader.get('TTS_MAX_INPUT_CHARS')).toBe(4096)
    clock.advance(2)
    expect(await reader.get('TTS_MAX_INPUT_CHARS')).toBe(1234)
  })

  it('parses an entry once per stored version: unchanged, every read answers the same value, even after memory expires', async () => {
    const clock = manualClock()
    const expiring = await container(createMemoryAdapters(), silentLogger, undefined, 1000, clock)
    const routes = { models: { chat: { upstreams: [{ id: 'a', baseUrl: 'http://127.0.0.1:1/v1', model: 'm', keys: [{ id: 'k', ciphertext: vault.encrypt('chat', 'k', 'sk-test') }] }] } } }
    await expiring.set('LLM_ROUTER_CONFIG', routes)
    const first = await expiring.getOrThrow('LLM_ROUTER_CONFIG')
    // Parsed: the alias's default output cap is filled in.
    expect(first).toEqual({ models: { chat: { ...routes.models.chat, maxOutputTokens: 4096 } } })
    for (let i = 0; i < 3; i++) {
      // Memory has expired, so the read goes to the cache; the text there has not changed.
      clock.advance(1001)
      expect(await expiring.getOrThrow('LLM_ROUTER_CONFIG')).toBe(first)
    }

    await expiring.set('LLM_ROUTER_CONFIG', { ...routes, deadlineMs: 5000 })
    const changed = await expiring.getOrThrow('LLM_ROUTER_CONFIG')
    expect(changed).not.toBe(first)
    expect(changed).toMatchObject({ deadlineMs: 5000 })
  })

  it('stores a valid value durably and reads it back through every layer', async () => {
    await config.set('STRIPE_FLUX_PRODUCT_ID', 'prod_123', 'admin-user')
    await config.set('STRIPE_PAYMENT_METHODS', ['card', 'alipay'])
    expect(await config.getOrThrow('STRIPE_FLUX_PRODUCT_ID')).toBe('prod_123')
    expect(await config.get('STRIPE_PAYMENT_METHODS')).toEqual(['card', 'alipay'])

    const row = await database.db.selectFrom('config_entries').selectAll().where('key', '=', 'STRIPE_FLUX_PRODUCT_ID').executeTakeFirstOrThrow()
    expect(row).toMatchObject({ value: 'prod_123', updated_by: 'admin-user' })

    const view = await config.describe('STRIPE_FLUX_PRODUCT_ID')
    expect(view).toMatchObject({ key: 'STRIPE_FLUX_PRODUCT_ID', value: 'prod_123', isSet: true, missing: false, updatedBy: 'admin-user' })
    const list = await config.list()
    expect(list.map(entry => entry.key)).toContain('FLUX_PER_1K_TOKENS')
    expect(list.find(entry => entry.key === 'STREAMING_TTS_UPSTREAM')).toMatchObject({ isSet: false, missing: true, value: undefined })
    expect(list.find(entry => entry.key === 'INITIAL_USER_FLUX')).toMatchObject({ isSet: false, missing: false, value: 100 })
  })
})

describe('operator config across instances (shared Postgres and Redis)', () => {
  let first: ConfigService
  let second: ConfigService
  let prefix: string
  const warnings: unknown[] = []
  const recordingLogger: Logger = { ...silentLogger, warn: obj => warnings.push(obj) }

  beforeAll(async () => {
    prefix = testRedisPrefix()
    const url = inject('redisUrl')
    // Clocks that stand still: memory never expires, so only the invalidation message can show a set.
    first = await container(await createRedisAdapters({ url, prefix }), silentLogger, undefined, undefined, manualClock())
    second = await container(await createRedisAdapters({ url, prefix }), recordingLogger, undefined, undefined, manualClock())
  })

  it('a set on one instance is seen by the other through the invalidation message', async () => {
    // Both instances have read (and cached in memory) the default first.
    expect(await first.get('FLUX_PER_REQUEST')).toBe(1)
    expect(await second.get('FLUX_PER_REQUEST')).toBe(1)

    await first.set('FLUX_PER_REQUEST', 7)
    await until(async () => await second.get('FLUX_PER_REQUEST') === 7, 'the second instance to see 7')
    expect(await second.get('FLUX_PER_REQUEST')).toBe(7)

    await second.set('FLUX_PER_REQUEST', 9)
    await until(async () => await first.get('FLUX_PER_REQUEST') === 9, 'the first instance to see 9')
    expect(await first.get('FLUX_PER_REQUEST')).toBe(9)
  })

  it('drops and logs a malformed invalidation message', async () => {
    const adapters = await createRedisAdapters({ url: inject('redisUrl'), prefix })
    closers.push(() => adapters.close())
    await adapters.pubsub.publish(channels.configInvalidate(), '{"not":"a key"}')
    await adapters.pubsub.publish(channels.configInvalidate(), 'not json')
    await until(() => warnings.length >= 2, 'both messages to be logged')
    expect(warnings).toHaveLength(2)
    // The instance still serves its entries afterwards.
    expect(await second.get('FLUX_PER_REQUEST')).toBe(9)
  })
})

describe.each([
  ['in-process', async () => createMemoryAdapters()],
  ['redis', () => createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })],
] as Array<[string, () => Promise<Adapters>]>)('operator config cache consistency (%s)', (_name, create) => {
  it('a reader that missed the cache and read Postgres before a set cannot write the old value back', async () => {
    const adapters = await create()
    const barrier = cacheBarrier(adapters.cache)
    const reader = await container(adapters, silentLogger, barrier.cache)
    const writer = await container(adapters)
    await writer.set('MAX_CHECKOUT_AMOUNT_CENTS', 1000)
    // As after the cached copy expired.
    await adapters.cache.del(keys.config('MAX_CHECKOUT_AMOUNT_CENTS'))

    // The reader misses memory and Redis, reads 1000 from Postgres, and stops before writing it back…
    const pause = barrier.pauseNextWrite()
    const read = reader.get('MAX_CHECKOUT_AMOUNT_CENTS')
    await pause.reached
    // …while another instance stores a new value…
    await writer.set('MAX_CHECKOUT_AMOUNT_CENTS', 2000)
    // …and only then finishes.
    pause.release()
    expect(await read).toBe(1000)

    // An instance with nothing in memory reads through the shared cache: it must see the set.
    const fresh = await container(adapters)
    expect(await fresh.get('MAX_CHECKOUT_AMOUNT_CENTS')).toBe(2000)
  })
})
