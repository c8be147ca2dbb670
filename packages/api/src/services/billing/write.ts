import { sql, type RawBuilder, type Transaction } from 'kysely'

import { prepared, type Database, type Db, type FluxTransaction, type FluxTransactionType } from '@airi/db'

import { ApiError } from '../../errors.ts'

// The ledger's one write statement, the plans that decide what it moves, and the
// shapes of its rows and inputs. No state: `createBillingService` runs them.

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

export interface WriteInput {
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
  /**
   * Takes the after-commit work (the cached balance dropped, the instruments) so
   * the write returns at commit; the caller awaits it before its request ends (the
   * LLM gateway overlaps it with the upstream call). Never rejects.
   */
  afterCommit?: (work: Promise<void>) => void
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

export function toEntry(row: EntryRow): LedgerEntry {
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

function insufficientFlux(balance: number, requested: number): ApiError {
  return new ApiError(402, 'INSUFFICIENT_FLUX', 'Not enough Flux', { balance, requested })
}

const requestIdReused = (requestId: string) =>
  new ApiError(409, 'REQUEST_ID_REUSED', 'This request id was already used for another write', { requestId })

export const accountNotFound = () => new ApiError(404, 'FLUX_ACCOUNT_NOT_FOUND', 'This account has no Flux balance')

export function checkAmount(amount: number): void {
  if (!Number.isSafeInteger(amount) || amount <= 0)
    throw new ApiError(400, 'INVALID_AMOUNT', 'Amount must be a positive whole number of Flux', { field: 'amount' })
}

/**
 * Opens the user's account: the balance row with INITIAL_USER_FLUX and its
 * `initial` ledger row, once: concurrent openers all wait on the primary key, and
 * only the one that inserted writes the ledger row.
 */
export async function openAccountIn(trx: Transaction<Database>, userId: string, initial: number): Promise<boolean> {
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

export interface Written { entry: LedgerEntry, replayed: boolean, announce?: boolean }

export interface Plan {
  type: FluxTransactionType
  /** Debits only: the balance below which nothing moves (402). */
  minimum?: number
  /** Debits only: what a short debit did not take is owed, recorded as `unbilled`. */
  owed?: boolean
}

type WriteRow = EntryRow & { outcome: 'written' | 'replayed' | 'refused', balance: number | null }

/** What a ledger entry is read from; named, not `*`, so a column added later leaves the prepared statement's result as it was. */
const ENTRY_COLUMNS = ['id', 'user_id', 'type', 'amount', 'balance_before', 'balance_after', 'request_id', 'description', 'metadata', 'created_at'] as const
type EntryRow = Pick<FluxTransaction, typeof ENTRY_COLUMNS[number]>
const entryColumns = (table: string) => sql.raw(ENTRY_COLUMNS.map(column => `${table}.${column}`).join(', '))

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
  return sql<WriteRow>`${prepared}
    WITH acct AS (
      SELECT flux FROM user_flux WHERE user_id = ${input.userId} AND deleted_at IS NULL FOR UPDATE
    ), replay AS (
      SELECT ${entryColumns('t')} FROM flux_transaction t WHERE t.user_id = ${input.userId} AND t.request_id = ${input.requestId}
    ), plan AS (
      SELECT flux AS before, ${moved} AS moved FROM acct WHERE NOT EXISTS (SELECT 1 FROM replay)
    ), upd AS (
      UPDATE user_flux u SET flux = plan.before ${debit ? sql`-` : sql`+`} plan.moved, updated_at = now()
      FROM plan WHERE u.user_id = ${input.userId} AND plan.moved IS NOT NULL
      RETURNING plan.before, plan.moved, u.flux AS after
    ), ins AS (
      INSERT INTO flux_transaction (user_id, type, amount, balance_before, balance_after, request_id, description, metadata, unbilled)
      SELECT ${input.userId}, ${type}, moved, before, after, ${input.requestId}, ${input.description ?? null}, ${metadataOf}, ${unbilled} FROM upd
      RETURNING ${entryColumns('flux_transaction')}
    )${alongside}
    SELECT 'written' AS outcome, NULL::bigint AS balance, ${entryColumns('ins')} FROM ins
    UNION ALL SELECT 'replayed', NULL, ${entryColumns('replay')} FROM replay
    UNION ALL SELECT 'refused', plan.before, ${entryColumns('none')} FROM plan LEFT JOIN flux_transaction none ON false WHERE plan.moved IS NULL`
}

/** Runs the write statement on `executor`; undefined when the user has no open account. */
export async function writeOn(executor: Db | Transaction<Database>, input: WriteInput, plan: Plan): Promise<Written | undefined> {
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

export function debitPlan(input: DebitInput): Plan {
  if (input.served)
    return { type: 'debit', minimum: 0, owed: true }
  if (input.atLeast !== undefined) {
    if (!Number.isSafeInteger(input.atLeast) || input.atLeast < 1 || input.atLeast > input.amount)
      throw new ApiError(400, 'INVALID_AMOUNT', 'atLeast must be a whole number of Flux between 1 and the amount', { field: 'atLeast' })
    return { type: 'debit', minimum: input.atLeast, owed: false }
  }
  return input.allowPartial === false ? { type: 'debit', minimum: input.amount, owed: false } : { type: 'debit', minimum: 1, owed: true }
}
export const creditPlan = (input: CreditInput): Plan => ({ type: input.type ?? 'credit' })
