import type pg from 'pg'

import type { Deployment } from './deployment.ts'
import type { Infra, ServerOptions, ServerProcess } from './infra.ts'
import type { Summary } from './stats.ts'

export interface BenchContext {
  quick: boolean
  /** Paired rounds per scenario (baseline, ours, baseline, ours, …). */
  rounds: number
  infra: Infra
  /** The checkout whose server is benchmarked. */
  serverRoot: string
  server: ServerProcess
  /** How to start more instances of the same deployment (same Postgres, Redis and prefix). */
  serverOptions: ServerOptions
  /** The server's database, without an application_name (for pgbench and the bench's own reads). */
  databaseUrl: string
  db: pg.Pool
  deployment: Deployment
  pgbench: string | undefined
  log: (message: string) => void
}

/** One line of the table. `met` is null where there is no target, or in --quick. */
export interface Row {
  scenario: string
  metric: string
  baseline: string
  ours: string
  ratio: string
  target: string
  met: boolean | null
  /** The numbers behind the line, for bench-results.json. */
  data: Record<string, Summary | number | string | null>
}

export interface Scenario {
  name: string
  /** In `--quick` unless it is too slow for CI (it still runs when named). */
  quick: boolean
  run: (context: BenchContext) => Promise<Row[]>
}

/** The application_name of the benchmarked server's connections (statement capture filters on it). */
export const SERVER_APP = 'airi-bench-server'
