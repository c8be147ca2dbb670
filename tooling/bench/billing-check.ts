// Whether a load's calls were billed exactly: the ledger rows written for its users
// add up to their balance changes, every call's request-log row is settled, and
// what those rows say the calls consumed is what the ledger moved.
import type pg from 'pg'

import { REQUEST_DEADLINE_MS } from './context.ts'
import { until } from './infra.ts'

/** Where the ledger and the request log stood before a load, per user. */
export interface LedgerMark {
  userIds: string[]
  /** Each user's last ledger `seq` (0 with none) and balance, in `userIds` order. */
  seqs: string[]
  balances: number[]
  /** The database's clock before the load: the request-log rows of the load were created after it. */
  at: string
}

export interface BillingCheck {
  /** Every check below holds and at least one call was billed. */
  exact: boolean
  users: number
  /** Users whose ledger rows since the mark do not add up to their balance change. */
  usersOff: number
  /** Request-log rows of the load (calls the server took, including any cut short when the load ended). */
  calls: number
  /** Request-log rows still pending once the ledger had stopped moving (0 when every call settled). */
  pending: number
  ledgerRows: number
  /** Σ of the ledger rows since the mark (credits positive, debits negative). */
  ledgerMoved: number
  /** Σ `flux_consumed` of the load's request-log rows: −ledgerMoved when every call's Flux is in the ledger. */
  consumed: number
  /** Σ `unbilled` of the new ledger rows: usage served but not charged. */
  unbilled: number
  /** Calls the load generator saw fail (errors, timeouts, non-2xx). */
  failedCalls: number
}

/** Marks the ledger of `userIds` before a load (nothing of theirs may be in flight). */
export async function markLedger(db: pg.Pool, userIds: string[]): Promise<LedgerMark> {
  const { rows } = await db.query<{ user_id: string, flux: string, seq: string }>(
    `SELECT f.user_id, f.flux::text AS flux,
            coalesce((SELECT max(t.seq) FROM flux_transaction t WHERE t.user_id = f.user_id), 0)::text AS seq
     FROM user_flux f WHERE f.user_id = ANY($1::text[])`,
    [userIds],
  )
  const byUser = new Map(rows.map(row => [row.user_id, row]))
  const missing = userIds.filter(id => !byUser.has(id))
  if (missing.length > 0)
    throw new Error(`no balance (user_flux) for ${missing.length} bench user(s), e.g. ${missing[0]}`)
  const { rows: [clock] } = await db.query<{ at: string }>(`SELECT clock_timestamp()::text AS at`)
  return {
    userIds,
    seqs: userIds.map(id => byUser.get(id)!.seq),
    balances: userIds.map(id => Number(byUser.get(id)!.flux)),
    at: clock!.at,
  }
}

interface LedgerState {
  balances: Map<string, number>
  moved: Map<string, number>
  ledgerRows: number
  unbilled: number
  calls: number
  pending: number
  consumed: number
}

async function readLedger(db: pg.Pool, mark: LedgerMark): Promise<LedgerState> {
  const { rows } = await db.query<{ user_id: string, flux: string, moved: string, unbilled: string, rows: number }>(
    `SELECT m.user_id, f.flux::text AS flux,
            coalesce(sum(CASE WHEN t.type = 'debit' THEN -t.amount ELSE t.amount END), 0)::text AS moved,
            coalesce(sum(t.unbilled), 0)::text AS unbilled,
            count(t.id)::int AS rows
     FROM unnest($1::text[], $2::bigint[]) AS m(user_id, seq)
     JOIN user_flux f ON f.user_id = m.user_id
     LEFT JOIN flux_transaction t ON t.user_id = m.user_id AND t.seq > m.seq
     GROUP BY m.user_id, f.flux`,
    [mark.userIds, mark.seqs],
  )
  const { rows: [log] } = await db.query<{ calls: number, pending: number, consumed: string }>(
    `SELECT count(*)::int AS calls, count(*) FILTER (WHERE state = 'pending')::int AS pending, coalesce(sum(flux_consumed), 0)::text AS consumed
     FROM llm_request_log WHERE user_id = ANY($1::text[]) AND created_at >= $2::timestamptz`,
    [mark.userIds, mark.at],
  )
  return {
    balances: new Map(rows.map(row => [row.user_id, Number(row.flux)])),
    moved: new Map(rows.map(row => [row.user_id, Number(row.moved)])),
    ledgerRows: rows.reduce((sum, row) => sum + row.rows, 0),
    unbilled: rows.reduce((sum, row) => sum + Number(row.unbilled), 0),
    calls: log!.calls,
    pending: log!.pending,
    consumed: Number(log!.consumed),
  }
}

