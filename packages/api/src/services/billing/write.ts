import { sql, type RawBuilder, type Transaction } from 'kysely'

import { prepared, type ApiKeyBudgetPeriod, type Database, type Db, type FluxTransaction, type FluxTransactionType } from '@airi/db'

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
 * A kind of row a caller writes in the statement of its ledger writes (the LLM
 * gateway's request-log rows, the meters' usage rows), so both commit together in
 * one round trip. Rows are data and one statement writes every row of a kind in
 * a batch, so a statement's text depends only on which kinds it carries and stays
 * prepared. Define each kind once, at module level.
 */
export interface CompanionKind {
  /** Its own name (lower case letters, digits, _): names its part of the statement. */
  name: string
  /** The row's columns and their SQL types. */
  columns: Readonly<Record<string, string>>
  /**
   * One INSERT or UPDATE (no RETURNING) of every row of `rows`: a relation of the
   * columns plus `moved`, the Flux the row's ledger write moved (the new ledger
   * row's amount, the first row's on a replay, 0 when it was refused). It runs
   * whatever the outcome (also once more after a user's first account is opened),
   * so it must be idempotent.
   */
  statement: (rows: RawBuilder<unknown>) => RawBuilder<unknown>
}

/** A row of a `CompanionKind` that joins a ledger write's statement. */
export interface Alongside {
  kind: CompanionKind
  row: Readonly<Record<string, string | number | boolean | null>>
}

const COMPANION_NAME = /^[a-z][a-z0-9_]*$/

/** `rows` as a relation of the kind's columns, from JSON (one parameter, whatever the number of rows). */
function companionRelation(kind: CompanionKind, rows: ReadonlyArray<Record<string, unknown>>, moved: RawBuilder<number>, withOrd: boolean): RawBuilder<unknown> {
  if (!COMPANION_NAME.test(kind.name))
    throw new Error(`companion kind name ${JSON.stringify(kind.name)} is not a plain identifier`)
  const columns = Object.entries(kind.columns).map(([column, type]) => `${column} ${type}`)
  if (withOrd)
    columns.unshift('ord bigint')
  return sql`(SELECT v.*, ${moved} AS moved FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS v(${sql.raw(columns.join(', '))}))`
}

/** A companion row written on its own, with `moved` given (when no ledger write was needed). */
export function writeCompanionAlone(executor: Db, { kind, row }: Alongside, moved: number): Promise<unknown> {
  return kind.statement(companionRelation(kind, [row], sql<number>`${moved}::bigint`, false)).execute(executor)
}

/**
 * When the budget period of a key (`k.budget_period`) that contains now began, in
 * UTC (the epoch for 'total'): by the database's clock, which also stamps the
 * ledger rows, so a period's counter and its rows agree.
 */
export const keyPeriodStart = sql`CASE k.budget_period
  WHEN 'day' THEN date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  WHEN 'month' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  ELSE 'epoch'::timestamptz END`

