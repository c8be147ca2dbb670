import type { ApiKeyBudgetPeriod, Database, Db } from '@airi/db'
import { sql, type Transaction } from 'kysely'

import type { Cache } from '../../adapters/ports.ts'
import { keys } from '../../adapters/keys.ts'
import { createCursorCodec, sequenceKey } from '../../cursor.ts'
import { isUniqueViolation } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import { billingExportTables } from './export.ts'
import { createGroupCommit } from './group-commit.ts'
import { accountNotFound, checkAmount, creditPlan, debitPlan, keyPeriodStart, openAccountIn, readOutcome, runWrites, toEntry, type CreditInput, type DebitInput, type LedgerEntry, type Plan, type WriteInput, type Written } from './write.ts'

export { writeCompanionAlone, type Alongside, type CompanionKind, type CreditInput, type DebitInput, type LedgerEntry } from './write.ts'

/** How long a cached balance lives; every write invalidates it, and a fill older than a write is refused. */
const BALANCE_CACHE_TTL_SECONDS = 60

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

/** The ledger is paged newest first by its sequence number. */
const historyCursor = createCursorCodec(sequenceKey)

/**
 * The only writer of balances. Every write commits in one statement: lock the
 * user's balance row, answer a replay of the same (user, requestId) with the row
 * it made, otherwise update the balance and append the ledger row. Writes that
 * arrive together share a statement (group commit), each with its own outcome;
 * none is answered before its statement committed. The cached balance is
 * invalidated after commit (best effort); a reader that read Postgres before the
 * write cannot put its older balance back (a guarded cache entry).
 */
export function createBillingService({ db, cache, logger, metrics, initialFlux, onBalanceChanged }: BillingServiceDeps) {
  const groupCommit = createGroupCommit(db)

  async function dropCache(userId: string): Promise<void> {
    await cache.invalidate(keys.userFlux(userId), BALANCE_CACHE_TTL_SECONDS).catch((error: unknown) => {
      logger.warn({ err: error, userId }, 'could not invalidate the cached balance; it expires on its own')
    })
  }

  async function openAccount(userId: string): Promise<void> {
    const initial = await initialFlux()
    const created = await db.transaction().execute(trx => openAccountIn(trx, userId, initial))
    if (created)
      metrics.fluxCredited.add(initial, { type: 'initial' })
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

  /** A write through group commit. A user's first write opens the account and runs once more (`opened`). */
  async function write(input: WriteInput, plan: Plan, opened = false, retried = false): Promise<LedgerEntry> {
    checkAmount(input.amount)
    let written: Written | undefined
    try {
      written = readOutcome(await groupCommit.write({ input, plan }), input)
    }
    catch (error) {
      // A concurrent write of the same request id committed while this one waited
      // for the lock (see `writeStatement`); run again, it now answers as a replay.
      if (isUniqueViolation(error) && !retried)
        return write(input, plan, opened, true)
      throw error
    }
    if (!written) {
      if (opened)
        throw accountNotFound()
      await openAccount(input.userId)
      return write(input, plan, true, retried)
    }
    if (input.afterCommit)
      input.afterCommit(committed(written))
    else
      await committed(written)
    return written.entry
  }

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
          const writeHere = async () => readOutcome((await runWrites(trx, [{ input: ours, plan }]))[0], ours)
          let done = await writeHere()
          if (!done) {
            if (await openAccountIn(trx, input.userId, initial))
              opened.push(initial)
            done = await writeHere()
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

    /**
     * A budgeted personal API key's budget and what its rows moved in the current
     * period (the counter the write statement keeps); null for a key without one.
     */
    async keySpend(keyId: string): Promise<{ budget: number, period: ApiKeyBudgetPeriod, spent: number } | null> {
      const { rows } = await sql<{ budget: string, period: ApiKeyBudgetPeriod, spent: string }>`SELECT k.budget_flux AS budget, k.budget_period AS period,
          CASE WHEN s.period_start = ${keyPeriodStart} THEN s.flux ELSE 0 END AS spent
        FROM api_key_spend s JOIN api_keys k ON k.id = s.api_key_id WHERE s.api_key_id = ${keyId}`.execute(db)
      const row = rows[0]
      return row ? { budget: Number(row.budget), period: row.period, spent: Number(row.spent) } : null
    },

    /**
     * What each of the keys `ids` moved since the start of its budget's period (all
     * time without a budget): its ledger rows, debits less what was given back.
     */
    async keysSpent(ids: string[]): Promise<Map<string, number>> {
      if (ids.length === 0)
        return new Map()
      const { rows } = await sql<{ id: string, flux: string }>`SELECT k.id, COALESCE(sum(CASE WHEN t.type = 'debit' THEN t.amount ELSE -t.amount END), 0) AS flux
        FROM api_keys k LEFT JOIN flux_transaction t ON t.api_key_id = k.id AND t.created_at >= ${keyPeriodStart}
        WHERE k.id = ANY(${ids}::text[]) GROUP BY k.id`.execute(db)
      return new Map(rows.map(row => [row.id, Number(row.flux)]))
    },

    /** Of `userIds`, those whose account was closed by account deletion (writes to them are refused). */
    async closedAccounts(userIds: string[]): Promise<Set<string>> {
      if (userIds.length === 0)
        return new Set()
      const rows = await db.selectFrom('user_flux').select('user_id')
        .where('user_id', 'in', userIds).where('deleted_at', 'is not', null).execute()
      return new Set(rows.map(row => row.user_id))
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

    /** Account export: the balance row and the whole ledger. */
    exportTables: (userId: string) => billingExportTables(db, userId),

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