/**
 * Checks the ledger of a load's users against `mark`, once it has stopped moving:
 * settlement may follow the answer, so it waits until no call of theirs is pending
 * and two reads in a row see the same rows (with a deadline, never a fixed wait).
 */
export async function checkBilling(db: pg.Pool, mark: LedgerMark, failedCalls: number): Promise<BillingCheck> {
  let state = await readLedger(db, mark)
  await until(async () => {
    const previous = state
    state = await readLedger(db, mark)
    return state.pending === 0 && state.ledgerRows === previous.ledgerRows && state.calls === previous.calls
  }, 'the load\'s calls to be settled in the ledger', REQUEST_DEADLINE_MS).catch(() => {})
  const usersOff = mark.userIds.filter((id, index) => (state.balances.get(id) ?? Number.NaN) - mark.balances[index]! !== state.moved.get(id)).length
  const ledgerMoved = [...state.moved.values()].reduce((sum, value) => sum + value, 0)
  return {
    exact: usersOff === 0 && state.pending === 0 && state.calls > 0 && ledgerMoved === -state.consumed && state.unbilled === 0 && failedCalls === 0,
    users: mark.userIds.length,
    usersOff,
    calls: state.calls,
    pending: state.pending,
    ledgerRows: state.ledgerRows,
    ledgerMoved,
    consumed: state.consumed,
    unbilled: state.unbilled,
    failedCalls,
  }
}

/** The checks of several rounds as one: exact only if every round was. */
export function combineChecks(checks: readonly BillingCheck[]): BillingCheck {
  const total = (key: keyof BillingCheck) => checks.reduce((sum, check) => sum + (check[key] as number), 0)
  return {
    exact: checks.length > 0 && checks.every(check => check.exact),
    users: Math.max(0, ...checks.map(check => check.users)),
    usersOff: total('usersOff'),
    calls: total('calls'),
    pending: total('pending'),
    ledgerRows: total('ledgerRows'),
    ledgerMoved: total('ledgerMoved'),
    consumed: total('consumed'),
    unbilled: total('unbilled'),
    failedCalls: total('failedCalls'),
  }
}

/** For the table's `ours` cell: `billing exact`, or what is off. */
export function describeBilling(check: BillingCheck): string {
  if (check.exact)
    return 'billing exact'
  const off = [
    check.usersOff > 0 ? `${check.usersOff} balance(s) ≠ ledger` : '',
    check.pending > 0 ? `${check.pending} call(s) unsettled` : '',
    check.calls === 0 ? 'no call logged' : '',
    check.ledgerMoved !== -check.consumed ? `ledger ${check.ledgerMoved} vs consumed ${check.consumed}` : '',
    check.unbilled > 0 ? `${check.unbilled} unbilled` : '',
    check.failedCalls > 0 ? `${check.failedCalls} failed call(s)` : '',
  ].filter(Boolean)
  return `billing NOT exact: ${off.join(', ')}`
}

/** The check's numbers for a row's `data` (bench-results.json). */
export function billingData(check: BillingCheck): Record<string, number | string> {
  return Object.fromEntries(Object.entries(check).map(([key, value]) => [`billing${key[0]!.toUpperCase()}${key.slice(1)}`, typeof value === 'boolean' ? (value ? 'exact' : 'NOT exact') : value]))
}
