import { randomUUID } from 'node:crypto'
import { createServer } from 'node:net'

import type { Meter } from '@opentelemetry/api'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { expect, inject } from 'vitest'

import { createApi, createMemoryAdapters, createRedisAdapters, createResendTransport, silentLogger, type Api, type AppRouter, type Clock, type Logger, type PosthogSettings, type RateLimitSettings, type StripeSettings, type TrustedClient } from '@airi/api'
import { TRPCClientError } from '@airi/sdk'
import { startFakeResend, type FakeEmail, type FakeResend } from '@airi/tooling/fakes/resend'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import { service } from '../src/runtime.ts'
import { buildServer, type BuildServerOptions } from '../src/server.ts'
import { withTestProcedures } from './test-router.ts'

export const ADMIN_EMAIL = 'admin@example.com'
/** The test deployment's LLM_ROUTER_MASTER_KEY. */
export const TEST_LLM_MASTER_KEY = Buffer.alloc(32, 7)
export const UNVERIFIED_ADMIN_EMAIL = 'unverified-admin@example.com'

export interface TestServerOptions {
  /** false: in-process adapters; a URL: that Redis; default: the run's redis-server. */
  redisUrl?: string | false
  /** Share a Redis namespace with another test server (two instances of one deployment). */
  redisPrefix?: string
  database?: TestDatabase
  /** First-party OIDC clients; a function receives the server's origin (for redirect URIs on it). */
  trustedClients?: TrustedClient[] | ((baseUrl: string) => TrustedClient[])
  adminEmails?: string[]
  authRateLimitPerMinute?: number
  /** Fastify's trustProxy (TRUST_PROXY): whose X-Forwarded-For to believe. */
  trustProxy?: number | string[]
  socialProviders?: { github?: boolean, google?: boolean }
  /** Where the `airi.*` instruments report (tests read counters through it). */
  meter?: Meter
  /** The services' logger (silent by default); tests that check what is logged pass a recording one. */
  logger?: Logger
  /** The host's (Fastify's) logger, silent by default: request errors such as `unhandled error` go there. */
  httpLogger?: FastifyBaseLogger
  /** Transport limits (sockets, subscriptions, batches, timeouts) for tests of them. */
  limits?: Pick<BuildServerOptions, 'trpcLimits' | 'speechSocketLimits' | 'transcriptionSocketLimits' | 'requestTimeoutMs' | 'connectionTimeoutMs'>
  /** API_SERVER_URL when several instances serve one origin (JWT issuer and audience); default: this server's own origin. */
  publicUrl?: string
  /** Adds routes before the server starts listening (tests of shared transport behaviour). */
  extend?: (app: FastifyInstance, api: Api) => void
  /** Stripe settings (a fake's `settings`, from tooling/fakes/stripe); without them billing answers 503. */
  stripe?: StripeSettings
  /** The identity cache's TTL (default 30 s); tests of its invalidation set it far beyond their run so no assertion depends on timing. */
  identityCacheTtlMs?: number
  /** PostHog settings (a fake's `settings`, from tooling/fakes/posthog); without them events go nowhere. */
  posthog?: PosthogSettings
  /** Per-user rate limits and their window (default: SPEC's limits per 60 s). */
  rateLimits?: RateLimitSettings
  /** LIVE_SYNC_FALLBACK_POLL_MS: how often live subscriptions read their feeds while Redis is down. */
  liveSyncFallbackPollMs?: number
  /** Where the services read the time; a manual clock lets a test advance it instead of waiting. */
  clock?: Clock
}

export interface TestServer {
  app: FastifyInstance
  api: Api
  database: TestDatabase
  resend: FakeResend
  /** The server's origin; it is listening. */
  baseUrl: string
  close: () => Promise<void>
}

