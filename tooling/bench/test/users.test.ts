// The bench's users are written straight into better-auth's tables (deployment.ts,
// insertUsers); these check, against the real server, that they are what a
// sign-up and sign-in would have left: their bearers authenticate through the
// server's own path, and the password hash they share works for a sign-in.
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createVerifiedUser, signIn, startTestServer, type TestServer } from '../../../apps/server/test/harness.ts'
import { insertUsers, signSessionToken, trpcCall } from '../deployment.ts'

const TEST_SECRET = 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz'

let server: TestServer
let db: pg.Pool

beforeAll(async () => {
  server = await startTestServer()
  db = new pg.Pool({ connectionString: server.database.url, max: 2 })
})

afterAll(async () => {
  await db?.end()
  await server?.close()
})

describe('bench users', () => {
  it('signs a session token the way sign-in hands it out', async () => {
    const user = await createVerifiedUser(server)
    const stored = user.token.split('.')[0]!
    expect(signSessionToken(stored, TEST_SECRET)).toBe(user.token)
  })

  it('writes users whose bearers and password work like signed-up ones', async () => {
    const template = await createVerifiedUser(server)
    const users = await insertUsers(db, { ...template, sessionToken: template.token.split('.')[0]! }, 3, `bench-test-${Date.now()}`, TEST_SECRET)
    expect(new Set(users.map(user => user.id)).size).toBe(3)
    for (const user of users) {
      const me = await trpcCall<{ user: { id: string, email: string, emailVerified: boolean } }>(server.baseUrl, user.token, 'auth.me', undefined, 'query')
      expect(me.user).toMatchObject({ id: user.id, email: user.email, emailVerified: true })
      const { rows } = await db.query<{ token: string }>('SELECT token FROM session WHERE "userId" = $1', [user.id])
      expect(rows).toEqual([{ token: user.sessionToken }])
    }
    // The copied hash is the template's password: the account can sign in as usual.
    const signedIn = await signIn(server, users[0]!.email, template.password)
    expect(signedIn.id).toBe(users[0]!.id)
  })
})
