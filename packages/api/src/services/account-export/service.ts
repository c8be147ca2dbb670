import type { Clock } from '../../clock.ts'
import type { Logger } from '../../logger.ts'
import type { RateLimits } from '../rate-limits.ts'
import { exportDocument } from './document.ts'
import type { ExportTable, ExportTables } from './pages.ts'

/** One service's part of an account export: the user's rows of the tables it owns. */
interface UserExportSource {
  /** Who holds these tables, as logs name it. */
  name: string
  /** The user's rows by table; each table is read only when the document reaches it. */
  tables: (userId: string) => ExportTables
}

/** One export under way: a file name and the document, read lazily as the client takes it. */
interface AccountExportDownload {
  filename: string
  chunks: AsyncGenerator<string>
}

export interface AccountExportDeps {
  rateLimits: Pick<RateLimits, 'hit'>
  logger: Logger
  clock: Clock
}

export type AccountExport = ReturnType<typeof createAccountExport>

/**
 * Account export (SPEC §4.14): every service that holds user data registers the
 * tables it owns, as account deletion's handlers do, and the export writes them
 * one after another into one JSON document. It reads no table itself.
 */
export function createAccountExport({ rateLimits, logger, clock }: AccountExportDeps) {
  const sources: UserExportSource[] = []

  /** Every registered table of `userId`, in registration order; a table two sources claim is a wiring mistake. */
  function tablesOf(userId: string): Array<readonly [string, ExportTable]> {
    const tables = new Map<string, ExportTable>()
    for (const source of sources) {
      for (const [name, rows] of Object.entries(source.tables(userId))) {
        if (tables.has(name))
          throw new Error(`account export: table ${name} is exported twice (again by ${source.name})`)
        tables.set(name, rows)
      }
    }
    return [...tables]
  }

  async function* logged(userId: string, chunks: AsyncGenerator<string>): AsyncGenerator<string> {
    const started = clock.now()
    let bytes = 0
    let complete = false
    try {
      for await (const chunk of chunks) {
        bytes += Buffer.byteLength(chunk)
        yield chunk
      }
      complete = true
    }
    catch (error) {
      // The headers are gone already: the client sees a cut-off document, which does not parse.
      logger.error({ err: error, userId, bytes }, 'account export failed mid-way')
      throw error
    }
    finally {
      logger.info({ userId, bytes, complete, durationMs: clock.now() - started }, complete ? 'account export sent' : 'account export ended early')
    }
  }

  return {
    register(source: UserExportSource): void {
      if (sources.some(existing => existing.name === source.name))
        throw new Error(`account export source ${source.name} is already registered`)
      sources.push(source)
    },

    /**
     * Counts one export against EXPORT_RATE_LIMIT_PER_HOUR (429 past it) and returns
     * the document, not yet read: its tables are read a page at a time as it is consumed.
     */
    async open(userId: string): Promise<AccountExportDownload> {
      await rateLimits.hit('export', userId)
      const exportedAt = new Date(clock.now())
      const tables = tablesOf(userId)
      return {
        filename: `airi-export-${exportedAt.toISOString().slice(0, 10)}.json`,
        chunks: logged(userId, exportDocument({ userId, exportedAt, tables })),
      }
    },
  }
}
