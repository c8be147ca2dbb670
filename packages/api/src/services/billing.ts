import type { Database, Db, FluxTransaction, FluxTransactionType } from '@airi/db'
import { sql, type RawBuilder, type Transaction } from 'kysely'

import type { Cache } from '../adapters/ports.ts'
import { keys } from '../adapters/keys.ts'
import { createCursorCodec, sequenceKey } from '../cursor.ts'
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

/**
 * A write of the caller's own (an INSERT or UPDATE, no RETURNING) that runs in the
 * same statement as a ledger write, so both commit together in one round trip.
 * `moved` is the Flux the ledger write moved: the new row's amount, the first
 * row's on a replay, 0 when it was refused. It runs whatever the outcome (written,
 * replayed, refused, or no account yet, when the write runs once more after
 * opening it), so it must be idempotent.
 */
export type Alongside = (moved: RawBuilder<number>) => RawBuilder<unknown>

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
  /** Not taken inside `BillingService.transaction`: there the caller writes through `trx`. */
  alongside?: Alongside
  /**
   * true: after commit, the new balance goes to `onBalanceChanged` (the user's
   * devices hear of it). For changes no device of the user made (a top-up, a
   * refund, a grant); a device that spends re-reads the balance itself.
   */
  announce?: boolean
}

export interface DebitInput extends WriteInput {
  /** false: a balance below `amount` is refused (402) instead of drained (e.g. a reservation). */
  allowPartial?: boolean
  /**
   * A hold sized to the balance (the LLM gateway's reservation): takes `amount`,
   * or the whole balance when it is less, but never less than `atLeast` (402
   * below it). Taking less than `amount` owes nothing: no `unbilled`.
   */
  atLeast?: number
  /**
   * For usage already served: never refused. A balance below `amount` is drained
   * and the rest recorded as `unbilled` on the row, which is written even when
   * the balance was empty (`amount` 0), so what was served is always in the ledger.
   */
  served?: boolean
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
  /** Told, after commit, the balance an `announce`d write left; best effort, it never fails the write. */
  onBalanceChanged?: (userId: string, balance: number) => Promise<void>
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

/** The ledger is paged newest first by its sequence number. */
const historyCursor = createCursorCodec(sequenceKey)

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
export function createBillingService({ db, cache, logger, metrics, initialFlux, onBalanceChanged }: BillingServiceDeps) {
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

  interface Written { entry: LedgerEntry, replayed: boolean, announce?: boolean }

  function checkAmount(amount: number): void {
    if (!Number.isSafeInteger(amount) || amount <= 0)
      throw new ApiError(400, 'INVALID_AMOUNT', 'Amount must be a positive whole number of Flux', { field: 'amount' })
  }

  interface Plan {
    type: FluxTransactionType
    /** Debits only: the balance below which nothing moves (402). */
    minimum?: number
    /** Debits only: what a short debit did not take is owed, recorded as `unbilled`. */
    owed?: boolean
  }

  type WriteRow = FluxTransaction & { outcome: 'written' | 'replayed' | 'refused', balance: number | null }

  /**
   * The one write, as one statement: lock the balance row, look for a replay,
   * decide what moves, update the balance, append the ledger row (and run the
   * caller's `alongside`). One statement is one round trip and commits or fails as
   * a whole. Its outcome is one row: `written`, `replayed` (the first write's row,
   * nothing moved) or `refused` (with the balance, nothing moved); no row when the
   * user has no open account.
   *
   * The lock waits for a concurrent write of the same user and then reads the
   * balance it committed (READ COMMITTED re-reads a locked row), so balances stay
   * exact. The replay lookup reads the statement's snapshot, taken before that
   * wait: a concurrent write of the same request id that commits during the wait
   * is not seen there, and the insert then fails on the unique index
   * (user_id, request_id), undoing the whole statement; `write` runs it again and
   * the replay is seen.
   */
  function writeStatement(input: WriteInput, { type, minimum = 1, owed = true }: Plan): RawBuilder<WriteRow> {
    const amount = sql`${input.amount}::bigint`
    const debit = type === 'debit'
    const metadata = input.metadata && Object.keys(input.metadata).length > 0 ? JSON.stringify(input.metadata) : null
    // A debit moves what the balance allows: all of it, or what is left; NULL (below the minimum) refuses.
    const moved = debit
      ? sql`CASE WHEN flux < ${minimum}::bigint THEN NULL ELSE LEAST(flux, ${amount}) END`
      : amount
    // A short debit that is owed records what was asked for and what went unbilled.
    const short = debit && owed
    const metadataOf = short
      ? sql`NULLIF(COALESCE(${metadata}::jsonb, '{}'::jsonb) || CASE WHEN moved < ${amount} THEN jsonb_build_object('requestedAmount', ${amount}, 'unbilled', ${amount} - moved) ELSE '{}'::jsonb END, '{}'::jsonb)`
      : sql`${metadata}::jsonb`
    const unbilled = short ? sql`${amount} - moved` : sql`0`
    const alongside = input.alongside
      ? sql`, alongside AS (${input.alongside(sql<number>`COALESCE((SELECT amount FROM ins), (SELECT amount FROM replay), 0)`)})`
      : sql``
    return sql<WriteRow>`
      WITH acct AS (
        SELECT flux FROM user_flux WHERE user_id = ${input.userId} AND deleted_at IS NULL FOR UPDATE
      ), replay AS (
        SELECT * FROM flux_transaction WHERE user_id = ${input.userId} AND request_id = ${input.requestId}
      ), plan AS (
        SELECT flux AS before, ${moved} AS moved FROM acct WHERE NOT EXISTS (SELECT 1 FROM replay)
      ), upd AS (
        UPDATE user_flux u SET flux = plan.before ${debit ? sql`-` : sql`+`} plan.moved, updated_at = now()
        FROM plan WHERE u.user_id = ${input.userId} AND plan.moved IS NOT NULL
        RETURNING plan.before, plan.moved, u.flux AS after
      ), ins AS (
        INSERT INTO flux_transaction (user_id, type, amount, balance_before, balance_after, request_id, description, metadata, unbilled)
        SELECT ${input.userId}, ${type}, moved, before, after, ${input.requestId}, ${input.description ?? null}, ${metadataOf}, ${unbilled} FROM upd
        RETURNING *
      )${alongside}
      SELECT 'written' AS outcome, NULL::bigint AS balance, ins.* FROM ins
      UNION ALL SELECT 'replayed', NULL, replay.* FROM replay
      UNION ALL SELECT 'refused', plan.before, (NULL::flux_transaction).* FROM plan WHERE plan.moved IS NULL`
  }

  /** Runs the write statement on `executor`; undefined when the user has no open account. */
  async function writeOn(executor: Db | Transaction<Database>, input: WriteInput, plan: Plan): Promise<Written | undefined> {
    const { rows } = await writeStatement(input, plan).execute(executor)
    const row = rows[0]
    if (!row)
      return undefined
    if (row.outcome === 'refused')
      throw insufficientFlux(row.balance ?? 0, input.amount)
    if (row.outcome === 'replayed' && input.refuseReplay)
      throw requestIdReused(input.requestId)
    return { entry: toEntry(row), replayed: row.outcome === 'replayed', announce: input.announce }
  }

  /** After commit: the cached balance goes, the instruments count what moved. */
  async function committed({ entry, replayed, announce }: Written): Promise<void> {
    if (replayed)
      return
    await dropCache(entry.userId)
    if (announce) {
      await onBalanceChanged?.(entry.userId, entry.balanceAfter).catch((error: unknown) => {
        logger.warn({ err: error, userId: entry.userId }, 'could not announce a balance change; devices see it on their next read')
      })
    }
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

  /** A write on its own: one statement. A user's first write opens the account and runs once more (`opened`). */
  async function write(input: WriteInput, plan: Plan, opened = false, retried = false): Promise<LedgerEntry> {
    checkAmount(input.amount)
    let written: Written | undefined
    try {
      written = await writeOn(db, input, plan)
    }
    catch (error) {
      // A concurrent write of the same request id committed while this one waited
      // for the lock (see `writeStatement`); run again, it now answers as a replay.
      if ((error as { code?: string }).code === UNIQUE_VIOLATION && !retried)
        return write(input, plan, opened, true)
      throw error
    }
    if (!written) {
      if (opened)
        throw accountNotFound()
      await openAccount(input.userId)
      return write(input, plan, true, retried)
    }
    await committed(written)
    return written.entry
  }

  function debitPlan(input: DebitInput): Plan {
    if (input.served)
      return { type: 'debit', minimum: 0, owed: true }
    if (input.atLeast !== undefined) {
      if (!Number.isSafeInteger(input.atLeast) || input.atLeast < 1 || input.atLeast > input.amount)
        throw new ApiError(400, 'INVALID_AMOUNT', 'atLeast must be a whole number of Flux between 1 and the amount', { field: 'atLeast' })
      return { type: 'debit', minimum: input.atLeast, owed: false }
    }
    return input.allowPartial === false ? { type: 'debit', minimum: input.amount, owed: false } : { type: 'debit', minimum: 1, owed: true }
  }
  const creditPlan = (input: CreditInput): Plan => ({ type: input.type ?? 'credit' })

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
     * the amount: drains to 0 and records what it could not take as `unbilled` (the
     * column, `metadata.requestedAmount`/`unbilled`, `airi.billing.flux.unbilled`),
     * unless `allowPartial` is false (402). `atLeast` makes it a hold sized to the
     * balance; `served` never refuses (see `DebitInput`).
     */
    async debit(input: DebitInput): Promise<LedgerEntry> {
      return write(input, debitPlan(input))
    },

    /** Gives Flux (a purchase, a promotion or grant, or the initial amount). */
    async credit(input: CreditInput): Promise<LedgerEntry> {
      return write(input, creditPlan(input))
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
        const join = async (input: WriteInput, plan: Plan): Promise<LedgerEntry> => {
          checkAmount(input.amount)
          const ours = { ...input, alongside: undefined }
          // The lock first, in a statement of its own: the write's snapshot is then
          // taken after any concurrent write of this user committed, so a replay of
          // it is seen instead of failing on the unique index (which would abort
          // the caller's whole transaction).
          await sql`SELECT 1 FROM user_flux WHERE user_id = ${input.userId} FOR UPDATE`.execute(trx)
          let done = await writeOn(trx, ours, plan)
          if (!done) {
            if (await openAccountIn(trx, input.userId, initial))
              opened.push(initial)
            done = await writeOn(trx, ours, plan)
          }
          if (!done)
            throw accountNotFound()
          written.push(done)
          return done.entry
        }
        return work({
          trx,
          credit: input => join(input, creditPlan(input)),
          debit: input => join(input, debitPlan(input)),
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
        query = query.where('seq', '<', historyCursor.decode(cursor)[0])
      const rows = await query.orderBy('seq', 'desc').limit(limit + 1).execute()
      const page = rows.slice(0, limit)
      return { items: page.map(toEntry), nextCursor: rows.length > limit ? historyCursor.encode([page.at(-1)!.seq]) : null }
    },

    /**
     * Account deletion (priority 20): the balance row is soft-deleted, the ledger
     * stays. A balance never opened is closed too (an empty row), so no later write
     * (a purchase paid after the deletion) opens one for a user who is gone.
     */
    async deleteAllForUser(userId: string): Promise<void> {
      const now = new Date()
      await db.insertInto('user_flux').values({ user_id: userId, flux: 0, deleted_at: now, updated_at: now })
        .onConflict(oc => oc.column('user_id').doUpdateSet({ deleted_at: now, updated_at: now }).where('user_flux.deleted_at', 'is', null))
        .execute()
      await dropCache(userId)
    },
  }
}