export interface WriteInput {
  userId: string
  amount: number
  /** Idempotency key: the same (user, requestId) never moves Flux twice. */
  requestId: string
  description?: string
  metadata?: Record<string, unknown>
  /** The personal API key whose call this write bills: on the row, so what a key spent is the sum of its rows. */
  apiKeyId?: string
  /**
   * true: a `requestId` already used is refused (409 REQUEST_ID_REUSED, nothing
   * written) instead of answered with the first row, for callers whose every call
   * must move Flux (the meter, which has already taken the units out of its debt).
   */
  refuseReplay?: boolean
  /** A row of the caller's own in the same statement. Not taken inside `BillingService.transaction`: there the caller writes through `trx`. */
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

/** A personal API key's budget would be passed: 402, nothing written (the LLM reservation and the meters' holds). */
export function keyBudgetExceeded(budget: number, period: ApiKeyBudgetPeriod): ApiError {
  return new ApiError(402, 'KEY_BUDGET_EXCEEDED', `This API key has spent its budget of ${budget} Flux for this ${period === 'total' ? 'key' : period}; raise it with a new key or wait for the next period`, { budget, period })
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

export type WriteRow = EntryRow & {
  outcome: 'written' | 'replayed' | 'refused' | 'over_budget'
  /** Refused: the balance the write found. */
  balance: number | null
  /** Over budget: the key's budget. */
  key_budget: { flux: number, period: ApiKeyBudgetPeriod } | null
}

/** What a ledger entry is read from; named, not `*`, so a column added later leaves the prepared statement's result as it was. */
const ENTRY_COLUMNS = ['id', 'user_id', 'type', 'amount', 'balance_before', 'balance_after', 'request_id', 'description', 'metadata', 'created_at'] as const
type EntryRow = Pick<FluxTransaction, typeof ENTRY_COLUMNS[number]>
const entryColumns = (table: string) => sql.raw(ENTRY_COLUMNS.map(column => `${table}.${column}`).join(', '))

/** One write of a statement: its input and the plan that decides what it moves. */
export interface PlannedWrite { input: WriteInput, plan: Plan }

/**
 * A write as a row of the statement's input. Rows come as one JSON parameter: its
 * size stays hidden from the planner (arrays would tell it), so the cached plan
 * is as cheap as one made for the values, and Postgres keeps it instead of
 * planning every time.
 */
function writeRow({ input, plan }: PlannedWrite, index: number) {
  const debit = plan.type === 'debit'
  return {
    ord: index + 1,
    user_id: input.userId,
    type: plan.type,
    amount: input.amount,
    minimum: debit ? plan.minimum ?? 1 : null,
    owed: debit && (plan.owed ?? true),
    request_id: input.requestId,
    description: input.description ?? null,
    metadata: input.metadata && Object.keys(input.metadata).length > 0 ? input.metadata : null,
    api_key_id: input.apiKeyId ?? null,
  }
}

/**
 * The ledger's one write statement, for one write or a batch of writes (group
 * commit, see `group-commit.ts`): lock the balance rows (in user id order, so
 * two batches never wait on each other in a cycle), look for replays, apply each
 * user's writes one after the other in batch order (a recursive step per write:
 * each starts from the balance the previous one left, a refused one moves
 * nothing), update each balance once, append the ledger rows in that order (and
 * run each caller's `alongside`). One statement is one round trip and one
 * commit, and commits or fails as a whole. Its outcome is one row per write, in
 * the batch's order (`ord`, from 1): `written`, `replayed` (the first write's
 * row, nothing moved) or `refused` (with the balance, nothing moved); no row for
 * a write whose user has no open account.
 *
 * A batch holds a (user, request id) once: a replay is looked for among rows
 * written before the statement.
 *
 * The lock waits for a concurrent write of the same user and then reads the
 * balance it committed (READ COMMITTED re-reads a locked row), so balances stay
 * exact. The replay lookup reads the statement's snapshot, taken before that
 * wait: a concurrent write of the same request id that commits during the wait
 * is not seen there, and the insert then fails on the unique index
 * (user_id, request_id), undoing the whole statement; `write` runs it again and
 * the replay is seen.
 */
function writeStatement(writes: readonly PlannedWrite[]): RawBuilder<WriteRow & { ord: string }> {
  // Every companion row of a kind is written by one statement of the kind's, named `companion_<name>`.
  const companions = new Map<CompanionKind, Array<Record<string, unknown>>>()
  writes.forEach(({ input: { alongside } }, index) => {
    if (!alongside)
      return
    const rows = companions.get(alongside.kind) ?? []
    rows.push({ ...alongside.row, ord: index + 1 })
    companions.set(alongside.kind, rows)
  })
  const alongside = [...companions].sort(([a], [b]) => a.name.localeCompare(b.name)).map(([kind, rows]) =>
    sql`, ${sql.raw(`companion_${kind.name}`)} AS (${kind.statement(companionRelation(kind, rows, sql<number>`COALESCE((SELECT amount FROM outcome WHERE outcome.ord = v.ord), 0)`, true))})`)
  // A debit moves what the balance allows: all of it, or what is left; NULL (below the minimum) refuses.
  // A reservation (a debit not owed) of a budgeted key also takes at most what the key's budget has left (LEAST skips NULL: no cap).
  const moved = (balance: RawBuilder<number>) =>
    sql`CASE WHEN w.type <> 'debit' THEN w.amount WHEN ${balance} < w.minimum OR w.key_left < w.minimum THEN NULL ELSE LEAST(${balance}, w.amount, w.key_left) END`
  const after = (balance: RawBuilder<number>) =>
    sql`${balance} + CASE WHEN w.type = 'debit' THEN -1 ELSE 1 END * COALESCE(${moved(balance)}, 0)`
  // The text depends only on the companion kinds present: prepared once per connection.
  return sql<WriteRow & { ord: string }>`${prepared}
    WITH RECURSIVE i AS (
      SELECT * FROM jsonb_to_recordset(${JSON.stringify(writes.map(writeRow))}::jsonb)
        AS i(ord bigint, user_id text, type text, amount bigint, minimum bigint, owed boolean, request_id text, description text, metadata jsonb, api_key_id text)
    ), acct AS (
      -- Lookups row by row (a lateral subquery that is never flattened into a
      -- join), so the cached plan reads the indexes however small the tables were
      -- when it was made.
      SELECT f.user_id, f.flux FROM (SELECT DISTINCT user_id FROM i ORDER BY user_id) u
      CROSS JOIN LATERAL (SELECT f.user_id, f.flux FROM user_flux f WHERE f.user_id = u.user_id AND f.deleted_at IS NULL FOR UPDATE) f
    ), spend AS (
      -- Budgeted keys' counters, each locked after its user's balance row (as every
      -- writer does, so no two statements wait on each other in a cycle); spent counts
      -- from the start of the current period. Group commit puts a key in a statement once.
      SELECT s.api_key_id, k.budget_flux AS budget, k.budget_period AS period, p.start,
        CASE WHEN s.period_start = p.start THEN s.flux ELSE 0 END AS spent
      FROM acct
      CROSS JOIN LATERAL (SELECT DISTINCT i.api_key_id FROM i WHERE i.user_id = acct.user_id AND i.api_key_id IS NOT NULL) ik
      CROSS JOIN LATERAL (SELECT s.api_key_id, s.period_start, s.flux FROM api_key_spend s WHERE s.api_key_id = ik.api_key_id FOR UPDATE) s
      JOIN api_keys k ON k.id = s.api_key_id
      CROSS JOIN LATERAL (SELECT ${keyPeriodStart} AS start) p
    ), replay AS (
      SELECT i.ord, t.* FROM i CROSS JOIN LATERAL (
        SELECT ${entryColumns('t')} FROM flux_transaction t WHERE t.user_id = i.user_id AND t.request_id = i.request_id OFFSET 0
      ) t
    ), todo AS (
      -- The writes that are no replay, numbered per user in batch order.
      -- key_left: what a reservation may take of its key's budget (NULL: no cap).
      SELECT i.*, row_number() OVER (PARTITION BY i.user_id ORDER BY i.ord) AS step,
        CASE WHEN i.type = 'debit' AND NOT i.owed AND spend.api_key_id IS NOT NULL THEN GREATEST(0, spend.budget - spend.spent) END AS key_left
      FROM i LEFT JOIN spend ON spend.api_key_id = i.api_key_id
      WHERE i.user_id IN (SELECT user_id FROM acct) AND NOT EXISTS (SELECT 1 FROM replay WHERE replay.ord = i.ord)
    ), steps AS (
      SELECT w.ord, w.user_id, w.step, acct.flux AS before, ${moved(sql`acct.flux`)} AS moved, ${after(sql`acct.flux`)} AS after
      FROM todo w JOIN acct ON acct.user_id = w.user_id WHERE w.step = 1
      UNION ALL
      SELECT w.ord, w.user_id, w.step, prev.after, ${moved(sql`prev.after`)}, ${after(sql`prev.after`)}
      FROM steps prev JOIN todo w ON w.user_id = prev.user_id AND w.step = prev.step + 1
    ), upd AS (
      UPDATE user_flux u SET flux = last.after, updated_at = now()
      FROM (SELECT DISTINCT ON (user_id) user_id, after FROM steps WHERE user_id IN (SELECT user_id FROM steps WHERE moved IS NOT NULL) ORDER BY user_id, step DESC) last
      WHERE u.user_id = last.user_id
    ), key_upd AS (
      -- Each key's counter moves by what its rows moved (debits up, credits down), from the period's start.
      UPDATE api_key_spend s SET period_start = spend.start, flux = GREATEST(0, spend.spent + d.delta)
      FROM (SELECT w.api_key_id, sum(CASE WHEN w.type = 'debit' THEN st.moved ELSE -st.moved END) AS delta
        FROM steps st JOIN i w ON w.ord = st.ord WHERE st.moved IS NOT NULL AND w.api_key_id IS NOT NULL GROUP BY w.api_key_id) d
      JOIN spend ON spend.api_key_id = d.api_key_id
      WHERE s.api_key_id = d.api_key_id
    ), ins AS (
      -- In each user's order, so seq follows the balance. A short debit that is owed records what was asked for and what went unbilled.
      INSERT INTO flux_transaction (user_id, type, amount, balance_before, balance_after, request_id, description, metadata, unbilled, api_key_id)
      SELECT w.user_id, w.type, s.moved, s.before, s.after, w.request_id, w.description,
        CASE WHEN w.owed AND s.moved < w.amount
          THEN COALESCE(w.metadata, '{}'::jsonb) || jsonb_build_object('requestedAmount', w.amount, 'unbilled', w.amount - s.moved)
          ELSE w.metadata END,
        CASE WHEN w.owed THEN w.amount - s.moved ELSE 0 END,
        w.api_key_id
      FROM steps s JOIN i w ON w.ord = s.ord WHERE s.moved IS NOT NULL
      ORDER BY s.user_id, s.step
      RETURNING ${entryColumns('flux_transaction')}
    ), outcome AS (
      SELECT i.ord, 'written' AS outcome, NULL::bigint AS balance, NULL::jsonb AS key_budget, ${entryColumns('ins')} FROM ins JOIN i ON i.user_id = ins.user_id AND i.request_id = ins.request_id
      UNION ALL SELECT replay.ord, 'replayed', NULL, NULL, ${entryColumns('replay')} FROM replay
      -- Refused by the balance, else by the key's budget (named in the answer).
      UNION ALL SELECT steps.ord, CASE WHEN steps.before >= w.minimum THEN 'over_budget' ELSE 'refused' END, steps.before,
          CASE WHEN steps.before >= w.minimum THEN jsonb_build_object('flux', spend.budget, 'period', spend.period) END, ${entryColumns('none')}
        FROM steps JOIN todo w ON w.ord = steps.ord LEFT JOIN spend ON spend.api_key_id = w.api_key_id LEFT JOIN flux_transaction none ON false WHERE steps.moved IS NULL
    )${sql.join(alongside, sql``)}
    SELECT * FROM outcome ORDER BY ord`
}

/** What one write's outcome row means: the written or replayed row, a 402, a 409; undefined when the user has no open account. */
export function readOutcome(row: WriteRow | undefined, input: WriteInput): Written | undefined {
  if (!row)
    return undefined
  if (row.outcome === 'refused')
    throw insufficientFlux(row.balance ?? 0, input.amount)
  if (row.outcome === 'over_budget')
    throw keyBudgetExceeded(Number(row.key_budget!.flux), row.key_budget!.period)
  if (row.outcome === 'replayed' && input.refuseReplay)
    throw requestIdReused(input.requestId)
  return { entry: toEntry(row), replayed: row.outcome === 'replayed', announce: input.announce }
}

/**
 * Runs the write statement for `writes` (a (user, request id) once) on `executor`:
 * each write's outcome row, in order, undefined where the user has no open
 * account. Rejects when the statement fails, for every write of it.
 */
export async function runWrites(executor: Db | Transaction<Database>, writes: readonly PlannedWrite[]): Promise<Array<WriteRow | undefined>> {
  const { rows } = await writeStatement(writes).execute(executor)
  const byOrd = new Map(rows.map(row => [Number(row.ord), row]))
  return writes.map((_, index) => byOrd.get(index + 1))
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
