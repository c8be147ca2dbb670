import type { Database, Db, FluxTransaction, FluxTransactionType } from '@airi/db'
import type { Transaction } from 'kysely'

import type { Cache } from '../adapters/ports.ts'
import { keys } from '../adapters/keys.ts'
import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'

/** How long a cached balance lives; every write invalidates it, and a fill older than a write is refused. */
const BALANCE_CACHE_TTL_SECONDS = 60

/** One ledger row as callers see it. A replayed write answers with the row the first write made. */
export interface LedgerEntry {
  id: string
  userId: string
  type: FluxTransactionType
  /** Flux actually moved (for a short debit, less than requested). */
  amount: number
  balanceBefore: number
  balanceAfter: number
  requestId: string | null
  description: string | null
  metadata: Record<string, unknown> | null
  createdAt: Date
}

interface WriteInput {
  userId: string
  amount: number
  /** Idempotency key: the same (user, requestId) never moves Flux twice. */
  requestId: string
  description?: string
  metadata?: Record<string, unknown>
  /**
   * true: a `requestId` already used is refused (409 REQUEST_ID_REUSED, nothing
   * written) instead of answered with the first row, for callers whose every call
   * must move Flux (the meter, which has already taken the units out of its debt).
   */
  refuseReplay?: boolean
}

export interface DebitInput extends WriteInput {
  /** false: a balance below `amount` is refused (402) instead of drained (e.g. a reservation). */
  allowPartial?: boolean
}

export interface CreditInput extends WriteInput {
  type?: Extract<FluxTransactionType, 'credit' | 'promo' | 'initial'>
}

/**
 * Billing writes that join a caller's transaction (see `BillingService.transaction`):
 * the caller changes its own rows through `trx`, and Flux moves in the same commit.
 */
export interface BillingTransaction {
  trx: Transaction<Database>
  /** As `BillingService.credit`, inside this transaction. */
  credit: (input: CreditInput) => Promise<LedgerEntry>
  /**
   * As `BillingService.debit`, inside this transaction. A refused debit (402) has
   * written nothing, so the caller may catch it and still commit its own changes.
   */
  debit: (input: DebitInput) => Promise<LedgerEntry>
}

export interface HistoryPage {
  items: LedgerEntry[]
  /** Pass back to get the next (older) page; null on the last page. */
  nextCursor: string | null
}

export interface BillingServiceDeps {
  db: Db
  cache: Cache
  logger: Logger
  metrics: Metrics
  /** Flux a user starts with (INITIAL_USER_FLUX), read when the account is first touched. */
  initialFlux: () => Promise<number>
}

export type BillingService = ReturnType<typeof createBillingService>

const UNIQUE_VIOLATION = '23505'

function toEntry(row: FluxTransaction): LedgerEntry {
  return {
    id: row.id,
    userId: row.user_id,
    type: row.type,
    amount: row.amount,
    balanceBefore: row.balance_before,
    balanceAfter: row.balance_after,
    requestId: row.request_id,
    description: row.description,
    metadata: (row.metadata as Record<string, unknown> | null) ?? null,
    createdAt: row.created_at,
  }
}

/** Cursors are opaque to callers; inside, the ledger sequence of the last row seen. */
function encodeCursor(seq: number): string {
  return Buffer.from(`seq:${seq}`).toString('base64url')
}

function decodeCursor(cursor: string): number {
  const match = /^seq:(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString())
  if (!match)
    throw new ApiError(400, 'INVALID_CURSOR', 'The history cursor is not valid', { field: 'cursor' })
  return Number(match[1])
}

function insufficientFlux(balance: number, requested: number): ApiError {
  return new ApiError(402, 'INSUFFICIENT_FLUX', 'Not enough Flux', { balance, requested })
}

/**
 * The only writer of balances. Every write is one transaction: lock the user's
 * balance row, answer a replay of the same (user, requestId) with the row it made,
 * otherwise update the balance and append the ledger row. The cached balance is
 * invalidated after commit (best effort); a reader that read Postgres before the
 * write cannot put its older balance back (a guarded cache entry).
 */
