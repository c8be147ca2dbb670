import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, TRPCClientError } from '@airi/sdk'

import { authPost, createVerifiedUser, emailTo, startTestServer, type TestServer, type TestUser } from './harness.ts'

let server: TestServer
const calls: string[] = []
let failPayments = false

beforeAll(async () => {
  server = await startTestServer()
  // Registered out of order on purpose: the registry runs them by priority.
  const registry = server.api.services.userDeletion
  registry.register({ name: 'test-rows', priority: 30, softDelete: async userId => void calls.push(`rows:${userId}`) })
  registry.register({
    name: 'test-payments',
    priority: 10,
    softDelete: async (userId) => {
      calls.push(`payments:${userId}`)
      if (failPayments)
        throw new Error('payment provider unreachable')
    },
  })
  registry.register({ name: 'test-money', priority: 20, softDelete: async userId => void calls.push(`money:${userId}`) })
})
afterAll(() => server.close())

function me(token: string) {
  return createAiriClient({ baseUrl: server.baseUrl, getToken: () => token }).auth.me.query()
}

async function countRows(table: string, userId: string): Promise<number> {
  const { rows } = await sql<{ count: string }>`SELECT count(*) FROM ${sql.table(table)} WHERE "userId" = ${userId}`.execute(server.database.db)
  return Number(rows[0]!.count)
}

/**
 * Asks for deletion and opens the confirmation link in the signed-in browser (the
 * callback only deletes the account of the session that opens it).
 */
async function deleteAccount(user: TestUser): Promise<Response> {
  const requested = await authPost(server, '/delete-user', { callbackURL: '/goodbye' }, user.token)
  expect(requested.status).toBe(200)
  const mail = await emailTo(server, user.email, /deletion/i)
  server.resend.emails.splice(server.resend.emails.indexOf(mail), 1)
  return fetch(server.resend.linkIn(mail), { redirect: 'manual', headers: { authorization: `Bearer ${user.token}` } })
}

describe('account deletion', () => {
  it('asks for confirmation by e-mail and deletes nothing until the link is opened', async () => {
    const user = await createVerifiedUser(server)
    const requested = await authPost(server, '/delete-user', { callbackURL: '/goodbye' }, user.token)
    expect(requested.status).toBe(200)
    const mail = await emailTo(server, user.email, /deletion/i)
    expect(mail.text).toContain('/api/auth/delete-user/callback')
    expect((await me(user.token)).user.id).toBe(user.id)
  })

  it('runs every handler by priority, removes the user and sessions, keeps the ledger, and frees the e-mail', async () => {
    const user = await createVerifiedUser(server)
    const second = await fetch(`${server.baseUrl}/api/auth/sign-in/email`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: user.email, password: user.password }) })
    const otherSession = second.headers.get('set-auth-token')!
    await server.database.db.insertInto('flux_transaction').values({
      user_id: user.id,
      type: 'initial',
      amount: 100,
      balance_before: 0,
      balance_after: 100,
      request_id: `initial:${user.id}`,
    }).execute()
    expect(await countRows('session', user.id)).toBeGreaterThanOrEqual(2)
    calls.length = 0

    const callback = await deleteAccount(user)
    expect(callback.status).toBe(302)
    expect(callback.headers.get('location')).toBe('/goodbye')

    expect(calls).toEqual([`payments:${user.id}`, `money:${user.id}`, `rows:${user.id}`])
    const { rows } = await sql<{ count: string }>`SELECT count(*) FROM "user" WHERE id = ${user.id}`.execute(server.database.db)
    expect(Number(rows[0]!.count)).toBe(0)
    expect(await countRows('session', user.id)).toBe(0)
    expect(await countRows('account', user.id)).toBe(0)
    await expect(me(user.token)).rejects.toBeInstanceOf(TRPCClientError)
    await expect(me(otherSession)).rejects.toBeInstanceOf(TRPCClientError)

    const ledger = await server.database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', user.id).execute()
    expect(ledger).toHaveLength(1)

    const again = await createVerifiedUser(server, user.email)
    expect(again.id).not.toBe(user.id)
    expect((await me(again.token)).user.email).toBe(user.email)
  })

  it('closes a Flux balance that was never opened, so no later write opens one for the deleted user', async () => {
    const user = await createVerifiedUser(server)
    expect((await deleteAccount(user)).status).toBe(302)

    // E.g. a purchase paid after the deletion: the billing service refuses, writes nothing.
    await expect(server.api.services.billing.credit({ userId: user.id, amount: 300, requestId: 'paid-after-deletion' }))
      .rejects.toMatchObject({ status: 404, code: 'FLUX_ACCOUNT_NOT_FOUND' })
    expect(await server.database.db.selectFrom('flux_transaction').select('id').where('user_id', '=', user.id).execute()).toEqual([])
    expect(await server.database.db.selectFrom('user_flux').select(['flux']).where('user_id', '=', user.id).where('deleted_at', 'is', null).execute()).toEqual([])
  })

  it('stops at the first failing handler and keeps the account, so the user can retry', async () => {
    const user = await createVerifiedUser(server)
    calls.length = 0
    failPayments = true
    try {
      const failed = await deleteAccount(user)
      expect(failed.status, await failed.clone().text()).toBe(500)
      expect(await failed.json()).toMatchObject({ code: 'USER_DELETION_FAILED' })
    }
    finally {
      failPayments = false
    }
    expect(calls).toEqual([`payments:${user.id}`])
    expect((await me(user.token)).user.id).toBe(user.id)

    calls.length = 0
    const retried = await deleteAccount(user)
    expect(retried.status).toBe(302)
    expect(calls).toEqual([`payments:${user.id}`, `money:${user.id}`, `rows:${user.id}`])
    await expect(me(user.token)).rejects.toBeInstanceOf(TRPCClientError)
  })

  it('does nothing when the link is opened without the account\'s session', async () => {
    const user = await createVerifiedUser(server)
    await authPost(server, '/delete-user', { callbackURL: '/' }, user.token)
    const link = server.resend.linkIn(await emailTo(server, user.email, /deletion/i))
    const stranger = await createVerifiedUser(server)
    expect((await fetch(link, { redirect: 'manual' })).status).toBeGreaterThanOrEqual(400)
    expect((await fetch(link, { redirect: 'manual', headers: { authorization: `Bearer ${stranger.token}` } })).status).toBeGreaterThanOrEqual(400)
    expect((await me(user.token)).user.id).toBe(user.id)
    expect((await me(stranger.token)).user.id).toBe(stranger.id)
  })

  it('needs a signed-in user', async () => {
    const response = await authPost(server, '/delete-user', {})
    expect(response.status).toBe(401)
  })

  it('rejects a forged confirmation token', async () => {
    const user = await createVerifiedUser(server)
    const response = await fetch(`${server.baseUrl}/api/auth/delete-user/callback?token=forged&callbackURL=/`, { redirect: 'manual', headers: { authorization: `Bearer ${user.token}` } })
    expect(response.status).toBeGreaterThanOrEqual(400)
    expect((await me(user.token)).user.id).toBe(user.id)
  })
})