/**
 * The real host on a loopback port: real Postgres (a database of its own), Redis,
 * better-auth, and the real `resend` library pointed at a local fake of Resend.
 */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const ownDatabase = !options.database
  const database = options.database ?? await createTestDatabase()
  const redisUrl = options.redisUrl === undefined ? inject('redisUrl') : options.redisUrl
  const adapters = redisUrl ? await createRedisAdapters({ url: redisUrl, prefix: options.redisPrefix ?? testRedisPrefix() }) : createMemoryAdapters()
  const resend = await startFakeResend()
  // better-auth builds links and the issuer from its base URL, so the port is chosen
  // first, and held until the server listens: on a busy machine an outgoing connection
  // could otherwise take it during the seconds the API takes to build.
  const held = await holdFreePort()
  const port = held.port
  const baseUrl = `http://127.0.0.1:${port}`
  const social = { id: 'fake-client-id', secret: 'fake-client-secret' }
  const api = await createApi({
    db: database.db,
    adapters,
    logger: options.logger ?? silentLogger,
    emailTransport: createResendTransport({ apiKey: resend.apiKey, from: 'AIRI <noreply@example.com>', baseUrl: resend.url }),
    auth: {
      secret: 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz',
      baseUrl: options.publicUrl ?? baseUrl,
      trustedClients: typeof options.trustedClients === 'function' ? options.trustedClients(baseUrl) : options.trustedClients,
      github: options.socialProviders?.github ? { clientId: social.id, clientSecret: social.secret } : undefined,
      google: options.socialProviders?.google ? { clientId: social.id, clientSecret: social.secret } : undefined,
    },
    adminEmails: options.adminEmails ?? [ADMIN_EMAIL, UNVERIFIED_ADMIN_EMAIL],
    service,
    meter: options.meter,
    llmMasterKey: TEST_LLM_MASTER_KEY,
    stripe: options.stripe,
    identityCache: options.identityCacheTtlMs === undefined ? undefined : { ttlMs: options.identityCacheTtlMs },
    posthog: options.posthog,
    // The /api/auth/* limit far above what a test sends, unless a test of it sets one.
    rateLimits: { ...options.rateLimits, limits: { auth: options.authRateLimitPerMinute ?? 10_000, ...options.rateLimits?.limits } },
    liveSyncFallbackPollMs: options.liveSyncFallbackPollMs,
    clock: options.clock,
  })
  const app = await buildServer({
    // The app's procedures plus the tests' own (test.ticks), so production serves none of them.
    api: { ...api, router: withTestProcedures(api.router) },
    service,
    trustProxy: options.trustProxy,
    logger: options.httpLogger,
    ...options.limits,
    socialProviders: [...(options.socialProviders?.google ? ['google' as const] : []), ...(options.socialProviders?.github ? ['github' as const] : [])],
  })
  options.extend?.(app, api)
  await held.release()
  await app.listen({ host: '127.0.0.1', port })

  return {
    app,
    api,
    database,
    resend,
    baseUrl,
    async close() {
      await app.close()
      await api.close()
      await adapters.close()
      await resend.close()
      if (ownDatabase)
        await database.drop()
    },
  }
}

/** A free loopback port, kept bound until `release`. */
async function holdFreePort(): Promise<{ port: number, release: () => Promise<void> }> {
  const server = createServer()
  // Never what keeps a test process alive, if the server it was for failed to build.
  server.unref()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const address = server.address()
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    release: () => new Promise(resolve => server.close(() => resolve())),
  }
}

export function uniqueEmail(label = 'user'): string {
  return `${label}-${randomUUID().slice(0, 8)}@example.com`
}

/** POSTs JSON to a better-auth endpoint, as a browser-less client would. */
export async function authPost(server: TestServer, path: string, body: unknown, token?: string): Promise<Response> {
  return fetch(`${server.baseUrl}/api/auth${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  })
}

export function emailTo(server: TestServer, to: string, subject: RegExp): Promise<FakeEmail> {
  // better-auth stores (and mails) addresses lower-cased.
  return server.resend.waitForEmail(email => email.to.includes(to.toLowerCase()) && subject.test(email.subject))
}

export interface TestUser {
  id: string
  email: string
  password: string
  /** A better-auth session token (bearer). */
  token: string
}

/** Signs up through the real flow: sign-up, the verification e-mail's link, sign-in. */
export async function createVerifiedUser(server: TestServer, email = uniqueEmail()): Promise<TestUser> {
  const password = 'correct horse battery staple'
  const signUp = await authPost(server, '/sign-up/email', { email, password, name: email.split('@')[0] })
  if (!signUp.ok)
    throw new Error(`sign-up failed: ${signUp.status} ${await signUp.text()}`)
  const mail = await emailTo(server, email, /verify/i)
  const verify = await fetch(server.resend.linkIn(mail), { redirect: 'manual' })
  if (verify.status >= 400)
    throw new Error(`verification failed: ${verify.status}`)
  return signIn(server, email, password)
}

export async function signIn(server: TestServer, email: string, password: string): Promise<TestUser> {
  const response = await authPost(server, '/sign-in/email', { email, password })
  if (!response.ok)
    throw new Error(`sign-in failed: ${response.status} ${await response.text()}`)
  const token = response.headers.get('set-auth-token')
  const body = await response.json() as { user: { id: string } }
  if (!token)
    throw new Error('sign-in answered without a set-auth-token header')
  return { id: body.user.id, email, password, token }
}

/** The error a tRPC call rejected with; fails the test if it did not reject with one. */
export async function failure(promise: Promise<unknown>): Promise<TRPCClientError<AppRouter>> {
  const error = await promise.then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(TRPCClientError)
  return error as TRPCClientError<AppRouter>
}

/** The fields a 400 named, sorted; fails the test on any other outcome. */
export async function badRequestFields(promise: Promise<unknown>): Promise<string[]> {
  const error = await failure(promise)
  expect(error.data?.httpStatus).toBe(400)
  return Object.keys(error.data?.fieldErrors ?? {}).sort()
}
