import { createHash, randomBytes } from 'node:crypto'

import { sql } from 'kysely'

import type { ApiKey, ApiKeyBudgetPeriod, Db } from '@airi/db'

import type { SessionRevocation } from '../../auth/session-guard.ts'
import type { Clock } from '../../clock.ts'
import { ApiError, notFound } from '../../errors.ts'
import { keysetPages, type ExportTables } from '../account-export/index.ts'
import type { ApiKeyCreateInput, ApiKeyScope } from './schema.ts'

/** Every key starts with this: a resolver tells keys from session tokens and JWTs by it, and secret scanners find leaked ones. */
const API_KEY_PREFIX = 'airi_sk_'
/** Live keys (not revoked, not expired) one user may hold. */
const MAX_LIVE_KEYS = 20
/** Keys `list` shows at most: the live ones and the newest expired ones. */
const LISTED_KEYS = 100
/** What of a key is shown after it is made: the prefix and six characters of its random part. */
const SHOWN_CHARS = API_KEY_PREFIX.length + 6
/** `last_used_at` is written at most this often per key: a busy key is not a write per call. */
const TOUCH_INTERVAL_MS = 60_000

/** A key as it authenticates a request: who, and what it may do. */
export interface KeyIdentity {
  keyId: string
  userId: string
  scopes: ApiKeyScope[]
  budget: { flux: number, period: ApiKeyBudgetPeriod } | null
  rateLimitPerMinute: number | null
  expiresAt: Date | null
}

/** A key as `apiKeys.list` shows it (never the key itself). */
export interface ApiKeyView {
  id: string
  name: string
  prefix: string
  scopes: ApiKeyScope[]
  budget: { flux: number, period: ApiKeyBudgetPeriod } | null
  /** Flux moved by the key's calls in the budget's current period (all time without a budget). */
  spent: number
  rateLimitPerMinute: number | null
  lastUsedAt: Date | null
  expiresAt: Date | null
  createdAt: Date
}

export interface ApiKeyDeps {
  db: Db
  clock: Clock
  /** Tells every instance that a key stopped authorizing (its cached identity is dropped). */
  revoke: (revocation: SessionRevocation) => Promise<void>
  /** What each key spent in its budget's current period, from the ledger (billing's `keysSpent`). */
  spentBy: (ids: string[]) => Promise<Map<string, number>>
}

export type ApiKeyService = ReturnType<typeof createApiKeyService>

/** Whether a bearer token is one of our keys (by its form; not whether it is valid). */
export const isApiKey = (token: string): boolean => token.startsWith(API_KEY_PREFIX)

const hashOf = (key: string) => createHash('sha256').update(key).digest('hex')

/** The session id a key's identity is cached under: revoking it drops the identity on every instance. */
export const keySessionId = (keyId: string) => `apikey:${keyId}`

function budgetOf(row: Pick<ApiKey, 'budget_flux' | 'budget_period'>) {
  return row.budget_flux !== null && row.budget_period !== null ? { flux: row.budget_flux, period: row.budget_period } : null
}

const keyNotFound = () => notFound('API_KEY_NOT_FOUND', 'No such API key')

/**
 * Personal API keys (docs/gateway.md#personal-api-keys): a person makes them with
 * their session and uses them on the REST gateways only. A key is 32 random bytes
 * (base64url) after `airi_sk_`, shown once; only its SHA-256 is stored.
 */
