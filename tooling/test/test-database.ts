import { randomUUID } from 'node:crypto'

import pg from 'pg'
import { inject } from 'vitest'

import { createDb, type Db } from '@airi/db'

import { TEMPLATE_DATABASE, withDatabase } from './global-setup.ts'

export interface TestDatabase {
  url: string
  db: Db
  /** Closes `db` and drops the database. */
  drop: () => Promise<void>
}

/** A fresh, migrated database of this test file's own, cloned from the run's template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('postgresAdminUrl')
  const name = `airi_test_${randomUUID().replaceAll('-', '')}`
  await withAdmin(adminUrl, admin => admin.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE_DATABASE}`))
  const url = withDatabase(adminUrl, name)
  const db = createDb({ connectionString: url })
  return {
    url,
    db,
    async drop() {
      await db.destroy()
      await withAdmin(adminUrl, admin => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
    },
  }
}

/** A Redis key prefix of this test file's own, so files can share one redis-server. */
export function testRedisPrefix(): string {
  return `test:${randomUUID()}:`
}

async function withAdmin<T>(adminUrl: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    // Cloning a template fails while another clone of it is running; retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        return await run(client)
      }
      catch (error) {
        if (attempt >= 20 || !String((error as Error).message).includes('being accessed by other users'))
          throw error
        await new Promise(resolve => setTimeout(resolve, 100 + Math.random() * 200))
      }
    }
  }
  finally {
    await client.end()
  }
}
