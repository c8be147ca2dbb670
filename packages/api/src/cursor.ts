import { sql, type RawBuilder } from 'kysely'
import { z } from 'zod'

import { ApiError } from './errors.ts'

/**
 * The one keyset-cursor codec. A cursor is the exact sort key of the last row a
 * page showed, as base64url JSON: opaque to callers, checked by a zod schema on
 * the way back in (anything else is 400 `INVALID_CURSOR`, never a 500), and
 * compared in SQL against the same exact value. Timestamps travel as Postgres's
 * own microsecond text (`exactTimestamp`), never through a JS `Date`, which keeps
 * milliseconds only and would skip rows created within one millisecond.
 */
export function createCursorCodec<Key extends z.ZodType>(key: Key, { field = 'cursor' }: { field?: string } = {}) {
  const invalid = () => new ApiError(400, 'INVALID_CURSOR', `${field} is not a cursor this server issued`, { field })
  return {
    encode(value: z.output<Key>): string {
      return Buffer.from(JSON.stringify(value)).toString('base64url')
    },
    decode(cursor: string): z.output<Key> {
      let parsed: unknown
      try {
        parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString())
      }
      catch {
        throw invalid()
      }
      const result = key.safeParse(parsed)
      if (!result.success)
        throw invalid()
      return result.data
    },
  }
}

/** A timestamptz column as UTC text with all six fractional digits (`2025-03-01T12:00:00.123456Z`): its exact value. */
export function exactTimestamp(column: string): RawBuilder<string> {
  return sql<string>`to_char(${sql.ref(column)} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`
}

const EXACT_TIMESTAMP = /^(\d{4})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/

/**
 * What `exactTimestamp` produces, and only a real instant (so Postgres never
 * refuses the cast with a 500). The `Date` here only checks the calendar; the
 * value itself goes to SQL as the text.
 */
const exactTimestampKey = z.string().refine((text) => {
  // One check, not regex().refine(): zod runs every check, so this one must cope with any string.
  const year = EXACT_TIMESTAMP.exec(text)?.[1]
  const date = new Date(`${text.slice(0, 23)}Z`)
  return year !== undefined && Number(year) >= 1970 && !Number.isNaN(date.getTime()) && date.toISOString().slice(0, 23) === text.slice(0, 23)
})

/** The usual key of a newest-first list: the exact creation time, then the row id to break ties. */
export const createdAtIdKey = z.tuple([exactTimestampKey, z.string().regex(/^[\w.:-]{1,100}$/)])

/** `(created_at, id) < (key)`: the rows after `key` in newest-first order, compared exactly. */
export function beforeCreatedAtId([createdAt, id]: z.output<typeof createdAtIdKey>): RawBuilder<boolean> {
  return sql<boolean>`(created_at, id) < (${createdAt}::timestamptz, ${id})`
}

/** The key of a list ordered by a sequence number (exact already: a safe integer). */
export const sequenceKey = z.tuple([z.int().min(0)])
