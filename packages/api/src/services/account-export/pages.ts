/** One row of a table as the export shows it: every column, secrets replaced by REDACTED. */
type ExportRow = object

/** One table's rows for one user, a page at a time; nothing is read until the document reaches it. */
export type ExportTable = AsyncIterable<readonly ExportRow[]>

/** A user's rows of the tables one service owns, by table name. */
export type ExportTables = Record<string, ExportTable>

/** Rows per read: a page is all the export holds of a table at once. */
const EXPORT_PAGE_SIZE = 1000

/** What a secret's value is replaced by. */
export const REDACTED = '[redacted]'

/**
 * A table read by keyset: `readPage(after, limit)` reads the `limit` rows that
 * follow `after` (the last row of the page before, undefined for the first) in a
 * stable order; reading stops at the first short page.
 */
export async function* keysetPages<Row>(readPage: (after: Row | undefined, limit: number) => Promise<Row[]>, limit = EXPORT_PAGE_SIZE): AsyncGenerator<Row[]> {
  let after: Row | undefined
  for (;;) {
    const rows = await readPage(after, limit)
    if (rows.length > 0)
      yield rows
    if (rows.length < limit)
      return
    after = rows.at(-1)
  }
}

/** `keysetPages` in the order of a text `id` column: `readPage(afterId, limit)`. */
export function pagesById<Row extends { id: string }>(readPage: (afterId: string | undefined, limit: number) => Promise<Row[]>, limit = EXPORT_PAGE_SIZE): AsyncGenerator<Row[]> {
  return keysetPages<Row>((after, size) => readPage(after?.id, size), limit)
}

/** A table where the user has a row or a few (a profile, a balance), read at once. */
export async function* singlePage<Row>(read: () => Promise<Row[]>): AsyncGenerator<Row[]> {
  const rows = await read()
  if (rows.length > 0)
    yield rows
}

/** The pages of `child(parent)` for every parent, parents read a page at a time. */
export async function* pagesPerParent<Parent, Row>(parents: AsyncIterable<readonly Parent[]>, child: (parent: Parent) => AsyncIterable<readonly Row[]>): AsyncGenerator<readonly Row[]> {
  for await (const page of parents) {
    for (const parent of page)
      yield* child(parent)
  }
}

/** `row` with every one of `columns` that holds a value replaced by REDACTED; null stays null, since whether it is set is no secret. */
export function redactColumns<Row extends object>(row: Row, columns: readonly (keyof Row)[]): Row {
  const copy = { ...row }
  for (const column of columns) {
    if (copy[column] !== null && copy[column] !== undefined)
      (copy as Record<keyof Row, unknown>)[column] = REDACTED
  }
  return copy
}
