import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { findFreePort } from '@airi/db'
import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startRedisServer, type RedisServerHandle } from '@airi/tooling/test/redis-server'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, UNVERIFIED_ADMIN_EMAIL, type TestServer, type TestUser, failure } from './harness.ts'

let server: TestServer
let admin: TestUser
let member: TestUser

beforeAll(async () => {
  server = await startTestServer()
  admin = await createVerifiedUser(server, ADMIN_EMAIL)
  member = await createVerifiedUser(server)
})
afterAll(() => server.close())

const client = (token?: string, target = server): AiriClient => createAiriClient({ baseUrl: target.baseUrl, getToken: () => token })

describe('flux.balance and flux.history', () => {
  it('need a user', async () => {
    expect((await failure(client().flux.balance.query())).data?.httpStatus).toBe(401)
    expect((await failure(client().flux.history.query({}))).data?.httpStatus).toBe(401)
  })

  it('open the account with INITIAL_USER_FLUX and show only the caller\'s ledger', async () => {
    const user = await createVerifiedUser(server)
    expect(await client(user.token).flux.balance.query()).toEqual({ flux: 100 })
    await server.api.services.billing.debit({ userId: user.id, amount: 3, requestId: 'test-debit' })
    await client(member.token).flux.balance.query()

    const page = await client(user.token).flux.history.query({ limit: 10 })
    expect(page.items.map(item => [item.type, item.amount, item.balanceAfter])).toEqual([['debit', 3, 97], ['initial', 100, 100]])
    expect(page.items.every(item => item.userId === user.id)).toBe(true)
    expect(page.nextCursor).toBeNull()
    expect(page.items[0]!.createdAt).toBeInstanceOf(Date)
  })

  it('answers bad input with 400 naming the field', async () => {
    const limit = await failure(client(member.token).flux.history.query({ limit: 1000 }))
    expect(limit.data).toMatchObject({ httpStatus: 400 })
    expect(Object.keys(limit.data?.fieldErrors ?? {})).toEqual(['limit'])
    const cursor = await failure(client(member.token).flux.history.query({ cursor: 'not-ours' }))
    expect(cursor.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CURSOR' })
  })
})

describe('admin.flux.grant', () => {
  it('is refused to a user who is not an admin, and to an admin whose e-mail is unverified', async () => {
    const input = { description: 'x', amount: 1, emails: [member.email] }
    expect((await failure(client().admin.flux.grant.mutate(input))).data?.httpStatus).toBe(401)
    expect((await failure(client(member.token).admin.flux.grant.mutate(input))).data?.httpStatus).toBe(403)
    const unverified = await createVerifiedUser(server, UNVERIFIED_ADMIN_EMAIL)
    await sql`UPDATE "user" SET "emailVerified" = false WHERE id = ${unverified.id}`.execute(server.database.db)
    expect((await failure(client(unverified.token).admin.flux.grant.mutate(input))).data?.httpStatus).toBe(403)
  })

  it('enforces its caps with 400s that name the field', async () => {
    const sdk = client(admin.token)
    const tooMuch = await failure(sdk.admin.flux.grant.mutate({ description: 'x', amount: 10_001, emails: [member.email] }))
    expect(Object.keys(tooMuch.data?.fieldErrors ?? {})).toEqual(['amount'])
    const tooMany = await failure(sdk.admin.flux.grant.mutate({ description: 'x', amount: 1, emails: Array.from({ length: 201 }, (_, i) => `u${i}@example.com`) }))
    expect(Object.keys(tooMany.data?.fieldErrors ?? {})).toEqual(['emails'])
    const none = await failure(sdk.admin.flux.grant.mutate({ description: '', amount: 1, emails: [] }))
    expect(Object.keys(none.data?.fieldErrors ?? {}).sort()).toEqual(['description', 'emails'])
  })

  it('previews with a dry run, grants per e-mail, and a rerun with the same key grants only what failed before', async () => {
    const sdk = client(admin.token)
    const alice = await createVerifiedUser(server)
    const bob = await createVerifiedUser(server)
    const carol = await createVerifiedUser(server)
    const gone = await createVerifiedUser(server)
    await server.api.services.billing.getBalance(gone.id)
    await server.api.services.billing.deleteAllForUser(gone.id)
    const emails = [alice.email.toUpperCase(), bob.email, ` ${alice.email} `, 'nobody@example.com', carol.email, gone.email]
    const ledgerCount = async () => Number((await sql<{ n: string }>`SELECT count(*) AS n FROM flux_transaction`.execute(server.database.db)).rows[0]!.n)

    const before = await ledgerCount()
    const preview = await sdk.admin.flux.grant.mutate({ description: 'Launch gift', amount: 50, emails, idempotencyKey: 'launch-2026', dryRun: true })
    expect(preview.results.map(result => [result.status, result.reason])).toEqual([
      ['would_grant', undefined], ['would_grant', undefined], ['skipped', 'duplicate'], ['skipped', 'not_found'], ['would_grant', undefined], ['skipped', 'deleted'],
    ])
    expect(await ledgerCount()).toBe(before)

    // Carol's credit fails for real: the database refuses her ledger row.
    await sql.raw(`
      CREATE FUNCTION refuse_carol() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.user_id = '${carol.id}' AND NEW.type = 'promo' THEN RAISE EXCEPTION 'ledger unavailable'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_carol BEFORE INSERT ON flux_transaction FOR EACH ROW EXECUTE FUNCTION refuse_carol();
    `).execute(server.database.db)
    const first = await sdk.admin.flux.grant.mutate({ description: 'Launch gift', amount: 50, emails, idempotencyKey: 'launch-2026' })
    expect(first.results.map(result => result.status)).toEqual(['granted', 'granted', 'skipped', 'skipped', 'failed', 'skipped'])
    expect(first.summary).toEqual({ granted: 2, would_grant: 0, skipped: 3, failed: 1 })
    expect(await client(alice.token).flux.balance.query()).toEqual({ flux: 150 })
    expect(await client(carol.token).flux.balance.query()).toEqual({ flux: 100 })

    await sql.raw('DROP TRIGGER refuse_carol ON flux_transaction; DROP FUNCTION refuse_carol();').execute(server.database.db)
    const rerun = await sdk.admin.flux.grant.mutate({ description: 'Launch gift', amount: 50, emails, idempotencyKey: 'launch-2026' })
    expect(rerun.results.map(result => [result.status, result.reason])).toEqual([
      ['skipped', 'already_granted'], ['skipped', 'already_granted'], ['skipped', 'duplicate'], ['skipped', 'not_found'], ['granted', undefined], ['skipped', 'deleted'],
    ])
    expect(await client(carol.token).flux.balance.query()).toEqual({ flux: 150 })
    expect(await client(alice.token).flux.balance.query()).toEqual({ flux: 150 })

    const carolLedger = await client(carol.token).flux.history.query({})
    expect(carolLedger.items[0]).toMatchObject({ type: 'promo', amount: 50, requestId: `flux-grant:launch-2026:${carol.id}`, description: 'Launch gift' })
  })

  it('generates a key when none is given, so two runs are two grants', async () => {
    const sdk = client(admin.token)
    const user = await createVerifiedUser(server)
    const a = await sdk.admin.flux.grant.mutate({ description: 'One', amount: 5, emails: [user.email] })
    const b = await sdk.admin.flux.grant.mutate({ description: 'Two', amount: 5, emails: [user.email] })
    expect(a.idempotencyKey).not.toBe(b.idempotencyKey)
    expect(await client(user.token).flux.balance.query()).toEqual({ flux: 110 })
  })
})

describe('with Redis stopped mid-test', () => {
  let redis: RedisServerHandle
  let isolated: TestServer

  beforeAll(async () => {
    redis = await startRedisServer(await findFreePort())
    isolated = await startTestServer({ redisUrl: redis.url })
  })
  afterAll(async () => {
    await isolated.close()
    await redis.stop()
  })

  it('flux.balance answers from Postgres and debits still commit', async () => {
    const user = await createVerifiedUser(isolated)
    const sdk = client(user.token, isolated)
    expect(await sdk.flux.balance.query()).toEqual({ flux: 100 })

    await redis.stop()
    await isolated.api.services.billing.debit({ userId: user.id, amount: 40, requestId: 'while-redis-is-down' })
    expect(await sdk.flux.balance.query()).toEqual({ flux: 60 })
    expect((await sdk.flux.history.query({})).items[0]).toMatchObject({ type: 'debit', amount: 40 })

    // Back again, the cache is used and kept right by the next write.
    redis = await startRedisServer(redis.port)
    await expect.poll(() => isolated.api.adapters.ping().then(() => true, () => false), { timeout: 5000 }).toBe(true)
    await isolated.api.services.billing.debit({ userId: user.id, amount: 1, requestId: 'after-redis-returns' })
    expect(await sdk.flux.balance.query()).toEqual({ flux: 59 })
  })
})
