import type { FastifyInstance } from 'fastify'
import { inject } from 'vitest'

import { createApi, createMemoryAdapters, createRedisAdapters, silentLogger, type Api, type AuthUser, type RequestAuthResolver } from '@airi/api'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import { service } from '../src/runtime.ts'
import { buildServer } from '../src/server.ts'

export const users = {
  member: { id: 'user-member', email: 'member@example.com', emailVerified: true, name: 'Member' },
  admin: { id: 'user-admin', email: 'Admin@Example.com', emailVerified: true, name: 'Admin' },
  unverifiedAdmin: { id: 'user-unverified', email: 'unverified@example.com', emailVerified: false, name: 'Unverified' },
} satisfies Record<string, AuthUser>

export const adminEmails = ['admin@example.com', 'unverified@example.com']

/**
 * Until accounts land, identities are proven by a resolver that knows three
 * tokens. It reads the bearer header (HTTP) and the `token` connection param (WS),
 * exactly where the real resolver will look.
 */
export const tokenResolver: RequestAuthResolver = async ({ headers, connectionParams }) => {
  const token = headers.get('authorization')?.replace(/^Bearer /i, '') ?? connectionParams?.token
  const user = token ? (users as Record<string, AuthUser>)[token] : undefined
  return user ? { user, session: { id: `session-${user.id}`, userId: user.id, expiresAt: new Date(Date.now() + 3_600_000) } } : null
}

export interface TestServer {
  app: FastifyInstance
  api: Api
  database: TestDatabase
  /** Set once `listen()` resolved. */
  baseUrl: string
  listen: () => Promise<string>
  close: () => Promise<void>
}

export async function startTestServer(options: { redisUrl?: string | false, database?: TestDatabase } = {}): Promise<TestServer> {
  const ownDatabase = !options.database
  const database = options.database ?? await createTestDatabase()
  const redisUrl = options.redisUrl === undefined ? inject('redisUrl') : options.redisUrl
  const adapters = redisUrl ? await createRedisAdapters({ url: redisUrl, prefix: testRedisPrefix() }) : createMemoryAdapters()
  const api = await createApi({ db: database.db, adapters, logger: silentLogger, adminEmails, resolveAuth: tokenResolver, service })
  const app = await buildServer({ api, service })

  const server: TestServer = {
    app,
    api,
    database,
    baseUrl: '',
    async listen() {
      await app.listen({ host: '127.0.0.1', port: 0 })
      const address = app.server.address()
      server.baseUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
      return server.baseUrl
    },
    async close() {
      await app.close()
      await api.close()
      await adapters.close()
      if (ownDatabase)
        await database.drop()
    },
  }
  return server
}
