import { createHash } from 'node:crypto'

import { oauthProvider } from '@better-auth/oauth-provider'
import type { BetterAuthOptions } from 'better-auth'
import { APIError } from 'better-auth/api'
import { bearer, jwt, magicLink } from 'better-auth/plugins'

import type { Db } from '@airi/db'

import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { EmailService } from '../services/email.ts'
import { outageAwareDatabase } from './outage.ts'

/** Paths of our own pages that the OAuth provider redirects to. */
export const SIGN_IN_PATH = '/sign-in'
export const AUTH_BASE_PATH = '/api/auth'
export const ELECTRON_RELAY_PATH = `${AUTH_BASE_PATH}/oidc/electron-callback`

/** @public Named by the SDK's bundled declarations (the auth factory's return type). */
export interface SocialProviderCredentials {
  clientId: string
  clientSecret: string
}

export interface AuthSettings {
  /** Signs sessions, verification tokens and the signed OAuth query. */
  secret: string
  /** Public origin of this server (API_SERVER_URL): issuer, and the resource JWT access tokens are for. */
  baseUrl: string
  /** Browser origins allowed to call `/api/auth/*` with cookies (e.g. stage-web's). */
  trustedOrigins?: string[]
  google?: SocialProviderCredentials
  github?: SocialProviderCredentials
}

export interface AuthOptionsDeps {
  db: Db
  settings: AuthSettings
  email?: EmailService
  logger?: Logger
  /** Runs every registered deletion handler before the user row goes. */
  beforeDeleteUser?: (userId: string) => Promise<void>
  /** Told of every account created (any sign-up path), for metrics and product analytics; must not throw. */
  onUserCreated?: (userId: string) => void
  /**
   * Told when a session or a whole user is deleted, so open sockets stop authorizing,
   * and (`userChanged`) when a user row changes, so cached identities are re-read.
   */
  onRevoked?: (revocation: { userId: string, sessionId?: string, userChanged?: boolean }) => Promise<void>
}

/** How client secrets are stored; seeding hashes them the same way the provider verifies them. */
export function hashClientSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url')
}

/**
 * The provider's client-management endpoints. They answer any signed-in user
 * (registration, creating clients with any redirect URI), so they are not served.
 */
const CLIENT_MANAGEMENT_PATHS = [
  '/oauth2/register',
  '/oauth2/create-client',
  '/oauth2/get-client',
  '/oauth2/get-clients',
  '/oauth2/update-client',
  '/oauth2/delete-client',
  '/oauth2/client/rotate-secret',
]

/** Seconds a JWT access token is valid for; short, because it cannot be revoked by itself. */
const ACCESS_TOKEN_TTL_SECONDS = 15 * 60

/**
 * The better-auth configuration. Its tables are migration 0016; `migrate.test.ts`
 * checks with better-auth's `getMigrations` that these options need nothing more.
 */
export function createAuthOptions({ db, settings, email, logger, beforeDeleteUser, onUserCreated, onRevoked }: AuthOptionsDeps) {
  const baseUrl = settings.baseUrl.replace(/\/$/, '')
  const requireEmail = () => {
    if (!email)
      throw new Error('e-mail service is not configured')
    return email
  }
  // Our domain errors (an e-mail that could not be sent, a deletion handler that
  // failed) reach better-auth's client as its own error shape, status and code kept.
  const asAuthError = async (work: () => Promise<void>) => {
    try {
      await work()
    }
    catch (error) {
      if (error instanceof ApiError)
        throw new APIError(error.status as ConstructorParameters<typeof APIError>[0], { message: error.message, code: error.code })
      throw error
    }
  }

  return {
    appName: 'AIRI',
    baseURL: baseUrl,
    basePath: AUTH_BASE_PATH,
    secret: settings.secret,
    database: { db, type: 'postgres' },
    trustedOrigins: settings.trustedOrigins ?? [],
    // Our Fastify hook rate-limits /api/auth/* per IP through the shared counter port.
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
    logger: {
      log: (level, message, ...args) => logger?.[level]({ args }, `better-auth: ${message}`),
    },
    // The OAuth provider serves tokens at /oauth2/token; better-auth's own /token would confuse clients.
    disabledPaths: ['/token', ...CLIENT_MANAGEMENT_PATHS],
    emailAndPassword: {
      enabled: true,
      requireEmailVerification: true,
      revokeSessionsOnPasswordReset: true,
      sendResetPassword: ({ user, url }) => asAuthError(() => requireEmail().sendPasswordReset({ to: user.email, url })),
    },
    emailVerification: {
      sendOnSignUp: true,
      sendOnSignIn: true,
      autoSignInAfterVerification: true,
      sendVerificationEmail: ({ user, url }) => asAuthError(() => requireEmail().sendVerificationEmail({ to: user.email, url })),
    },
    user: {
      changeEmail: {
        enabled: true,
        sendChangeEmailConfirmation: ({ user, newEmail, url }) => asAuthError(() => requireEmail().sendChangeEmailVerification({ to: user.email, newEmail, url })),
      },
      deleteUser: {
        enabled: true,
        sendDeleteAccountVerification: ({ user, url }) => asAuthError(() => requireEmail().sendDeleteAccountVerification({ to: user.email, url })),
        beforeDelete: user => asAuthError(async () => beforeDeleteUser?.(user.id)),
      },
    },
    // Sign-out, revocation, password reset/change and account deletion all end in
    // these deletes; open WebSockets and cached identities learn of them through
    // `onRevoked`, as cached identities do of name, e-mail and verification changes.
    // better-auth runs these after its transaction commits.
    databaseHooks: {
      session: { delete: { after: async session => onRevoked?.({ userId: session.userId, sessionId: session.id }) } },
      user: {
        create: { after: async user => onUserCreated?.(user.id) },
        update: { after: async user => user ? onRevoked?.({ userId: user.id, userChanged: true }) : undefined },
        delete: { after: async user => onRevoked?.({ userId: user.id }) },
      },
    },
    socialProviders: {
      ...(settings.google ? { google: settings.google } : {}),
      ...(settings.github ? { github: settings.github } : {}),
    },
    plugins: [
      // First, so every route and plugin reads through it.
      outageAwareDatabase(),
      bearer(),
      jwt({
        jwt: { issuer: `${baseUrl}${AUTH_BASE_PATH}`, audience: baseUrl, expirationTime: `${ACCESS_TOKEN_TTL_SECONDS}s` },
        // Sessions are not JWTs; only the OAuth provider signs tokens.
        disableSettingJwtHeader: true,
      }),
      magicLink({
        sendMagicLink: ({ email: to, url }) => asAuthError(() => requireEmail().sendMagicLink({ to, url })),
      }),
      oauthProvider({
        loginPage: SIGN_IN_PATH,
        consentPage: SIGN_IN_PATH,
        scopes: ['openid', 'profile', 'email', 'offline_access'],
        resources: [baseUrl],
        accessTokenExpiresIn: ACCESS_TOKEN_TTL_SECONDS,
        allowDynamicClientRegistration: false,
        // Only the env-configured clients exist (seeded through the adapter, which
        // these checks do not guard); no session may create, read or change one.
        clientPrivileges: () => false,
        resourcePrivileges: () => false,
        storeClientSecret: { hash: hashClientSecret },
      }),
    ],
  } satisfies BetterAuthOptions
}

