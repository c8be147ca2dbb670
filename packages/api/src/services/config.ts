import { z } from 'zod'

import type { Db } from '@airi/db'

import type { Cache, PubSub, Unsubscribe } from '../adapters/ports.ts'
import { channels, keys } from '../adapters/keys.ts'
import type { Clock } from '../clock.ts'
import { pubsubMessage } from '../adapters/messages.ts'
import type { ConfigKey, ConfigValue, KeyWithFallback } from '../config/entries.ts'
import { configEntries, configKeys } from '../config/entries.ts'
import { sealedKeyIssues } from '../config/sealed-keys.ts'
import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { KeyVault } from './key-vault.ts'

/** How long a Redis copy of an entry lives; a lost invalidation heals after this. */
const CACHE_TTL_SECONDS = 300

const invalidation = pubsubMessage<{ key: string }>(z.object({ key: z.string().min(1) }), 'config invalidation message')
const createConfigInvalidatedMessage = (key: ConfigKey): string => invalidation.create({ key })
/** Returns the invalidated key, or undefined (logged) for a malformed message. */
const parseConfigInvalidatedMessage = (raw: string, logger: Logger): string | undefined => invalidation.parse(raw, logger)?.key

export interface ConfigEntryView {
  key: ConfigKey
  /** The effective value: the stored one, else the schema's default; undefined when neither. */
  value: unknown
  isSet: boolean
  /** True when the entry has no default and no stored value: routes that need it answer 503. */
  missing: boolean
  updatedAt: Date | null
  updatedBy: string | null
}

export interface ConfigServiceDeps {
  db: Db
  cache: Cache
  pubsub: PubSub
  logger: Logger
  /** How long this instance keeps an entry in memory between invalidations. */
  localTtlMs?: number
  /** What `localTtlMs` is measured against. */
  clock: Clock
  /** Checks the sealed upstream keys of a value being set; without it a value holding keys is refused. */
  keyVault?: KeyVault
}

export type ConfigService = Awaited<ReturnType<typeof createConfigService>>

/**
 * Operator config: durable in `config_entries`, cached in Redis (`config:{key}`, a
 * guarded entry: a reader never writes back a value older than the last `set`)
 * and in each instance's memory, which every instance drops when any of them
 * publishes on `config:invalidate`.
 */
