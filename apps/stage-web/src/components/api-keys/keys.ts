import { toAiriError } from '@airi/sdk'

import type { client } from '../../client.ts'

// What the API keys screen's parts share (docs/stage-web.md#api-keys): the key as listed,
// the form's draft and its checks (the server's rules, so most mistakes are caught here).

export type ApiKey = Awaited<ReturnType<typeof client.apiKeys.list.query>>[number]
export type CreatedKey = Awaited<ReturnType<typeof client.apiKeys.create.mutate>>
export type CreateInput = Parameters<typeof client.apiKeys.create.mutate>[0]
export type Scope = ApiKey['scopes'][number]
export type Period = NonNullable<ApiKey['budget']>['period']

export const SCOPES: readonly Scope[] = ['llm', 'speech', 'transcription']
export const PERIODS: readonly Period[] = ['day', 'month', 'total']
/** Live keys one person may hold (SPEC §4.17). */
export const KEY_LIMIT = 20
export const MAX_NAME_CHARS = 100
const MAX_BUDGET_FLUX = 1_000_000_000
const MAX_RATE_LIMIT = 10_000
const DAY_MS = 86_400_000

export type Expiry = 'never' | 'days30' | 'days90' | 'date'
export const EXPIRIES: readonly Expiry[] = ['never', 'days30', 'days90', 'date']
const EXPIRY_DAYS = { days30: 30, days90: 90 } as const

/** The form as typed: numbers stay text until checked, so an empty box means "none". */
export interface Draft {
  name: string
  scopes: Scope[]
  budgetFlux: string
  budgetPeriod: Period
  rateLimit: string
  expiry: Expiry
  /** `YYYY-MM-DD` from the date input, when `expiry` is 'date'. */
  expiryDate: string
}

export type Field = 'name' | 'scopes' | 'budget' | 'rateLimit' | 'expiry'

export const emptyDraft = (): Draft => ({ name: '', scopes: ['llm'], budgetFlux: '', budgetPeriod: 'month', rateLimit: '', expiry: 'never', expiryDate: '' })

/** A whole number from a text box within bounds, else null. */
function wholeNumber(text: string, min: number, max: number): number | null {
  if (!/^\d+$/.test(text.trim()))
    return null
  const value = Number(text.trim())
  return value >= min && value <= max ? value : null
}

/** The end of the chosen day where the person is: a key "until 1 June" still works on 1 June. */
function endOfDay(date: string): Date | null {
  const [, year, month, day] = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date) ?? []
  return year ? new Date(Number(year), Number(month) - 1, Number(day), 23, 59, 59, 999) : null
}

/** Today as the date input writes it, for its `min`. */
export function today(now: Date): string {
  const pad = (value: number) => String(value).padStart(2, '0')
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`
}

/** The procedure's input, or the fields that are not right (no input then). */
export function check(draft: Draft, now: Date): { input: CreateInput } | { errors: Field[] } {
  const errors: Field[] = []
  const name = draft.name.trim()
  if (name.length === 0 || name.length > MAX_NAME_CHARS)
    errors.push('name')
  if (draft.scopes.length === 0)
    errors.push('scopes')
  const flux = draft.budgetFlux.trim() === '' ? undefined : wholeNumber(draft.budgetFlux, 1, MAX_BUDGET_FLUX)
  if (flux === null)
    errors.push('budget')
  const rateLimit = draft.rateLimit.trim() === '' ? undefined : wholeNumber(draft.rateLimit, 1, MAX_RATE_LIMIT)
  if (rateLimit === null)
    errors.push('rateLimit')
  let expiresAt: Date | undefined
  if (draft.expiry === 'days30' || draft.expiry === 'days90')
    expiresAt = new Date(now.getTime() + EXPIRY_DAYS[draft.expiry] * DAY_MS)
  else if (draft.expiry === 'date') {
    const end = endOfDay(draft.expiryDate)
    if (!end || end.getTime() <= now.getTime())
      errors.push('expiry')
    else expiresAt = end
  }
  if (errors.length > 0)
    return { errors }
  return {
    input: {
      name,
      scopes: SCOPES.filter(scope => draft.scopes.includes(scope)),
      ...(flux != null && { budget: { flux, period: draft.budgetPeriod } }),
      ...(rateLimit != null && { rateLimitPerMinute: rateLimit }),
      ...(expiresAt && { expiresAt }),
    },
  }
}

/** The form field an input path the server refused belongs to (`budget.flux` → budget). */
function fieldOf(path: string): Field | undefined {
  const top = path.split('.')[0]
  if (top === 'name' || top === 'scopes' || top === 'budget')
    return top
  if (top === 'rateLimitPerMinute')
    return 'rateLimit'
  if (top === 'expiresAt')
    return 'expiry'
  return undefined
}

/**
 * The fields a refused create named: zod's `fieldErrors` by input path, or the one
 * `details.field` of a check the service makes itself (an expiry not in the future).
 */
export function refusedFields(error: unknown): Field[] {
  const data = (error as { data?: { fieldErrors?: Record<string, unknown>, details?: { field?: string } } } | null)?.data
  const paths = [...Object.keys(data?.fieldErrors ?? {}), ...(data?.details?.field ? [data.details.field] : [])]
  return [...new Set(paths.map(fieldOf).filter(field => field !== undefined))]
}

export const isKeyLimit = (error: unknown): boolean => toAiriError(error).code === 'API_KEY_LIMIT'

export const isExpired = (key: Pick<ApiKey, 'expiresAt'>, now: Date): boolean => key.expiresAt !== null && key.expiresAt.getTime() <= now.getTime()

/** The listed form of a key just made: what `list` would say of it. */
export function listed({ key: _secret, ...key }: CreatedKey): ApiKey {
  return key
}
