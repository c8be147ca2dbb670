import { relative } from 'node:path'

import { pino } from 'pino'

import { ApiError, type Logger } from '@airi/api'

import { EnvError, parseEnv, type Env } from '../env.ts'
import { startRuntime } from '../runtime.ts'
import { changesConfig, runCommand } from './commands.ts'
import { CommandFailed } from './errors.ts'
import { cannotReach } from './failures.ts'
import type { CommandRequest } from './program.ts'
import { findTarget, type Target } from './target.ts'

/** How long the CLI waits for a database connection before saying it cannot reach it (DATABASE_CONNECTION_TIMEOUT_MS overrides). */
const CONNECTION_TIMEOUT_MS = 5_000

const say = (line: string) => process.stderr.write(`${line}\n`)

/** The server's environment, quiet unless LOG_LEVEL says otherwise: stdout carries only the command's output. */
function cliEnv(): Env {
  try {
    return parseEnv({
      ...process.env,
      LOG_LEVEL: process.env.LOG_LEVEL || 'warn',
      DATABASE_CONNECTION_TIMEOUT_MS: process.env.DATABASE_CONNECTION_TIMEOUT_MS || String(CONNECTION_TIMEOUT_MS),
    })
  }
  catch (error) {
    if (!(error instanceof EnvError))
      throw error
    say(error.message)
    throw new CommandFailed()
  }
}

async function cliLogger(env: Env): Promise<{ logger: Logger }> {
  // Warnings go to stderr, at a terminal as lines a person reads.
  const destination = process.stderr.isTTY
    ? (await import('pino-pretty')).PinoPretty({ destination: 2, sync: true, colorize: true, ignore: 'pid,hostname' })
    : pino.destination({ dest: 2, sync: true })
  return { logger: pino({ level: env.LOG_LEVEL }, destination) }
}

/** Runs the command on this process's own runtime (DATABASE_URL, or the embedded database it starts). */
async function runHere(env: Env, target: Exclude<Target, { kind: 'server' }>, request: CommandRequest): Promise<unknown> {
  const { logger } = await cliLogger(env)
  const runtime = await startRuntime(env, logger)
  let result: unknown
  try {
    result = await runCommand(runtime.api.services, request.name, request.input)
  }
  finally {
    await runtime.close().catch((error: unknown) => logger.warn({ err: error }, 'closing the database or Redis failed'))
  }
  if (target.kind === 'database' && !target.redis && changesConfig(request.name))
    say('note: REDIS_URL is not set, so running servers see this change within their config cache lifetime (about a minute)')
  if (target.kind === 'database' && !env.LLM_ROUTER_MASTER_KEY && (request.name === 'upstreams.put' || request.name === 'keys.seal'))
    say('note: LLM_ROUTER_MASTER_KEY is not set, so keys were sealed with the development key under DATA_DIR: servers with another master key cannot open them')
  return result
}

/** A server holds the embedded database: it runs the command (plugins/operator.ts). */
async function runOnServer(target: Extract<Target, { kind: 'server' }>, request: CommandRequest): Promise<unknown> {
  const { server } = target
  const where = relative(process.cwd(), target.dataDir)
  say(`a server is running on ${where && !where.startsWith('..') ? where : target.dataDir} (pid ${server.pid}, ${server.url}): sending the command to it`)
  let response: Response
  try {
    response = await fetch(`${server.url}/api/v1/operator`, {
      method: 'POST',
      headers: { 'authorization': `Bearer ${server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: request.name, input: request.input }),
    })
  }
  catch (error) {
    const cause = (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message
    throw new ApiError(503, 'SERVER_UNREACHABLE', `cannot reach the server at ${server.url} (${cause}): is it still starting or stopping? Try again`)
  }
  const body = await response.json().catch(() => undefined) as { result?: unknown, error?: { code: string, message: string, details?: Record<string, unknown> } } | undefined
  if (response.ok && body && 'result' in body)
    return body.result
  throw new ApiError(response.status, body?.error?.code ?? 'SERVER_ERROR', body?.error?.message ?? `the server answered ${response.status}`, body?.error?.details)
}

/** What went wrong, in lines for stderr: the message, and each invalid field as `path: message`. */
function describe(error: unknown, env: Env, target: Target): string[] {
  if (error instanceof ApiError) {
    const issues = (error.details?.issues ?? []) as Array<{ path: PropertyKey[], message: string }>
    return [`error: ${error.message}`, ...issues.map(issue => `  ${issue.path.length > 0 ? issue.path.map(String).join('.') : '(value)'}: ${issue.message}`)]
  }
  const unreachable = cannotReach(error, env, target)
  if (unreachable)
    return [unreachable]
  // Not an expected failure: the stack helps whoever looks into it, on request.
  const message = error instanceof Error ? error.message : String(error)
  return env.LOG_LEVEL === 'debug' || env.LOG_LEVEL === 'trace'
    ? [`error: ${(error as Error).stack ?? message}`]
    : [`error: ${message.split('\n')[0]} (LOG_LEVEL=debug shows where)`]
}

/**
 * Runs one request where the data is (target.ts), prints its result on stdout,
 * and throws `CommandFailed` once it has said on stderr what went wrong.
 */
export async function execute(request: CommandRequest): Promise<void> {
  // Before the environment is checked: production's required variables are beside the point.
  if (request.developmentOnly && process.env.NODE_ENV === 'production') {
    say(`error: ${request.name} is for development: refused with NODE_ENV=production`)
    throw new CommandFailed()
  }
  const env = cliEnv()
  const target = await findTarget(env)
  let result: unknown
  try {
    result = target.kind === 'server' ? await runOnServer(target, request) : await runHere(env, target, request)
  }
  catch (error) {
    for (const line of describe(error, env, target))
      say(line)
    throw new CommandFailed()
  }
  const output = request.json ? JSON.stringify(request.asJson ? request.asJson(result) : result, null, 2) : request.print(result)
  process.stdout.write(`${output}\n`)
  if (request.hint)
    say(request.hint(result))
  if (request.failed?.(result))
    throw new CommandFailed()
}
