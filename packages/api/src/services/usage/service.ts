import type { Db, LlmCallKind, MeteredUsageKind } from '@airi/db'

import { createCursorCodec, createdAtIdKey } from '../../cursor.ts'
import { ApiError } from '../../errors.ts'
import type { LlmUsageReads } from '../llm-gateway/index.ts'
import { meteredCallsPage, meteredCallsSummary, meteredUsageExportTables } from './metered.ts'
import type { UsageCallsInput, UsageKind, UsageSummaryInput } from './schema.ts'

/** One metered call as `usage.calls` lists it; the unit fields its kind does not have are absent. */
export interface UsageCall {
  id: string
  at: Date
  kind: UsageKind
  model: string
  /** `completed`, `cancelled`, `failed`, or `pending` (an LLM call not settled yet). */
  status: 'completed' | 'cancelled' | 'failed' | 'pending'
  inputTokens?: number
  outputTokens?: number
  cachedTokens?: number
  characters?: number
  seconds?: number
  firstTokenMs?: number
  durationMs: number
  /** The whole Flux this call moved out of the ledger. */
  flux: number
  /** The personal API key that made the call (a revoked one too); absent for calls made with a session. */
  apiKey?: { id: string, name: string, prefix: string }
}

export interface UsageSummaryRow {
  /** A UTC day (`YYYY-MM-DD`) or a model alias. */
  key: string
  calls: number
  flux: number
  inputTokens: number
  outputTokens: number
  characters: number
  seconds: number
  /** The row's Flux by model (a day's split, for a chart; a model row has only itself). */
  fluxByModel: Record<string, number>
}

const cursor = createCursorCodec(createdAtIdKey)
const DAY_MS = 86_400_000
/** The longest `usage.summary` range, in days. */
const MAX_SUMMARY_DAYS = 366

const LLM_KINDS: readonly UsageKind[] = ['llm', 'reply', 'embedding', 'memory']

/** An LLM call's status: its HTTP status read as completed (2xx), cancelled (499, the client left) or failed. */
function llmStatus(state: string, status: number | null): UsageCall['status'] {
  if (state === 'pending' || status === null)
    return 'pending'
  return status >= 200 && status < 300 ? 'completed' : status === 499 ? 'cancelled' : 'failed'
}

type LlmRow = Awaited<ReturnType<LlmUsageReads['page']>>[number]
type MeteredRow = Awaited<ReturnType<ReturnType<typeof meteredCallsPage>['execute']>>[number]
type Keyed = { key: string, id: string, call: UsageCall, apiKeyId?: string | null }

function fromLlm(row: LlmRow): Keyed {
  const call: UsageCall = {
    id: row.id,
    at: row.created_at,
    kind: row.kind,
    model: row.model,
    status: llmStatus(row.state, row.status),
    ...(row.prompt_tokens !== null ? { inputTokens: row.prompt_tokens } : {}),
    ...(row.completion_tokens !== null ? { outputTokens: row.completion_tokens } : {}),
    ...(row.cached_tokens !== null ? { cachedTokens: row.cached_tokens } : {}),
    ...(row.first_token_ms !== null ? { firstTokenMs: row.first_token_ms } : {}),
    durationMs: row.duration_ms ?? 0,
    flux: Number(row.flux_consumed),
  }
  return { key: row.key, id: row.id, call, apiKeyId: row.api_key_id }
}

function fromMetered(row: MeteredRow): Keyed {
  const call: UsageCall = {
    id: row.id,
    at: row.created_at,
    kind: row.kind,
    model: row.model,
    status: row.status,
    ...(row.characters !== null ? { characters: row.characters } : {}),
    ...(row.audio_ms !== null ? { seconds: row.audio_ms / 1000 } : {}),
    durationMs: row.duration_ms,
    flux: Number(row.flux),
  }
  return { key: row.key, id: row.id, call, apiKeyId: row.api_key_id }
}

/** Newest first, as Postgres orders `(created_at, id) DESC`: the exact time's text sorts as the time does. */
const newestFirst = (a: Keyed, b: Keyed) => (a.key === b.key ? (a.id < b.id ? 1 : -1) : (a.key < b.key ? 1 : -1))