export function createApiKeyService({ db, clock, revoke, spentBy }: ApiKeyDeps) {
  const now = () => new Date(clock.now())
  const lastTouched = new Map<string, number>()

  return {
    /**
     * A new key; the answer is the only time `key` is shown. 409 `API_KEY_LIMIT`
     * with 20 live keys (counted under a lock per user, so concurrent creates cannot
     * pass it); 400 naming `expiresAt` for an expiry that is not in the future.
     */
    async create(userId: string, input: ApiKeyCreateInput): Promise<ApiKeyView & { key: string }> {
      const at = now()
      if (input.expiresAt && input.expiresAt.getTime() <= at.getTime())
        throw new ApiError(400, 'BAD_REQUEST', 'expiresAt must be in the future', { field: 'expiresAt' })
      const key = `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`
      const row = await db.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(hashtextextended(${`api-keys:${userId}`}, 0))`.execute(trx)
        const { count } = await trx.selectFrom('api_keys').select(eb => eb.fn.countAll<string>().as('count'))
          .where('user_id', '=', userId).where('revoked_at', 'is', null)
          .where(eb => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', at)]))
          .executeTakeFirstOrThrow()
        if (Number(count) >= MAX_LIVE_KEYS)
          throw new ApiError(409, 'API_KEY_LIMIT', `You already have ${MAX_LIVE_KEYS} API keys; revoke one first`, { limit: MAX_LIVE_KEYS })
        const made = await trx.insertInto('api_keys').values({
          user_id: userId,
          name: input.name,
          prefix: key.slice(0, SHOWN_CHARS),
          key_hash: hashOf(key),
          scopes: input.scopes,
          budget_flux: input.budget?.flux ?? null,
          budget_period: input.budget?.period ?? null,
          rate_limit_per_minute: input.rateLimitPerMinute ?? null,
          expires_at: input.expiresAt ?? null,
          created_at: at,
        }).returningAll().executeTakeFirstOrThrow()
        // A budgeted key's counter, which the ledger's write statement moves (it must exist before the key's first call).
        if (made.budget_flux !== null)
          await trx.insertInto('api_key_spend').values({ api_key_id: made.id, period_start: new Date(0) }).execute()
        return made
      })
      return { ...toView(row, 0), key }
    },

    /** The caller's keys that are not revoked (live and expired), newest first, each with what it spent this period. */
    async list(userId: string): Promise<ApiKeyView[]> {
      const rows = await db.selectFrom('api_keys').selectAll().where('user_id', '=', userId).where('revoked_at', 'is', null)
        .orderBy('created_at', 'desc').orderBy('id', 'desc').limit(LISTED_KEYS).execute()
      const spent = await spentBy(rows.map(row => row.id))
      return rows.map(row => toView(row, spent.get(row.id) ?? 0))
    },

    /**
     * Revokes one of the caller's keys: it stops working on every instance within
     * the identity cache's pub/sub round trip. Revoking a revoked key is a no-op;
     * anyone else's key is 404.
     */
    async revoke(userId: string, id: string): Promise<{ id: string }> {
      const row = await db.updateTable('api_keys').set({ revoked_at: sql`coalesce(revoked_at, ${now()})` })
        .where('id', '=', id).where('user_id', '=', userId).returning('id').executeTakeFirst()
      if (!row)
        throw keyNotFound()
      await revoke({ userId, sessionId: keySessionId(id) })
      return { id }
    },

    /** The key's identity, or null for an unknown, revoked or expired key (the caller does not learn which). */
    async authenticate(key: string): Promise<KeyIdentity | null> {
      const row = await db.selectFrom('api_keys').selectAll().where('key_hash', '=', hashOf(key)).executeTakeFirst()
      if (!row || row.revoked_at !== null || (row.expires_at !== null && row.expires_at.getTime() <= clock.now()))
        return null
      return { keyId: row.id, userId: row.user_id, scopes: row.scopes, budget: budgetOf(row), rateLimitPerMinute: row.rate_limit_per_minute, expiresAt: row.expires_at }
    },

    /** The key was used: `last_used_at` moves, at most once a minute per key and instance (not awaited by callers). */
    async touch(keyId: string): Promise<void> {
      const at = clock.now()
      if (at - (lastTouched.get(keyId) ?? 0) < TOUCH_INTERVAL_MS)
        return
      lastTouched.set(keyId, at)
      if (lastTouched.size > 10_000)
        lastTouched.delete(lastTouched.keys().next().value!)
      await db.updateTable('api_keys').set({ last_used_at: new Date(at) }).where('id', '=', keyId).execute()
    },

    /** The caller's keys among `ids` (revoked ones too), for usage to name the key of each call. */
    async describe(userId: string, ids: string[]): Promise<Map<string, { id: string, name: string, prefix: string }>> {
      const rows = ids.length === 0 ? [] : await db.selectFrom('api_keys').select(['id', 'name', 'prefix']).where('user_id', '=', userId).where('id', 'in', ids).execute()
      return new Map(rows.map(row => [row.id, row]))
    },

    /** Account export: the keys without their hashes, and their budgets' running totals. */
    exportTables(userId: string): ExportTables {
      return {
        api_keys: keysetPages(async (after: { id: string } | undefined, limit) => db.selectFrom('api_keys')
          .select(['id', 'name', 'prefix', 'scopes', 'budget_flux', 'budget_period', 'rate_limit_per_minute', 'expires_at', 'revoked_at', 'last_used_at', 'created_at'])
          .where('user_id', '=', userId).$if(after !== undefined, query => query.where('id', '>', after!.id))
          .orderBy('id').limit(limit).execute()),
        // Each budgeted key's running total in its current period (the budget's guard; the ledger has every row).
        api_key_spend: keysetPages(async (after: { api_key_id: string } | undefined, limit) => db.selectFrom('api_key_spend as s')
          .innerJoin('api_keys as k', 'k.id', 's.api_key_id').select(['s.api_key_id', 's.period_start', 's.flux'])
          .where('k.user_id', '=', userId).$if(after !== undefined, query => query.where('s.api_key_id', '>', after!.api_key_id))
          .orderBy('s.api_key_id').limit(limit).execute()),
      }
    },

    /** Account deletion: every key of the user (their identities go with the user's revocation). Idempotent. */
    async deleteAllForUser(userId: string): Promise<void> {
      await db.deleteFrom('api_keys').where('user_id', '=', userId).execute()
    },
  }
}

function toView(row: ApiKey, spent: number): ApiKeyView {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    scopes: row.scopes,
    budget: budgetOf(row),
    spent,
    rateLimitPerMinute: row.rate_limit_per_minute,
    lastUsedAt: row.last_used_at,
    expiresAt: row.expires_at,
    createdAt: row.created_at,
  }
}