export function createBillingService({ db, cache, logger, metrics, initialFlux }: BillingServiceDeps) {
  async function dropCache(userId: string): Promise<void> {
    await cache.invalidate(keys.userFlux(userId), BALANCE_CACHE_TTL_SECONDS).catch((error: unknown) => {
      logger.warn({ err: error, userId }, 'could not invalidate the cached balance; it expires on its own')
    })
  }

  const requestIdReused = (requestId: string) =>
    new ApiError(409, 'REQUEST_ID_REUSED', 'This request id was already used for another write', { requestId })

  /**
   * Opens the user's account: the balance row with INITIAL_USER_FLUX and its
   * `initial` ledger row, once: concurrent openers all wait on the primary key, and
   * only the one that inserted writes the ledger row.
   */
  async function openAccountIn(trx: Transaction<Database>, userId: string, initial: number): Promise<boolean> {
    const inserted = await trx.insertInto('user_flux')
      .values({ user_id: userId, flux: initial })
      .onConflict(oc => oc.column('user_id').doNothing())
      .returning('user_id')
      .executeTakeFirst()
    if (inserted) {
      await trx.insertInto('flux_transaction').values({
        user_id: userId,
        type: 'initial',
        amount: initial,
        balance_before: 0,
        balance_after: initial,
        request_id: 'initial',
        description: 'Initial Flux',
      }).execute()
    }
    return inserted !== undefined
  }

  async function openAccount(userId: string): Promise<void> {
    const initial = await initialFlux()
    const created = await db.transaction().execute(trx => openAccountIn(trx, userId, initial))
    if (created)
      metrics.fluxCredited.add(initial, { type: 'initial' })
  }

  const accountNotFound = () => new ApiError(404, 'FLUX_ACCOUNT_NOT_FOUND', 'This account has no Flux balance')

  type Write = (balance: number) => { type: FluxTransactionType, amount: number, metadata?: Record<string, unknown> }

  interface Written { entry: LedgerEntry, replayed: boolean }

  function checkAmount(amount: number): void {
    if (!Number.isSafeInteger(amount) || amount <= 0)
      throw new ApiError(400, 'INVALID_AMOUNT', 'Amount must be a positive whole number of Flux', { field: 'amount' })
  }

  /**
   * The one write path, inside `trx`: lock, replay check, compute, update, append.
   * Undefined when the user has no open account.
   */
  async function writeIn(trx: Transaction<Database>, input: WriteInput, compute: Write): Promise<Written | undefined> {
    const account = await trx.selectFrom('user_flux').select('flux')
      .where('user_id', '=', input.userId).where('deleted_at', 'is', null)
      .forUpdate().executeTakeFirst()
    if (!account)
      return undefined

    // Checked under the lock, so a concurrent retry sees the first write committed.
    const replay = await trx.selectFrom('flux_transaction').selectAll()
      .where('user_id', '=', input.userId).where('request_id', '=', input.requestId)
      .executeTakeFirst()
    if (replay) {
      if (input.refuseReplay)
        throw requestIdReused(input.requestId)
      return { entry: toEntry(replay), replayed: true }
    }

    const { type, amount, metadata } = compute(account.flux)
    const balanceAfter = type === 'debit' ? account.flux - amount : account.flux + amount
    await trx.updateTable('user_flux').set({ flux: balanceAfter, updated_at: new Date() }).where('user_id', '=', input.userId).execute()
    const row = await trx.insertInto('flux_transaction').values({
      user_id: input.userId,
      type,
      amount,
      balance_before: account.flux,
      balance_after: balanceAfter,
      request_id: input.requestId,
      description: input.description ?? null,
      metadata: metadata && Object.keys(metadata).length > 0 ? JSON.stringify(metadata) : null,
    }).returningAll().executeTakeFirstOrThrow()
    return { entry: toEntry(row), replayed: false }
  }

  /** After commit: the cached balance goes, the instruments count what moved. */
  async function committed({ entry, replayed }: Written): Promise<void> {
    if (replayed)
      return
    await dropCache(entry.userId)
    if (entry.type === 'debit') {
      metrics.fluxConsumed.add(entry.amount)
      const unbilled = Number(entry.metadata?.unbilled ?? 0)
      if (unbilled > 0)
        metrics.fluxUnbilled.add(unbilled)
    }
    else {
      metrics.fluxCredited.add(entry.amount, { type: entry.type })
    }
  }

  /** A write in a transaction of its own. A user's first write opens the account and runs once more (`opened`). */
  async function write(input: WriteInput, compute: Write, opened = false): Promise<LedgerEntry> {
    checkAmount(input.amount)
    try {
      const written = await db.transaction().execute(trx => writeIn(trx, input, compute))
      if (!written) {
        if (opened)
          throw accountNotFound()
        await openAccount(input.userId)
        return write(input, compute, true)
      }
      await committed(written)
      return written.entry
    }
    catch (error) {
      // Belt and braces: the unique index is what finally makes a write idempotent.
      if ((error as { code?: string }).code === UNIQUE_VIOLATION) {
        const replay = await db.selectFrom('flux_transaction').selectAll()
          .where('user_id', '=', input.userId).where('request_id', '=', input.requestId).executeTakeFirst()
        if (replay) {
          if (input.refuseReplay)
            throw requestIdReused(input.requestId)
          return toEntry(replay)
        }
      }
      throw error
    }
  }

  function debitOf(input: DebitInput): Write {
    return (balance) => {
      if (balance <= 0 || (input.allowPartial === false && balance < input.amount))
        throw insufficientFlux(balance, input.amount)
      const charged = Math.min(balance, input.amount)
      const unbilled = input.amount - charged
      return {
        type: 'debit',
        amount: charged,
        metadata: { ...input.metadata, ...(unbilled > 0 ? { requestedAmount: input.amount, unbilled } : {}) },
      }
    }
  }

  const creditOf = (input: CreditInput): Write => () => ({ type: input.type ?? 'credit', amount: input.amount, metadata: input.metadata })

  return {
    /** The balance, through the cache; the first read creates the account. */
    async getBalance(userId: string): Promise<number> {
      const key = keys.userFlux(userId)
      const cached = await cache.read(key).catch((error: unknown) => {
        logger.warn({ err: error, userId }, 'balance cache unavailable; reading Postgres')
        return undefined
      })
      if (cached?.value != null && /^\d+$/.test(cached.value))
        return Number(cached.value)

      const readBalance = () => db.selectFrom('user_flux').select('flux')
        .where('user_id', '=', userId).where('deleted_at', 'is', null).executeTakeFirst()
      let account = await readBalance()
      if (!account) {
        await openAccount(userId)
        account = await readBalance()
      }
      if (!account)
        throw accountNotFound()
      // Refused when a write invalidated the balance after our cache read: ours may be older.
      if (cached)
        await cache.fill(key, String(account.flux), cached.version, BALANCE_CACHE_TTL_SECONDS).catch(() => {})
      return account.flux
    },

    /**
     * Takes Flux. Balance ≤ 0: 402 INSUFFICIENT_FLUX, nothing written. Balance below
     * the amount: drains to 0 and records `requestedAmount` and `unbilled` (counted
     * in `airi.billing.flux.unbilled`), unless `allowPartial` is false (402).
     */
    async debit(input: DebitInput): Promise<LedgerEntry> {
      return write(input, debitOf(input))
    },

    /** Gives Flux (a purchase, a promotion or grant, or the initial amount). */
    async credit(input: CreditInput): Promise<LedgerEntry> {
      return write(input, creditOf(input))
    },

    /**
     * Runs `work` in one Postgres transaction in which credits and debits join the
     * caller's own writes (e.g. claiming a purchase's mirror row and crediting it
     * commit together, or not at all). The rules are those of `credit` and `debit`:
     * replay check and row lock per write, an account opened on a first write. The
     * cache and the instruments are updated after commit. Keep `work` short and free
     * of calls to the outside, and make every query through `trx`: a query on
     * another connection while the row locks are held can wait on this transaction.
     */
    async transaction<T>(work: (tx: BillingTransaction) => Promise<T>): Promise<T> {
      // Read before the transaction: the config read may need a connection of its own.
      const initial = await initialFlux()
      const written: Written[] = []
      const opened: number[] = []
      const result = await db.transaction().execute(async (trx) => {
        const join = async (input: WriteInput, compute: Write): Promise<LedgerEntry> => {
          checkAmount(input.amount)
          let done = await writeIn(trx, input, compute)
          if (!done) {
            if (await openAccountIn(trx, input.userId, initial))
              opened.push(initial)
            done = await writeIn(trx, input, compute)
          }
          if (!done)
            throw accountNotFound()
          written.push(done)
          return done.entry
        }
        return work({
          trx,
          credit: input => join(input, creditOf(input)),
          debit: input => join(input, debitOf(input)),
        })
      })
      for (const amount of opened)
        metrics.fluxCredited.add(amount, { type: 'initial' })
      for (const entry of written)
        await committed(entry)
      return result
    },

    /** Whether a write under this request id was already made (for reporting, not for safety). */
    async findByRequestId(userId: string, requestId: string): Promise<LedgerEntry | undefined> {
      const row = await db.selectFrom('flux_transaction').selectAll()
        .where('user_id', '=', userId).where('request_id', '=', requestId).executeTakeFirst()
      return row ? toEntry(row) : undefined
    },

    /** The user's ledger, newest first, keyset-paged. */
    async history(userId: string, { cursor, limit = 20 }: { cursor?: string | null, limit?: number } = {}): Promise<HistoryPage> {
      let query = db.selectFrom('flux_transaction').selectAll().where('user_id', '=', userId)
      if (cursor)
        query = query.where('seq', '<', decodeCursor(cursor))
      const rows = await query.orderBy('seq', 'desc').limit(limit + 1).execute()
      const page = rows.slice(0, limit)
      return { items: page.map(toEntry), nextCursor: rows.length > limit ? encodeCursor(page.at(-1)!.seq) : null }
    },

    /** Account deletion (priority 20): the balance row is soft-deleted, the ledger stays. */
    async deleteAllForUser(userId: string): Promise<void> {
      await db.updateTable('user_flux').set({ deleted_at: new Date(), updated_at: new Date() })
        .where('user_id', '=', userId).where('deleted_at', 'is', null).execute()
      await dropCache(userId)
    },
  }
}
