import type { KyselyPlugin, RootOperationNode } from 'kysely'
import * as oidc from 'openid-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import { authPost, createVerifiedUser, emailTo, failure, signIn, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Callers are resolved from an in-process cache (issue 14): no auth SQL for public
 * procedures, none for a known credential, and every revocation or user change
 * still reaches every instance at once.
 */

const WEB_CLIENT = 'airi-web'
const WEB_REDIRECT = 'http://localhost:5173/auth/callback'

let database: TestDatabase
let serverA: TestServer
let serverB: TestServer
/** Statements on better-auth's `session` and `user` tables, from both instances, counted on the way to Postgres. */
let authStatements = 0

/** True when the statement reads or writes the `session` or `user` table. */
function touchesAuthTables(node: RootOperationNode): boolean {
  const text = JSON.stringify(node, (_, value: unknown) => typeof value === 'bigint' ? String(value) : value)
  return /"name":"(session|user)"/.test(text) || (node.kind === 'RawNode' && /\b(session|user)\b/.test(node.sqlFragments.join(' ')))
}

beforeAll(async () => {
  database = await createTestDatabase()
  const counting: KyselyPlugin = {
    transformQuery({ node }) {
      if (touchesAuthTables(node))
        authStatements++
      return node
    },
    async transformResult({ result }) {
      return result
    },
  }
  // Two instances of one deployment: one Postgres (through the counter), one Redis namespace, one public origin.
  // Cached identities outlive the whole file: whatever stops working here was dropped, not expired.
  const shared = { database: { ...database, db: database.db.withPlugin(counting) }, redisPrefix: testRedisPrefix(), identityCacheTtlMs: 3_600_000 }
  const trustedClients = [{ clientId: WEB_CLIENT, name: 'AIRI web', redirectUris: [WEB_REDIRECT], applicationType: 'web' as const }]
  serverA = await startTestServer({ ...shared, trustedClients })
  serverB = await startTestServer({ ...shared, trustedClients, publicUrl: serverA.baseUrl })
})
afterAll(async () => {
  await Promise.all([serverA?.close(), serverB?.close()])
  await database.drop()
})

function client(server: TestServer, token: string | undefined) {
  return createAiriClient({ baseUrl: server.baseUrl, getToken: () => token })
}

const me = (server: TestServer, token: string) => client(server, token).auth.me.query()

/** Both instances know the caller and serve it from their cache (no auth SQL) before the change under test. */
async function warmBoth(user: TestUser, token = user.token): Promise<void> {
  expect((await me(serverA, token)).user.id).toBe(user.id)
  expect((await me(serverB, token)).user.id).toBe(user.id)
  const again = await authStatementsDuring(async () => {
    expect((await me(serverA, token)).user.id).toBe(user.id)
    expect((await me(serverB, token)).user.id).toBe(user.id)
  })
  expect(again).toBe(0)
}

async function expectRefusedOnBoth(token: string): Promise<void> {
  for (const server of [serverA, serverB])
    expect((await failure(me(server, token))).data).toMatchObject({ code: 'UNAUTHORIZED' })
}

/** Statements on the auth tables while `work` runs. */
async function authStatementsDuring(work: () => Promise<unknown>): Promise<number> {
  const before = authStatements
  await work()
  return authStatements - before
}

describe('auth work on the request path', () => {
  it('public procedures do none, even for a signed-in caller the instance has never seen', async () => {
    const user = await createVerifiedUser(serverA)
    const fresh = await signIn(serverA, user.email, user.password)
    const statements = await authStatementsDuring(async () => {
      for (const server of [serverA, serverB]) {
        for (let i = 0; i < 5; i++)
          expect(await client(server, fresh.token).meta.info.query()).toMatchObject({ service: expect.any(String) })
      }
    })
    expect(statements).toBe(0)
  })

  it('a known session costs no SQL: N calls of auth.me and flux.balance after the first on each instance', async () => {
    const user = await createVerifiedUser(serverA)
    const fresh = await signIn(serverA, user.email, user.password)
    const first = await authStatementsDuring(() => warmBoth(user, fresh.token))
    expect(first).toBeGreaterThan(0)

    const repeated = await authStatementsDuring(async () => {
      for (const server of [serverA, serverB]) {
        for (let i = 0; i < 10; i++) {
          expect((await me(server, fresh.token)).user.email).toBe(user.email)
          expect(await client(server, fresh.token).flux.balance.query()).toMatchObject({ flux: expect.any(Number) })
        }
      }
    })
    expect(repeated).toBe(0)
  })
})