/** `[from 00:00Z, the day after to 00:00Z)`; 400 naming the field when the range is backwards or too long. */
function summaryRange({ from, to }: Pick<UsageSummaryInput, 'from' | 'to'>): { from: Date, to: Date } {
  const start = new Date(`${from}T00:00:00Z`)
  const end = new Date(new Date(`${to}T00:00:00Z`).getTime() + DAY_MS)
  if (start >= end)
    throw new ApiError(400, 'INVALID_RANGE', 'from must not be after to', { field: 'from' })
  if ((end.getTime() - start.getTime()) / DAY_MS > MAX_SUMMARY_DAYS)
    throw new ApiError(400, 'INVALID_RANGE', `to: the range is at most ${MAX_SUMMARY_DAYS} days`, { field: 'to', maxDays: MAX_SUMMARY_DAYS })
  return { from: start, to: end }
}

/**
 * The usage report (SPEC §4.14): every metered call of a user, LLM calls from the
 * gateway's request log (through `llmCalls`) and speech calls from `metered_usage`,
 * which this service owns. A page merges one keyset-limited read of each table.
 */
export function createUsageService({ db, llmCalls, keysOf }: {
  db: Db
  llmCalls: LlmUsageReads
  /** Names of the user's API keys by id (the api-keys service's); without it calls show no key. */
  keysOf?: (userId: string, ids: string[]) => Promise<Map<string, { id: string, name: string, prefix: string }>>
}) {
  return {
    async calls(userId: string, { cursor: token, limit = 50, kind }: UsageCallsInput): Promise<{ items: UsageCall[], nextCursor: string | null }> {
      const after = token ? cursor.decode(token) : undefined
      const wantsLlm = kind === undefined || LLM_KINDS.includes(kind)
      const wantsMetered = kind === undefined || !LLM_KINDS.includes(kind)
      // One row past the page from each table says whether another page follows.
      const [llmRows, meteredRows] = await Promise.all([
        wantsLlm ? llmCalls.page(userId, { after, limit: limit + 1, kinds: kind ? [kind as LlmCallKind] : undefined }) : [],
        wantsMetered ? meteredCallsPage(db, userId, { after, limit: limit + 1, kinds: kind ? [kind as MeteredUsageKind] : undefined }).execute() : [],
      ])
      const merged = [...llmRows.map(fromLlm), ...meteredRows.map(fromMetered)].sort(newestFirst)
      const page = merged.slice(0, limit)
      const last = page.at(-1)
      const keyIds = [...new Set(page.flatMap(row => row.apiKeyId ? [row.apiKeyId] : []))]
      const keys = keyIds.length > 0 && keysOf ? await keysOf(userId, keyIds) : new Map()
      const items = page.map(row => (row.apiKeyId && keys.has(row.apiKeyId) ? { ...row.call, apiKey: keys.get(row.apiKeyId)! } : row.call))
      return { items, nextCursor: merged.length > limit && last ? cursor.encode([last.key, last.id]) : null }
    },

    async summary(userId: string, input: UsageSummaryInput): Promise<{ rows: UsageSummaryRow[] }> {
      const range = { ...summaryRange(input), groupBy: input.groupBy }
      const [llmRows, meteredRows] = await Promise.all([llmCalls.summary(userId, range), meteredCallsSummary(db, userId, range).execute()])
      const rows = new Map<string, UsageSummaryRow>()
      const rowOf = (key: string) => {
        let row = rows.get(key)
        if (!row)
          rows.set(key, row = { key, calls: 0, flux: 0, inputTokens: 0, outputTokens: 0, characters: 0, seconds: 0, fluxByModel: {} })
        return row
      }
      const add = (row: UsageSummaryRow, model: string, calls: string, flux: string) => {
        row.calls += Number(calls)
        row.flux += Number(flux)
        row.fluxByModel[model] = (row.fluxByModel[model] ?? 0) + Number(flux)
      }
      for (const llm of llmRows) {
        const row = rowOf(llm.key)
        add(row, llm.model, llm.calls, llm.flux)
        row.inputTokens += Number(llm.input_tokens)
        row.outputTokens += Number(llm.output_tokens)
      }
      for (const metered of meteredRows) {
        const row = rowOf(metered.key)
        add(row, metered.model, metered.calls, metered.flux)
        row.characters += Number(metered.characters)
        row.seconds += Number(metered.audio_ms) / 1000
      }
      return { rows: [...rows.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)) }
    },

    exportTables: (userId: string) => meteredUsageExportTables(db, userId),
  }
}

export type UsageService = ReturnType<typeof createUsageService>
