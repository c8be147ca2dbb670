import { generateKeyPair, SignJWT } from 'jose'
import type { KyselyPlugin } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { systemClock } from '../clock.ts'
import { silentLogger } from '../logger.ts'
import { createAuth, type Auth } from './auth.ts'
import { AUTH_BASE_PATH } from './options.ts'
import { createRequestAuthResolver } from './resolver.ts'

const BASE_URL = 'http://127.0.0.1:3999'
const ISSUER = `${BASE_URL}${AUTH_BASE_PATH}`

let database: TestDatabase
let auth: Auth
/** Statements that touched the `jwks` table, counted on the way to Postgres. */
let jwksQueries = 0

beforeAll(async () => {
  database = await createTestDatabase()
  const counting: KyselyPlugin = {
    transformQuery({ node }) {
      if (JSON.stringify(node).includes('"name":"jwks"'))
        jwksQueries++
      return node
    },
    async transformResult({ result }) {
      return result
    },
  }
  auth = createAuth({ db: database.db.withPlugin(counting), settings: { secret: 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz', baseUrl: BASE_URL } })
  await auth.$context
  // Creates the signing key if there is none yet, so every later load reads the same way.
  await auth.api.getJwks()
})
afterAll(async () => {
  await database.drop()
})

/** A well-formed access token for our issuer and audience, signed by a key we never published. */
async function tokenWithUnknownKey(): Promise<string> {
  const { privateKey } = await generateKeyPair('EdDSA')
  return new SignJWT({ sub: 'someone' })
    .setProtectedHeader({ alg: 'EdDSA', kid: 'made-up-key' })
    .setIssuer(ISSUER)
    .setAudience(BASE_URL)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(privateKey)
}

const resolverFor = () => createRequestAuthResolver({ auth, issuer: ISSUER, audience: BASE_URL, logger: silentLogger, clock: systemClock })
const bearer = (token: string) => ({ headers: new Headers({ authorization: `Bearer ${token}` }) })

describe('JWKS loading', () => {
  it('tokens naming an unknown key do not reload the key set on every request', async () => {
    const resolve = resolverFor()
    const token = await tokenWithUnknownKey()
    expect(await resolve(bearer(token))).toBeNull()
    const afterFirst = jwksQueries

    for (let i = 0; i < 10; i++)
      expect(await resolve(bearer(token))).toBeNull()
    const answers = await Promise.all(Array.from({ length: 20 }, () => resolve(bearer(token))))
    expect(answers.every(answer => answer === null)).toBe(true)
    expect(jwksQueries).toBe(afterFirst)
  })

  it('concurrent first requests share one load of the key set', async () => {
    const once = resolverFor()
    const token = await tokenWithUnknownKey()
    const before = jwksQueries
    await once(bearer(token))
    const perLoad = jwksQueries - before
    expect(perLoad).toBeGreaterThan(0)

    const shared = resolverFor()
    const start = jwksQueries
    await Promise.all(Array.from({ length: 20 }, () => shared(bearer(token))))
    expect(jwksQueries - start).toBe(perLoad)
  })
})
