import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'
import { mkdtemp, chmod, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import pg from 'pg'

import { findFreePort, startEmbeddedPostgres, type EmbeddedPostgresHandle } from '@airi/db'

import { startRedisServer, type RedisServerHandle } from '../test/redis-server.ts'

import { collectGarbage } from './inspector.ts'

/** Everything the bench starts is stopped through here: at the end, on failure and on Ctrl-C. */
const cleanups: Array<() => Promise<unknown>> = []
const children = new Set<ChildProcess>()

export function onCleanup(cleanup: () => Promise<unknown>): void {
  cleanups.push(cleanup)
}

export async function cleanupAll(): Promise<void> {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop()!
    await cleanup().catch((error: unknown) => console.error(`cleanup failed: ${(error as Error).message}`))
  }
}

// Last resort if the bench dies without running its cleanups: no child outlives it.
process.on('exit', () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid)
      killTree(child, 'SIGKILL')
  }
})

function killTree(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    // Children are spawned detached (their own process group), so pnpm's grandchildren go too.
    process.kill(-child.pid!, signal)
  }
  catch {
    child.kill(signal)
  }
}

/** Spawns a tracked child in its own process group; `stop` sends SIGTERM, then SIGKILL after `graceMs`. */
export function spawnTracked(command: string, args: string[], options: { cwd: string, env: NodeJS.ProcessEnv, logFile?: string, ipc?: boolean }): { child: ChildProcess, stop: (graceMs?: number) => Promise<void> } {
  const fd = options.logFile ? openSync(options.logFile, 'a') : 'ignore'
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env,
    detached: true,
    stdio: ['ignore', options.ipc ? 'pipe' : fd, fd, ...(options.ipc ? ['ipc' as const] : [])],
  })
  if (typeof fd === 'number')
    closeSync(fd)
  children.add(child)
  const exited = new Promise<void>(resolveExit => child.once('exit', () => resolveExit()))
  exited.then(() => children.delete(child), () => {})
  return {
    child,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null)
        return
      killTree(child, 'SIGTERM')
      const timer = setTimeout(() => killTree(child, 'SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Polls until `condition` holds, failing with `what` after `timeoutMs` (never a fixed wait). */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

export interface LoggedStatement {
  pid: number
  app: string
  sql: string
}

/**
 * The bench's own Postgres cluster (the embedded one the tests use). Statement
 * logging can be switched on for a window; the log lines come back through
 * `onLog` and are parsed into statements with their parameters filled in.
 */
interface BenchPostgres {
  handle: EmbeddedPostgresHandle
  adminUrl: string
  /** A database of this name on the cluster, created when missing. */
  databaseUrl: (name: string, applicationName?: string) => Promise<string>
  /** Runs `work` with every statement logged; returns what `app` (application_name) sent meanwhile. */
  capture: (work: () => Promise<void>) => Promise<LoggedStatement[]>
  query: <T extends pg.QueryResultRow>(sql: string, params?: unknown[]) => Promise<T[]>
}

const PREFIX = /^@@(\d+)\|([^@]*)@@ (\w+):\s+(.*)$/

async function startBenchPostgres(root: string): Promise<BenchPostgres> {
  let recording = false
  let pending = ''
  const lines: string[] = []
  const handle = await startEmbeddedPostgres({
    dataDir: join(root, 'pg'),
    database: 'postgres',
    onLog: (message) => {
      if (!recording)
        return
      pending += message
      const parts = pending.split('\n')
      pending = parts.pop()!
      lines.push(...parts)
    },
  })
  onCleanup(() => handle.stop())
  const admin = new pg.Pool({ connectionString: handle.adminUrl, max: 2, application_name: 'airi-bench' })
  admin.on('error', () => {})
  onCleanup(() => admin.end())
  const query = async <T extends pg.QueryResultRow>(sql: string, params?: unknown[]) => (await admin.query<T>(sql, params)).rows

  // A prefix the parser can split on: pid and application_name of every line.
  await query(`ALTER SYSTEM SET log_line_prefix = '@@%p|%a@@ '`)
  await query(`SELECT pg_reload_conf()`)

  return {
    handle,
    adminUrl: handle.adminUrl,
    async databaseUrl(name, applicationName) {
      const exists = await query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
      if (exists.length === 0)
        await query(`CREATE DATABASE "${name}"`)
      const url = new URL(handle.adminUrl)
      url.pathname = `/${name}`
      if (applicationName)
        url.searchParams.set('application_name', applicationName)
      return url.toString()
    },
    async capture(work) {
      lines.length = 0
      pending = ''
      recording = true
      await query(`ALTER SYSTEM SET log_statement = 'all'`)
      await query(`SELECT pg_reload_conf()`)
      // Backends pick the reload up between statements: wait until ours logs.
      await until(async () => {
        await query(`SELECT 'bench-log-probe'`)
        return lines.some(line => line.includes('bench-log-probe'))
      }, 'statement logging to start', 20_000)
      lines.length = 0
      try {
        await work()
      }
      finally {
        // The end marker goes out while logging is still on: after the reset it may
        // not be logged at all, and waiting for it cost the full timeout.
        await query(`SELECT 'bench-log-end'`)
        await until(() => lines.some(line => line.includes('bench-log-end')), 'the statement log to catch up', 20_000).catch(() => {})
        recording = false
        await query(`ALTER SYSTEM RESET log_statement`)
        await query(`SELECT pg_reload_conf()`)
      }
      return parseStatementLog(lines)
    },
    query,
  }
}

/** Log lines (prefix `@@pid|app@@`) → statements with `$n` replaced by the logged parameter literals. */
function parseStatementLog(lines: readonly string[]): LoggedStatement[] {
  interface Entry { pid: number, app: string, level: string, text: string }
  const entries: Entry[] = []
  for (const line of lines) {
    const match = PREFIX.exec(line)
    if (match)
      entries.push({ pid: Number(match[1]), app: match[2]!, level: match[3]!, text: match[4]! })
    else if (entries.length > 0)
      entries.at(-1)!.text += `\n${line}`
  }
  const statements: LoggedStatement[] = []
  const lastByPid = new Map<number, LoggedStatement>()
  for (const entry of entries) {
    if (entry.level === 'LOG') {
      const match = /^(?:statement|execute [^:]*):\s([\s\S]*)$/.exec(entry.text)
      if (!match)
        continue
      const statement = { pid: entry.pid, app: entry.app, sql: match[1]!.trim() }
      statements.push(statement)
      lastByPid.set(entry.pid, statement)
    }
    else if (entry.level === 'DETAIL' && /^parameters:/i.test(entry.text)) {
      const statement = lastByPid.get(entry.pid)
      if (!statement)
        continue
      const values = new Map<string, string>()
      for (const match of entry.text.matchAll(/\$(\d+) = (NULL|'(?:[^']|'')*')/g))
        values.set(match[1]!, match[2]!)
      statement.sql = statement.sql.replace(/\$(\d+)/g, (whole, index: string) => values.get(index) ?? whole)
    }
  }
  return statements.filter(statement => !statement.sql.includes('bench-log-'))
}

export interface Fakes {
  openaiUrl: string
  ttsUrl: string
  /** OpenAI-compatible transcription base URL (`…/v1`). */
  sttUrl: string
  /** The Realtime transcription fake's socket URL. */
  realtimeSttUrl: string
  /** Audio that closes one utterance there (its simulated voice-activity detection). */
  realtimeSttUtteranceMs: number
}

/** The fake upstreams in a process of their own, so neither the server nor the load generator shares their loop. */
async function startFakes(root: string): Promise<Fakes> {
  const file = resolve(import.meta.dirname, 'fakes-process.ts')
  const { child, stop } = spawnTracked(process.execPath, ['--import', 'tsx', file], { cwd: repoRoot(), env: process.env, ipc: true, logFile: join(root, 'fakes.log') })
  onCleanup(() => stop())
  const message = await new Promise<Fakes>((resolveMessage, reject) => {
    child.once('message', value => resolveMessage(value as Fakes))
    child.once('exit', code => reject(new Error(`the fakes process exited (${code}); see ${join(root, 'fakes.log')}`)))
  })
  child.disconnect()
  return message
}

/** A child process that answers one JSON message over IPC (bare servers, the debit worker). */
export async function startHelper<T>(script: string, args: string[], root: string, env: NodeJS.ProcessEnv = {}): Promise<{ info: T, stop: () => Promise<void> }> {
  const file = resolve(import.meta.dirname, script)
  const name = script.replace(/\W+/g, '-')
  const { child, stop } = spawnTracked(process.execPath, ['--import', 'tsx', file, ...args], { cwd: repoRoot(), env: { ...process.env, ...env }, ipc: true, logFile: join(root, `${name}.log`) })
  const info = await new Promise<T>((resolveMessage, reject) => {
    child.once('message', value => resolveMessage(value as T))
    child.once('exit', code => reject(new Error(`${script} exited (${code}); see ${join(root, `${name}.log`)}`)))
  })
  child.disconnect()
  return { info, stop }
}

export function repoRoot(): string {
  return resolve(import.meta.dirname, '../..')
}

export interface ServerProcess {
  url: string
  pid: number
  /** Spawn to the first 200 from /readyz. */
  startSeconds: number
  /** Resident set size, from /proc (bytes). */
  rss: () => number
  /** A full garbage collection over the inspector; only for a server started with `inspect`. */
  collectGarbage?: () => Promise<void>
  stop: () => Promise<void>
}

export interface ServerOptions {
  /** The checkout whose apps/server is started (this one by default). */
  serverRoot: string
  databaseUrl: string
  redisUrl: string
  redisPrefix: string
  dataDir: string
  logFile: string
  env?: Record<string, string>
  /** Open Node's inspector on a free loopback port, so the bench can force a GC (`collectGarbage`). */
  inspect?: boolean
}

export const BENCH_AUTH_SECRET = 'bench-secret-0123456789abcdefghijklmnopqrstuvwxyz'
/** 32 bytes as hex: the bench deployment's LLM_ROUTER_MASTER_KEY. */
const BENCH_MASTER_KEY = '07'.repeat(32)
export const BENCH_ADMIN_EMAIL = 'bench-admin@example.com'

/** The environment the server runs with in the bench (also used by `pnpm start` in cold-start). */
export function serverEnv(options: ServerOptions, port: number): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _drop, ...inherited } = process.env
  return {
    ...inherited,
    NODE_ENV: 'development',
    HOST: '127.0.0.1',
    PORT: String(port),
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
    DATA_DIR: options.dataDir,
    DATABASE_URL: options.databaseUrl,
    REDIS_URL: options.redisUrl,
    REDIS_KEY_PREFIX: options.redisPrefix,
    BETTER_AUTH_SECRET: BENCH_AUTH_SECRET,
    LLM_ROUTER_MASTER_KEY: BENCH_MASTER_KEY,
    API_SERVER_URL: `http://127.0.0.1:${port}`,
    ADMIN_EMAILS: BENCH_ADMIN_EMAIL,
    AUTH_RATE_LIMIT_PER_MINUTE: '1000000',
    // The fan-out puts 1 000 sockets of a few users on one loopback address.
    WS_MAX_CONNECTIONS_PER_USER: '64',
    WS_MAX_CONNECTIONS_PER_IP: '10000',
    SPEECH_WS_MAX_CONNECTIONS_PER_USER: '16',
    // Per-user limits would turn load into 429s: the bench measures the path, not the limiter's refusals.
    LLM_RATE_LIMIT_PER_MINUTE: '1000000000',
    TTS_RATE_LIMIT_PER_MINUTE: '1000000000',
    STT_RATE_LIMIT_PER_MINUTE: '1000000000',
    ...options.env,
  }
}

/**
 * What the checkout's launcher would do on the first start besides starting the
 * server, done once and beside the bench's own start-up (Postgres, Redis, the
 * fakes) instead of inside the first server's start: launchers that build
 * stage-web when it is stale (`apps/stage-web/scripts/build-if-stale.mjs`) get it
 * built here. A stale client was most of the first start's time (a Vite build;
 * tens of seconds on a loaded machine). Checkouts whose launcher does not build it
 * (ef9cbb4) are left alone. Returns the seconds it took.
 */
export async function prepareServerCheckout(serverRoot: string, root: string): Promise<number> {
  const script = join(serverRoot, 'apps/stage-web/scripts/build-if-stale.mjs')
  const launcher = join(serverRoot, 'apps/server/launch.js')
  if (!existsSync(script) || !existsSync(launcher) || !readFileSync(launcher, 'utf8').includes('build-if-stale'))
    return 0
  const started = Date.now()
  const logFile = join(root, 'stage-web-build.log')
  const { child } = spawnTracked(process.execPath, [script], { cwd: serverRoot, env: process.env, logFile })
  const code = await new Promise<number | null>(resolveExit => child.once('exit', resolveExit))
  if (code !== 0)
    throw new Error(`building stage-web failed (${code}); see ${logFile}`)
  return (Date.now() - started) / 1000
}

/**
 * Node flags for the server process from BENCH_SERVER_NODE_ARGS, e.g.
 * `--cpu-prof --cpu-prof-dir=/tmp/prof` (not allowed in NODE_OPTIONS): the
 * profile is written when the server exits at the end of the run.
 */
function serverNodeArgs(): string[] {
  return process.env.BENCH_SERVER_NODE_ARGS?.split(/\s+/).filter(Boolean) ?? []
}

/** `node apps/server/launch.js main` as its own process, ready once /readyz answers 200. */
export async function startServer(options: ServerOptions): Promise<ServerProcess> {
  const port = await findFreePort()
  const inspectorPort = options.inspect ? await findFreePort() : undefined
  const inspect = inspectorPort === undefined ? [] : [`--inspect=127.0.0.1:${inspectorPort}`]
  const spawned = Date.now()
  const { child, stop } = spawnTracked(process.execPath, [...serverNodeArgs(), ...inspect, 'apps/server/launch.js', 'main'], {
    cwd: options.serverRoot,
    env: serverEnv(options, port),
    logFile: options.logFile,
  })
  onCleanup(() => stop())
  const url = `http://127.0.0.1:${port}`
  let exited = false
  child.once('exit', () => (exited = true))
  await until(async () => {
    if (exited)
      throw new Error(`the server exited during start; see ${options.logFile}`)
    return ready(url)
  }, `the server at ${url} to be ready`, 180_000)
  return {
    url,
    pid: child.pid!,
    startSeconds: (Date.now() - spawned) / 1000,
    rss: () => processRss(child.pid!),
    ...(inspectorPort === undefined ? {} : { collectGarbage: () => collectGarbage(inspectorPort) }),
    stop,
  }
}

export async function ready(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/readyz`)
    await response.arrayBuffer()
    return response.status === 200
  }
  catch {
    return false
  }
}

function processRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1]
  return kb ? Number(kb) * 1024 : Number.NaN
}

export interface Infra {
  root: string
  postgres: BenchPostgres
  redis: RedisServerHandle
  fakes: Fakes
}

/** The bench's temporary directory (logs, the Postgres cluster), removed at the end. */
export async function createWorkDir(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'airi-bench-'))
  // Postgres runs as its own user when we are root, and must reach its data dir.
  await chmod(root, 0o755)
  onCleanup(() => rm(root, { recursive: true, force: true }))
  return root
}

export async function startInfra(root: string): Promise<Infra> {
  const [postgres, redis, fakes] = await Promise.all([
    startBenchPostgres(root),
    findFreePort().then(port => startRedisServer(port)),
    startFakes(root),
  ])
  onCleanup(() => redis.stop())
  return { root, postgres, redis, fakes }
}