export async function createConfigService({ db, cache, pubsub, logger, localTtlMs = 60_000, clock, keyVault }: ConfigServiceDeps) {
  type Resolved = { ok: true, value: unknown } | { ok: false }
  /**
   * Each entry as this instance last read it: the stored JSON text and its value
   * resolved by the schema, so a read parses nothing until the entry changes
   * (an invalidation drops it; a refresh that finds the same text keeps it).
   */
  const local = new Map<ConfigKey, { raw: string, resolved: Resolved, expiresAt: number }>()
  // Bumped on every invalidation, so a read that raced one does not repopulate memory.
  const generations = new Map<ConfigKey, number>()

  function forget(key: ConfigKey): void {
    // Expired, not dropped: the next read asks Redis again, and finding the same text (our own set's echo) parses nothing.
    const memo = local.get(key)
    if (memo)
      memo.expiresAt = 0
    generations.set(key, (generations.get(key) ?? 0) + 1)
  }

  const unsubscribe: Unsubscribe = await pubsub.subscribe(channels.configInvalidate(), (raw) => {
    const key = parseConfigInvalidatedMessage(raw, logger)
    if (key !== undefined && Object.hasOwn(configEntries, key))
      forget(key as ConfigKey)
  })

  /** The stored value as JSON text ('null' when unset), through Redis, then Postgres. */
  async function readRaw(key: ConfigKey): Promise<string> {
    const cached = await cache.read(keys.config(key)).catch((error: unknown) => {
      logger.warn({ err: error, key }, 'config cache read failed; reading Postgres')
      return undefined
    })
    if (cached?.value != null)
      return cached.value
    const row = await db.selectFrom('config_entries').select('value').where('key', '=', key).executeTakeFirst()
    const raw = JSON.stringify(row?.value ?? null)
    // Refused when a `set` invalidated the entry after our read: what we read may be older.
    if (cached) {
      await cache.fill(keys.config(key), raw, cached.version, CACHE_TTL_SECONDS).catch((error: unknown) => {
        logger.warn({ err: error, key }, 'config cache write failed')
      })
    }
    return raw
  }

  /** The entry resolved by its schema, through memory (parsed once per stored version), then Redis, then Postgres. */
  async function read<K extends ConfigKey>(key: K): Promise<{ ok: true, value: ConfigValue<K> } | { ok: false }> {
    const memo = local.get(key)
    if (memo && memo.expiresAt > clock.now())
      return memo.resolved as { ok: true, value: ConfigValue<K> } | { ok: false }

    const generation = generations.get(key) ?? 0
    const raw = await readRaw(key)
    const resolved = memo?.raw === raw ? memo.resolved : resolve(key, JSON.parse(raw) ?? undefined)
    // Raced an invalidation: kept for its parse, but expired, so the next read asks Redis again.
    const current = (generations.get(key) ?? 0) === generation
    local.set(key, { raw, resolved, expiresAt: current ? clock.now() + localTtlMs : 0 })
    return resolved as { ok: true, value: ConfigValue<K> } | { ok: false }
  }

  /** Stored value parsed by the entry's schema; an invalid stored value falls back to the default. */
  function resolve<K extends ConfigKey>(key: K, stored: unknown): { ok: true, value: ConfigValue<K> } | { ok: false } {
    const schema = configEntries[key]
    if (stored !== undefined) {
      const parsed = schema.safeParse(stored)
      if (parsed.success)
        return { ok: true, value: parsed.data as ConfigValue<K> }
      logger.error({ key, issues: parsed.error.issues }, 'stored config value no longer matches its schema; using the default')
    }
    const fallback = schema.safeParse(undefined)
    return fallback.success ? { ok: true, value: fallback.data as ConfigValue<K> } : { ok: false }
  }

  function view(key: ConfigKey, row: { value: unknown, updated_at: Date, updated_by: string | null } | undefined): ConfigEntryView {
    const resolved = resolve(key, row?.value ?? undefined)
    return {
      key,
      value: resolved.ok ? resolved.value : undefined,
      isSet: row !== undefined,
      missing: !resolved.ok,
      updatedAt: row?.updated_at ?? null,
      updatedBy: row?.updated_by ?? null,
    }
  }

  async function getOptional<K extends ConfigKey>(key: K): Promise<ConfigValue<K> | undefined> {
    const resolved = await read(key)
    return resolved.ok ? resolved.value : undefined
  }

  async function getOrThrow<K extends ConfigKey>(key: K): Promise<ConfigValue<K>> {
    const resolved = await read(key)
    if (!resolved.ok)
      throw new ApiError(503, 'CONFIG_NOT_SET', `Operator config entry ${key} is not set`, { key })
    return resolved.value
  }

  return {
    /** An entry that always has a value (a default, or an optional schema). */
    get<K extends KeyWithFallback>(key: K): Promise<ConfigValue<K>> {
      return getOrThrow(key)
    },
    getOrThrow,
    getOptional,

    /** Throws 503 `CONFIG_NOT_SET` naming the first of `keys` that has no value. */
    async require(...required: ConfigKey[]): Promise<void> {
      for (const key of required)
        await getOrThrow(key)
    },

    /**
     * Validates with the entry's schema and checks that every sealed upstream key
     * decrypts for its alias and key id, stores it, and invalidates every instance.
     */
    async set<K extends ConfigKey>(key: K, value: unknown, updatedBy: string | null = null): Promise<ConfigValue<K>> {
      const invalid = (issues: Array<{ path: PropertyKey[], message: string }>) =>
        new ApiError(400, 'INVALID_CONFIG_VALUE', `Invalid value for ${key}`, { key, issues })
      const parsed = configEntries[key].safeParse(value)
      if (!parsed.success || parsed.data === undefined)
        throw invalid(parsed.success ? [{ path: [], message: 'a value is required' }] : parsed.error.issues.map(issue => ({ path: issue.path, message: issue.message })))
      const keyIssues = sealedKeyIssues(key, parsed.data as ConfigValue<K>, keyVault)
      if (keyIssues.length > 0)
        throw invalid(keyIssues)
      const json = JSON.stringify(parsed.data)
      await db.insertInto('config_entries')
        .values({ key, value: json, updated_by: updatedBy })
        .onConflict(oc => oc.column('key').doUpdateSet({ value: json, updated_by: updatedBy, updated_at: new Date() }))
        .execute()

      forget(key)
      // Invalidate rather than write the new value: two racing sets could otherwise
      // land in Redis in the wrong order. The next read fills it from Postgres.
      await cache.invalidate(keys.config(key), CACHE_TTL_SECONDS).catch((error: unknown) => {
        logger.warn({ err: error, key }, 'config cache invalidation failed; other instances may read the old value until it expires')
      })
      await pubsub.publish(channels.configInvalidate(), createConfigInvalidatedMessage(key)).catch((error: unknown) => {
        logger.warn({ err: error, key }, 'config invalidation publish failed; other instances refresh within their TTL')
      })
      return parsed.data as ConfigValue<K>
    },

    /** Every entry, read from Postgres (the source of truth), for operators. */
    async list(): Promise<ConfigEntryView[]> {
      const rows = await db.selectFrom('config_entries').selectAll().execute()
      const byKey = new Map(rows.map(row => [row.key, row]))
      return configKeys.map(key => view(key, byKey.get(key)))
    },

    /** One entry, read from Postgres, for operators. */
    async describe(key: ConfigKey): Promise<ConfigEntryView> {
      return view(key, await db.selectFrom('config_entries').selectAll().where('key', '=', key).executeTakeFirst())
    },

    close: unsubscribe,
  }
}
