import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { z } from 'zod'

import type { Env } from '../env.ts'
import { embeddedDataDir } from '../runtime.ts'


/** `<dataDir>/server.json`: how `pnpm airi` reaches the server that holds the embedded database. */
const serverFileSchema = z.object({ pid: z.number().int().positive(), url: z.url(), token: z.string().min(32) })
type ServerFile = z.infer<typeof serverFileSchema>

const serverFilePath = (dataDir: string) => join(dataDir, 'server.json')

/** Where `pnpm airi` runs its command. */
export type Target =
  /** DATABASE_URL; `redis`: running servers hear of config changes at once. */
  | { kind: 'database', url: string, redis: boolean }
  /** The embedded database under `dataDir`, started by the CLI for the command. */
  | { kind: 'embedded', dataDir: string }
  /** A server holds the embedded database: the command is sent to it. */
  | { kind: 'server', dataDir: string, server: ServerFile }

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  }
  catch (error) {
    // The process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** The server named by `<dataDir>/server.json`, unless the file is missing, malformed or left by a process that is gone. */
async function runningServer(dataDir: string): Promise<ServerFile | undefined> {
  const text = await readFile(serverFilePath(dataDir), 'utf8').catch(() => undefined)
  if (text === undefined)
    return undefined
  let parsed: ReturnType<typeof serverFileSchema.safeParse>
  try {
    parsed = serverFileSchema.safeParse(JSON.parse(text))
  }
  catch {
    return undefined
  }
  return parsed.success && isAlive(parsed.data.pid) ? parsed.data : undefined
}

export async function findTarget(env: Pick<Env, 'DATABASE_URL' | 'REDIS_URL' | 'DATA_DIR'>): Promise<Target> {
  if (env.DATABASE_URL)
    return { kind: 'database', url: env.DATABASE_URL, redis: env.REDIS_URL !== undefined }
  const dataDir = embeddedDataDir(env)
  const server = await runningServer(dataDir)
  return server ? { kind: 'server', dataDir, server } : { kind: 'embedded', dataDir }
}

/** A database URL as it may be printed: without user, password or query. */
export function printableDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url)
    return `${parsed.protocol}//${parsed.hostname}${parsed.port ? `:${parsed.port}` : ''}${parsed.pathname}`
  }
  catch {
    return 'DATABASE_URL'
  }
}

export interface ServerHandoff {
  /** The bearer token POST /api/v1/operator accepts. */
  token: string
  /** Writes server.json (mode 0600) once the server listens. */
  publish: (listening: { address: string, port: number }) => Promise<void>
  /** Deletes it, first thing at shutdown. */
  withdraw: () => Promise<void>
}

/**
 * The server's side of `pnpm airi` on the embedded default (no DATABASE_URL, not
 * production): only one process can hold that database, so the CLI sends its
 * commands to the server instead, with the token it reads from server.json.
 */
export function serverHandoff(env: Pick<Env, 'DATABASE_URL' | 'DATA_DIR' | 'NODE_ENV'>): ServerHandoff | undefined {
  if (env.DATABASE_URL || env.NODE_ENV === 'production')
    return undefined
  const dataDir = embeddedDataDir(env)
  const path = serverFilePath(dataDir)
  const token = randomBytes(32).toString('base64url')
  return {
    token,
    async publish({ address, port }) {
      // Reached over loopback: the address itself when the server listens only there (::1), else 127.0.0.1.
      const host = address === '::1' ? '[::1]' : address.startsWith('127.') ? address : '127.0.0.1'
      const file: ServerFile = { pid: process.pid, url: `http://${host}:${port}`, token }
      await mkdir(dataDir, { recursive: true })
      // Written beside and renamed, so a reader never sees half a file, and created 0600 whatever was there before.
      const temporary = `${path}.${process.pid}.tmp`
      await writeFile(temporary, `${JSON.stringify(file)}\n`, { mode: 0o600 })
      await rename(temporary, path)
    },
    async withdraw() {
      await rm(path, { force: true })
    },
  }
}
