import { randomUUID } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'

import { createDb, type Db } from '@airi/db'
import { withDatabase } from '@airi/tooling/test/global-setup'

import { migrateDatabase } from './migrate.ts'

/** Kysely's migration lock id. */
const MIGRATION_LOCK = '3853314791062309107'

const cleanups: Array<() => Promise<unknown>> = []
afterAll(async () => {
  for (const cleanup of cleanups.reverse())
    await cleanup()
})

/** A new, empty database (not cloned from the migrated template), as on a first deployment. */
async function emptyDatabase(): Promise<{ url: string, db: Db }> {
  const adminUrl = inject('postgresAdminUrl')
  const name = `airi_test_empty_${randomUUID().replaceAll('-', '')}`
  const admin = createDb({ connectionString: adminUrl, maxConnections: 1 })
  await sql`create database ${sql.id(name)}`.execute(admin)
  const url = withDatabase(adminUrl, name)
  const db = createDb({ connectionString: url })
  cleanups.push(async () => {
    await db.destroy()
    await sql`drop database if exists ${sql.id(name)} with (force)`.execute(admin)
    await admin.destroy()
  })
  return { url, db }
}

describe('migrateDatabase', () => {
  it('creates every table (ours and better-auth\'s) while holding the migration lock', async () => {
    const { db } = await emptyDatabase()
    // Records, for every DDL statement, whether some session held the migration lock then.
    await sql`create table ddl_log (tag text not null, locked boolean not null)`.execute(db)
    await sql`
      create function log_ddl() returns event_trigger language plpgsql as $$
      begin
        insert into ddl_log values (tg_tag, exists (
          select 1 from pg_locks
          where locktype = 'advisory' and granted and objsubid = 1
            and database = (select oid from pg_database where datname = current_database())
            and ((classid::bigint << 32) | objid::bigint) = ${sql.lit(MIGRATION_LOCK)}::bigint));
      end $$`.execute(db)
    await sql`create event trigger log_ddl on ddl_command_end execute function log_ddl()`.execute(db)

    const report = await migrateDatabase(db)
    expect(report.applied.length).toBeGreaterThan(0)
    expect(report.authTables).toContain('user')

    const { rows } = await sql<{ tag: string, locked: boolean }>`select tag, locked from ddl_log`.execute(db)
    expect(rows.filter(row => row.tag === 'CREATE TABLE').length).toBeGreaterThan(5)
    expect(rows.filter(row => !row.locked)).toEqual([])
  })

  it('two instances migrating one empty database at once both succeed', async () => {
    const { url } = await emptyDatabase()
    const instances = [createDb({ connectionString: url }), createDb({ connectionString: url })]
    cleanups.push(() => Promise.all(instances.map(db => db.destroy())))
    const reports = await Promise.all(instances.map(db => migrateDatabase(db)))
    // One of them did the work; the other found nothing left to do.
    expect(reports.filter(report => report.applied.length > 0)).toHaveLength(1)
    expect(reports.filter(report => report.authTables.length > 0)).toHaveLength(1)
  })
})
