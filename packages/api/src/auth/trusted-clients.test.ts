import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createAuth, type Auth } from './auth.ts'
import { AUTH_BASE_PATH } from './options.ts'
import { seedTrustedClients, type TrustedClient } from './trusted-clients.ts'

const BASE_URL = 'http://127.0.0.1:3998'
/** Kysely's migration lock id, which the seeding shares. */
const MIGRATION_LOCK = '3853314791062309107'

let database: TestDatabase
let auth: Auth

beforeAll(async () => {
  database = await createTestDatabase()
  auth = createAuth({ db: database.db, settings: { secret: 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz', baseUrl: BASE_URL } })
  await auth.$context
})
afterAll(async () => {
  await database.drop()
})

const client = (clientId: string): TrustedClient => ({ clientId, name: clientId, redirectUris: [`${BASE_URL}/callback`], applicationType: 'web' })
const seed = (clients: TrustedClient[]) => seedTrustedClients({ auth, db: database.db, clients, resource: BASE_URL })

async function stored(): Promise<Record<string, boolean>> {
  const { rows } = await sql<{ clientId: string, disabled: boolean }>`select "clientId", disabled from "oauthClient"`.execute(database.db)
  return Object.fromEntries(rows.map(row => [row.clientId, row.disabled]))
}

/** Sessions waiting for the migration lock. */
async function lockWaiters(): Promise<number> {
  const { rows } = await sql<{ waiting: number }>`
    select count(*)::int as waiting from pg_locks
    where locktype = 'advisory' and not granted and objsubid = 1
      and database = (select oid from pg_database where datname = current_database())
      and ((classid::bigint << 32) | objid::bigint) = ${MIGRATION_LOCK}::bigint`.execute(database.db)
  return rows[0]!.waiting
}

/** The redirect the provider answers an authorization request for `clientId` with. */
async function authorize(clientId: string): Promise<URL> {
  const query = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    redirect_uri: `${BASE_URL}/callback`,
    scope: 'openid',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
    state: 'state-1',
  })
  const response = await auth.handler(new Request(`${BASE_URL}${AUTH_BASE_PATH}/oauth2/authorize?${query}`))
  const location = response.headers.get('location') ?? (await response.json() as { url?: string }).url
  return new URL(location!, BASE_URL)
}

describe('trusted-client seeding', () => {
  it('waits for the migration lock, so instances starting together take turns', async () => {
    let release!: () => void
    const released = new Promise<void>(resolve => (release = resolve))
    let locked!: () => void
    const lockTaken = new Promise<void>(resolve => (locked = resolve))
    // Another instance, mid-migration, holds the lock.
    const holder = database.db.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(${sql.lit(BigInt(MIGRATION_LOCK))})`.execute(conn)
      locked()
      await released
      await sql`select pg_advisory_unlock(${sql.lit(BigInt(MIGRATION_LOCK))})`.execute(conn)
    })
    await lockTaken

    const seeding = seed([client('waits-web')])
    await until(async () => (await lockWaiters()) === 1, 'the seeding to wait for the migration lock')
    expect(await stored()).not.toHaveProperty('waits-web')

    release()
    await holder
    await seeding
    expect(await stored()).toMatchObject({ 'waits-web': false })
  })

  it('disables a client removed from env, and enables it again when it comes back', async () => {
    await seed([client('kept'), client('removed')])
    expect(await stored()).toMatchObject({ kept: false, removed: false })

    await seed([client('kept')])
    expect(await stored()).toMatchObject({ kept: false, removed: true })
    expect((await authorize('removed')).searchParams.get('error')).toBe('client_disabled')
    expect((await authorize('kept')).searchParams.get('error')).not.toBe('client_disabled')

    await seed([client('kept'), client('removed')])
    expect(await stored()).toMatchObject({ kept: false, removed: false })

    await seed([])
    expect(Object.values(await stored()).every(disabled => disabled)).toBe(true)
  })
})