describe('a cached session stops working on every instance at once', () => {
  it('after sign-out on the other instance', async () => {
    const user = await createVerifiedUser(serverA)
    await warmBoth(user)
    expect((await authPost(serverA, '/sign-out', {}, user.token)).ok).toBe(true)
    await expectRefusedOnBoth(user.token)
  })

  it('after revoke-sessions, for every session of the user', async () => {
    const user = await createVerifiedUser(serverA)
    const second = await signIn(serverA, user.email, user.password)
    await warmBoth(user)
    await warmBoth(user, second.token)
    expect((await authPost(serverA, '/revoke-sessions', {}, user.token)).ok).toBe(true)
    await expectRefusedOnBoth(user.token)
    await expectRefusedOnBoth(second.token)
  })

  it('after a password reset', async () => {
    const user = await createVerifiedUser(serverA)
    await warmBoth(user)
    expect((await authPost(serverA, '/request-password-reset', { email: user.email, redirectTo: '/reset-password' })).ok).toBe(true)
    const link = await fetch(serverA.resend.linkIn(await emailTo(serverA, user.email, /reset/i)), { redirect: 'manual' })
    const resetToken = new URL(link.headers.get('location')!, serverA.baseUrl).searchParams.get('token')!
    expect((await authPost(serverA, '/reset-password', { newPassword: 'an entirely new password', token: resetToken })).ok).toBe(true)
    await expectRefusedOnBoth(user.token)
  })

  it('after the account is deleted', async () => {
    const user = await createVerifiedUser(serverA)
    await warmBoth(user)
    expect((await authPost(serverA, '/delete-user', { callbackURL: '/' }, user.token)).status).toBe(200)
    const mail = await emailTo(serverA, user.email, /deletion/i)
    const deleted = await fetch(serverA.resend.linkIn(mail), { redirect: 'manual', headers: { authorization: `Bearer ${user.token}` } })
    expect(deleted.status).toBeLessThan(400)
    expect(await database.db.selectFrom('user').select('id').where('id', '=', user.id).executeTakeFirst()).toBeUndefined()
    await expectRefusedOnBoth(user.token)
  })
})

describe('user changes show on every instance at once', () => {
  it('a new name', async () => {
    const user = await createVerifiedUser(serverA)
    await warmBoth(user)
    expect((await authPost(serverA, '/update-user', { name: 'Renamed' }, user.token)).ok).toBe(true)
    for (const server of [serverA, serverB])
      expect((await me(server, user.token)).user.name).toBe('Renamed')
  })

  it('a new e-mail address, once confirmed and verified', async () => {
    const user = await createVerifiedUser(serverA)
    const newEmail = `moved-${user.email}`
    await warmBoth(user)
    expect((await authPost(serverA, '/change-email', { newEmail, callbackURL: '/' }, user.token)).ok).toBe(true)
    await fetch(serverA.resend.linkIn(await emailTo(serverA, user.email, /change/i)), { redirect: 'manual' })
    await fetch(serverA.resend.linkIn(await emailTo(serverA, newEmail, /verify/i)), { redirect: 'manual' })
    for (const server of [serverA, serverB])
      expect((await me(server, user.token)).user).toMatchObject({ email: newEmail, emailVerified: true })
  })
})

describe('JWT access tokens', () => {
  async function accessTokenFor(user: TestUser): Promise<string> {
    const config = await oidc.discovery(new URL(`${serverA.baseUrl}/api/auth`), WEB_CLIENT, undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] })
    const codeVerifier = oidc.randomPKCECodeVerifier()
    const state = oidc.randomState()
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: WEB_REDIRECT,
      scope: 'openid profile email offline_access',
      code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      resource: serverA.baseUrl,
    })
    // The signed-in browser at the authorize endpoint is sent back with a code.
    const response = await fetch(url, { headers: { authorization: `Bearer ${user.token}`, accept: 'application/json' }, redirect: 'manual' })
    const { url: callback } = await response.json() as { url: string }
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback, serverA.baseUrl), { pkceCodeVerifier: codeVerifier, expectedState: state }, { resource: serverA.baseUrl })
    return tokens.access_token
  }

  it('are resolved from the cache after the first call, and refused on both instances once their session is revoked', async () => {
    const user = await createVerifiedUser(serverA)
    const accessToken = await accessTokenFor(user)
    await warmBoth(user, accessToken)

    const repeated = await authStatementsDuring(async () => {
      for (const server of [serverA, serverB]) {
        for (let i = 0; i < 10; i++)
          expect((await me(server, accessToken)).user.id).toBe(user.id)
      }
    })
    expect(repeated).toBe(0)

    // The session the token was issued under.
    expect((await authPost(serverA, '/sign-out', {}, user.token)).ok).toBe(true)
    await expectRefusedOnBoth(accessToken)
  })
})
