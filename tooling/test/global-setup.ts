import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import type { TestProject } from 'vitest/node'
import pg from 'pg'

import { migrateDatabase } from '@airi/api'
import { createDb, findFreePort, startEmbeddedPostgres } from '@airi/db'

import { startRedisServer } from './redis-server.ts'

export const TEMPLATE_DATABASE = 'airi_test_template'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Connection string of a database this run may CREATE DATABASE from. */
    postgresAdminUrl: string
    redisUrl: string
  }
}

interface Servers {
  postgresAdminUrl: string
  redisUrl: string
  stop: () => Promise<void>
}

// The projects that need the servers (integration, browser, build) each run this
// setup; in one run they share one Postgres and one redis-server, stopped after the last.
const shared = globalThis as { airiTestServers?: { servers: Promise<Servers>, users: number } }

/**
 * Starts PostgreSQL (embedded, or the server DATABASE_URL points at) and
 * redis-server once per run, and migrates a template database that every test
 * file clones (see `test-database.ts`), so files run in parallel.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const entry = shared.airiTestServers ??= { servers: startServers(), users: 0 }
  entry.users++
  const servers = await entry.servers
  project.provide('postgresAdminUrl', servers.postgresAdminUrl)
  project.provide('redisUrl', servers.redisUrl)
  return async () => {
    if (--entry.users > 0)
      return
    shared.airiTestServers = undefined
    await servers.stop()
  }
}

async function startServers(): Promise<Servers> {
  const cleanups: Array<() => Promise<unknown>> = []

  let postgresAdminUrl = process.env.DATABASE_URL
  if (!postgresAdminUrl) {
    const root = await mkdtemp(join(tmpdir(), 'airi-test-'))
    // Postgres runs as its own user when we are root, and must reach its data dir.
    await chmod(root, 0o755)
    const postgres = await startEmbeddedPostgres({ dataDir: join(root, 'pg'), database: 'postgres' })
    postgresAdminUrl = postgres.adminUrl
    cleanups.push(() => rm(root, { recursive: true, force: true }), () => postgres.stop())
  }

  const redis = await startRedisServer(await findFreePort())
  cleanups.push(() => redis.stop())

  const admin = new pg.Client({ connectionString: postgresAdminUrl })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DATABASE}`)
  await admin.query(`CREATE DATABASE ${TEMPLATE_DATABASE}`)
  await admin.end()
  const template = createDb({ connectionString: withDatabase(postgresAdminUrl, TEMPLATE_DATABASE), maxConnections: 1 })
  await migrateDatabase(template)
  await template.destroy()

  return {
    postgresAdminUrl,
    redisUrl: redis.url,
    async stop() {
      for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => {})
    },
  }
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}
