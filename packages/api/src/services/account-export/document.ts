import type { ExportTable } from './pages.ts'

/** What a reader of the file can rely on: bump `version` when a table's meaning changes. */
const EXPORT_FORMAT = { format: 'airi-account-export', version: 1 } as const

export interface ExportDocumentInput {
  userId: string
  exportedAt: Date
  /** The tables in document order. */
  tables: ReadonlyArray<readonly [name: string, rows: ExportTable]>
}

/**
 * The export as JSON text, a page of rows per chunk:
 * `{ format, version, exportedAt, userId, tables: { [table]: [row, …] } }`. Only the
 * page being written is in memory, however many rows a table has.
 */
export async function* exportDocument({ userId, exportedAt, tables }: ExportDocumentInput): AsyncGenerator<string> {
  const head = JSON.stringify({ ...EXPORT_FORMAT, exportedAt: exportedAt.toISOString(), userId })
  yield `${head.slice(0, -1)},"tables":{`
  let tableSeparator = ''
  for (const [name, pages] of tables) {
    let text = `${tableSeparator}${JSON.stringify(name)}:[`
    tableSeparator = ','
    let rowSeparator = ''
    for await (const page of pages) {
      for (const row of page) {
        text += rowSeparator + JSON.stringify(row)
        rowSeparator = ','
      }
      yield text
      text = ''
    }
    yield `${text}]`
  }
  yield '}}'
}
