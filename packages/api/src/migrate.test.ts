import { randomUUID } from 'node:crypto'

import { getMigrations } from 'better-auth/db/migration'
import { sql, type Selectable } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'

import { createDb, type Database, type Db } from '@airi/db'
import { withDatabase } from '@airi/tooling/test/global-setup'
import { createTestDatabase } from '@airi/tooling/test/test-database'

import { createAuthOptions } from './auth/options.ts'
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
    expect(report.applied).toContain('0016_better_auth')

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
  })

  it('keeps better-auth\'s tables and rows on a database where better-auth created them at start', async () => {
    // Before migration 0016, every start ran better-auth's own migrations.
    const { db } = await emptyDatabase()
    await (await getMigrations(schemaOnlyAuthOptions(db))).runMigrations()
    await sql`insert into "user" (id, name, email, "emailVerified") values ('u1', 'Ann', 'ann@example.com', true)`.execute(db)

    const report = await migrateDatabase(db)
    expect(report.applied).toContain('0016_better_auth')
    expect(await db.selectFrom('user').select('email').execute()).toEqual([{ email: 'ann@example.com' }])
  })
})

describe('better-auth\'s tables', () => {
  it('leave better-auth nothing to create or change after our migrations', async () => {
    const { db, drop } = await createTestDatabase()
    cleanups.push(drop)
    const plan = await getMigrations(schemaOnlyAuthOptions(db))
    // A better-auth upgrade or a new plugin that needs more fails here: add a
    // migration with this SQL, and the columns to schema.ts and `authColumns`.
    expect((await plan.compileMigrations()).replace(/;$/, ''), 'better-auth\'s pending SQL').toBe('')
    expect(plan.schemaProblems).toEqual([])
  })

  it('are what better-auth itself creates on an empty database: types, defaults, constraints and indexes', async () => {
    // `getMigrations` above does not see a missing index or a changed type on a table that exists.
    const { db: ours, drop } = await createTestDatabase()
    cleanups.push(drop)
    const { db: theirs } = await emptyDatabase()
    await (await getMigrations(schemaOnlyAuthOptions(theirs))).runMigrations()
    expect(await authCatalogue(ours)).toEqual(await authCatalogue(theirs))
  })

  it('have exactly the columns, and nullability, that packages/db/src/schema.ts types', async () => {
    const { db, drop } = await createTestDatabase()
    cleanups.push(drop)
    const { rows } = await sql<{ table_name: string, column_name: string, is_nullable: 'YES' | 'NO' }>`
      select table_name, column_name, is_nullable from information_schema.columns
      where table_schema = current_schema() and table_name in (${sql.join(Object.keys(authColumns))})`.execute(db)
    const live: Record<string, Record<string, Nullability>> = {}
    for (const row of rows)
      (live[row.table_name] ??= {})[row.column_name] = row.is_nullable === 'YES' ? 'null' : 'not null'
    expect(live).toEqual(authColumns)
  })
})

/** The schema depends only on the plugins, not on secrets or URLs. */
function schemaOnlyAuthOptions(db: Db) {
  return createAuthOptions({ db, settings: { secret: 'schema-only-secret-0123456789abcdef', baseUrl: 'http://localhost' } })
}

/** better-auth's tables as the catalogue describes them, one sorted line per column, constraint and index. */
async function authCatalogue(db: Db): Promise<string[]> {
  const tables = sql.join(Object.keys(authColumns))
  const { rows } = await sql<{ line: string }>`
    select concat_ws(' ', table_name, column_name, data_type, is_nullable, column_default) as line
    from information_schema.columns where table_schema = current_schema() and table_name in (${tables})
    union all
    select concat_ws(' ', conrelid::regclass::text, conname, pg_get_constraintdef(oid))
    from pg_constraint where connamespace = current_schema()::regnamespace and conrelid::regclass::text in (
      select format('%I', t) from unnest(array[${tables}]) as t)
    union all
    select indexdef from pg_indexes where schemaname = current_schema() and tablename in (${tables})
    order by 1`.execute(db)
  return rows.map(row => row.line)
}

type Nullability = 'null' | 'not null'
/** Every column of a table type, with whether the type admits null. */
type ColumnsOf<T> = { [K in keyof T]-?: null extends T[K] ? 'null' : 'not null' }
type AuthTableName = 'user' | 'session' | 'account' | 'verification' | 'jwks' | 'oauthClient' | 'oauthResource'
  | 'oauthClientResource' | 'oauthRefreshToken' | 'oauthAccessToken' | 'oauthConsent' | 'oauthClientAssertion'

