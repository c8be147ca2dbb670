import type pg from 'pg'

import type { DebitWorker } from './debit.ts'
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
  /**
   * Processes the selected scenarios need besides the first server, started side
   * by side once the deployment is set up and settled before the first scenario
   * runs (so no start-up competes with a measurement). The scenario that uses one
   * awaits it (a failed start fails that scenario only) and stops it when done.
   */
  prestarted: Prestarted
  log: (message: string) => void
}

export interface Prestarted {
  /** fanout's second instance. */
  fanout?: Promise<ServerProcess>
  /** idle's instance: never sent a request before the scenario. */
  idle?: Promise<ServerProcess>
  debit?: Promise<DebitWorker>
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

/**
 * The longest any single request, message or socket of the bench may take: a
 * stalled server fails the scenario instead of hanging the run. A deadline, not a
 * measurement (a loaded machine is far below it).
 */
export const REQUEST_DEADLINE_MS = 60_000