// Typecheck holds this to the `Database` types (no column missing or extra, same
// nullability); the test above holds it to the live database.
const authColumns = {
  user: { id: 'not null', name: 'not null', email: 'not null', emailVerified: 'not null', image: 'null', createdAt: 'not null', updatedAt: 'not null' },
  session: { id: 'not null', userId: 'not null', token: 'not null', expiresAt: 'not null', createdAt: 'not null', updatedAt: 'not null', ipAddress: 'null', userAgent: 'null' },
  account: {
    id: 'not null', accountId: 'not null', providerId: 'not null', userId: 'not null', accessToken: 'null', refreshToken: 'null', idToken: 'null',
    accessTokenExpiresAt: 'null', refreshTokenExpiresAt: 'null', scope: 'null', password: 'null', createdAt: 'not null', updatedAt: 'not null',
  },
  verification: { id: 'not null', identifier: 'not null', value: 'not null', expiresAt: 'not null', createdAt: 'not null', updatedAt: 'not null' },
  jwks: { id: 'not null', publicKey: 'not null', privateKey: 'not null', createdAt: 'not null', expiresAt: 'null', alg: 'null', crv: 'null' },
  oauthClient: {
    id: 'not null', clientId: 'not null', clientSecret: 'null', clientDiscoveryId: 'null', disabled: 'null', skipConsent: 'null', enableEndSession: 'null',
    subjectType: 'null', scopes: 'null', clientCredentialsScopes: 'null', userId: 'null', createdAt: 'null', updatedAt: 'null', name: 'null', uri: 'null',
    icon: 'null', contacts: 'null', tos: 'null', policy: 'null', softwareId: 'null', softwareVersion: 'null', softwareStatement: 'null', redirectUris: 'not null',
    postLogoutRedirectUris: 'null', backchannelLogoutUri: 'null', backchannelLogoutSessionRequired: 'null', tokenEndpointAuthMethod: 'null', applicationType: 'null',
    jwks: 'null', jwksUri: 'null', grantTypes: 'null', responseTypes: 'null', requirePKCE: 'null', dpopBoundAccessTokens: 'null', referenceId: 'null', metadata: 'null',
  },
  oauthResource: {
    id: 'not null', identifier: 'not null', name: 'not null', accessTokenTtl: 'null', refreshTokenTtl: 'null', signingAlgorithm: 'null', signingKeyId: 'null',
    allowedScopes: 'null', customClaims: 'null', dpopBoundAccessTokensRequired: 'null', disabled: 'null', createdAt: 'null', updatedAt: 'null', policyVersion: 'null', metadata: 'null',
  },
  oauthClientResource: { id: 'not null', clientId: 'not null', resourceId: 'not null', metadata: 'null', createdAt: 'null' },
  oauthRefreshToken: {
    id: 'not null', token: 'not null', clientId: 'not null', sessionId: 'null', userId: 'not null', referenceId: 'null', authorizationCodeId: 'null', resources: 'null',
    requestedUserInfoClaims: 'null', expiresAt: 'not null', createdAt: 'not null', revoked: 'null', rotatedAt: 'null', rotationReplayResponse: 'null',
    rotationReplayExpiresAt: 'null', authTime: 'null', confirmation: 'null', scopes: 'not null',
  },
  oauthAccessToken: {
    id: 'not null', token: 'not null', clientId: 'not null', sessionId: 'null', userId: 'null', referenceId: 'null', authorizationCodeId: 'null', resources: 'null',
    requestedUserInfoClaims: 'null', refreshId: 'null', expiresAt: 'not null', createdAt: 'not null', revoked: 'null', confirmation: 'null', scopes: 'not null',
  },
  oauthConsent: {
    id: 'not null', clientId: 'not null', userId: 'null', referenceId: 'null', resources: 'null', requestedUserInfoClaims: 'null', scopes: 'not null',
    createdAt: 'not null', updatedAt: 'not null',
  },
  oauthClientAssertion: { id: 'not null', expiresAt: 'not null' },
} satisfies { [T in AuthTableName]: ColumnsOf<Selectable<Database[T]>> }
