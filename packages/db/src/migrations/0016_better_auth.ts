import type { Kysely, RawBuilder } from 'kysely'
import { sql } from 'kysely'

/**
 * better-auth's tables for our plugin set (bearer, jwt, magic-link, OAuth provider).
 * Until this migration the server created them at start with better-auth's
 * `getMigrations`; databases from then already have them, so every statement is
 * `if not exists` and this is a no-op there. The statements are better-auth 1.7's
 * `getMigrations(createAuthOptions(…)).compileMigrations()` on an empty database,
 * with `if not exists` added. When a better-auth upgrade or a new plugin needs
 * more, `packages/api/src/migrate.test.ts` fails: add a migration with what
 * `compileMigrations()` then prints.
 */
const statements: RawBuilder<unknown>[] = [
  sql`create table if not exists "user" ("id" text not null primary key, "name" text not null, "email" text not null unique, "emailVerified" boolean not null, "image" text, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz default CURRENT_TIMESTAMP not null)`,
  sql`create table if not exists "session" ("id" text not null primary key, "expiresAt" timestamptz not null, "token" text not null unique, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz not null, "ipAddress" text, "userAgent" text, "userId" text not null references "user" ("id") on delete cascade)`,
  sql`create table if not exists "account" ("id" text not null primary key, "accountId" text not null, "providerId" text not null, "userId" text not null references "user" ("id") on delete cascade, "accessToken" text, "refreshToken" text, "idToken" text, "accessTokenExpiresAt" timestamptz, "refreshTokenExpiresAt" timestamptz, "scope" text, "password" text, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz not null)`,
  sql`create table if not exists "verification" ("id" text not null primary key, "identifier" text not null, "value" text not null, "expiresAt" timestamptz not null, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz default CURRENT_TIMESTAMP not null)`,
  sql`create table if not exists "jwks" ("id" text not null primary key, "publicKey" text not null, "privateKey" text not null, "createdAt" timestamptz not null, "expiresAt" timestamptz, "alg" text, "crv" text)`,
  sql`create table if not exists "oauthClient" ("id" text not null primary key, "clientId" text not null unique, "clientSecret" text, "clientDiscoveryId" text, "disabled" boolean, "skipConsent" boolean, "enableEndSession" boolean, "subjectType" text, "scopes" jsonb, "clientCredentialsScopes" jsonb, "userId" text references "user" ("id") on delete cascade, "createdAt" timestamptz, "updatedAt" timestamptz, "name" text, "uri" text, "icon" text, "contacts" jsonb, "tos" text, "policy" text, "softwareId" text, "softwareVersion" text, "softwareStatement" text, "redirectUris" jsonb not null, "postLogoutRedirectUris" jsonb, "backchannelLogoutUri" text, "backchannelLogoutSessionRequired" boolean, "tokenEndpointAuthMethod" text, "applicationType" text, "jwks" text, "jwksUri" text, "grantTypes" jsonb, "responseTypes" jsonb, "requirePKCE" boolean, "dpopBoundAccessTokens" boolean, "referenceId" text, "metadata" jsonb)`,
  sql`create table if not exists "oauthResource" ("id" text not null primary key, "identifier" text not null unique, "name" text not null, "accessTokenTtl" integer, "refreshTokenTtl" integer, "signingAlgorithm" text, "signingKeyId" text, "allowedScopes" jsonb, "customClaims" jsonb, "dpopBoundAccessTokensRequired" boolean, "disabled" boolean, "createdAt" timestamptz, "updatedAt" timestamptz, "policyVersion" integer, "metadata" jsonb)`,
  sql`create table if not exists "oauthClientResource" ("id" text not null primary key, "clientId" text not null references "oauthClient" ("clientId") on delete cascade, "resourceId" text not null references "oauthResource" ("identifier") on delete cascade, "metadata" jsonb, "createdAt" timestamptz)`,
  sql`create table if not exists "oauthRefreshToken" ("id" text not null primary key, "token" text not null unique, "clientId" text not null references "oauthClient" ("clientId") on delete cascade, "sessionId" text references "session" ("id") on delete set null, "userId" text not null references "user" ("id") on delete cascade, "referenceId" text, "authorizationCodeId" text, "resources" jsonb, "requestedUserInfoClaims" jsonb, "expiresAt" timestamptz not null, "createdAt" timestamptz not null, "revoked" timestamptz, "rotatedAt" timestamptz, "rotationReplayResponse" text, "rotationReplayExpiresAt" timestamptz, "authTime" timestamptz, "confirmation" jsonb, "scopes" jsonb not null)`,
  sql`create table if not exists "oauthAccessToken" ("id" text not null primary key, "token" text not null unique, "clientId" text not null references "oauthClient" ("clientId") on delete cascade, "sessionId" text references "session" ("id") on delete set null, "userId" text references "user" ("id") on delete cascade, "referenceId" text, "authorizationCodeId" text, "resources" jsonb, "requestedUserInfoClaims" jsonb, "refreshId" text references "oauthRefreshToken" ("id") on delete cascade, "expiresAt" timestamptz not null, "createdAt" timestamptz not null, "revoked" timestamptz, "confirmation" jsonb, "scopes" jsonb not null)`,
  sql`create table if not exists "oauthConsent" ("id" text not null primary key, "clientId" text not null references "oauthClient" ("clientId") on delete cascade, "userId" text references "user" ("id") on delete cascade, "referenceId" text, "resources" jsonb, "requestedUserInfoClaims" jsonb, "scopes" jsonb not null, "createdAt" timestamptz not null, "updatedAt" timestamptz not null)`,
  sql`create table if not exists "oauthClientAssertion" ("id" text not null primary key, "expiresAt" timestamptz not null)`,
  sql`create index if not exists "session_userId_idx" on "session" ("userId")`,
  sql`create index if not exists "account_userId_idx" on "account" ("userId")`,
  sql`create index if not exists "verification_identifier_idx" on "verification" ("identifier")`,
  sql`create index if not exists "oauthClient_userId_idx" on "oauthClient" ("userId")`,
  sql`create index if not exists "oauthClientResource_clientId_idx" on "oauthClientResource" ("clientId")`,
  sql`create index if not exists "oauthClientResource_resourceId_idx" on "oauthClientResource" ("resourceId")`,
  sql`create index if not exists "oauthRefreshToken_clientId_idx" on "oauthRefreshToken" ("clientId")`,
  sql`create index if not exists "oauthRefreshToken_sessionId_idx" on "oauthRefreshToken" ("sessionId")`,
  sql`create index if not exists "oauthRefreshToken_userId_idx" on "oauthRefreshToken" ("userId")`,
  sql`create index if not exists "oauthRefreshToken_authorizationCodeId_idx" on "oauthRefreshToken" ("authorizationCodeId")`,
  sql`create index if not exists "oauthAccessToken_clientId_idx" on "oauthAccessToken" ("clientId")`,
  sql`create index if not exists "oauthAccessToken_sessionId_idx" on "oauthAccessToken" ("sessionId")`,
  sql`create index if not exists "oauthAccessToken_userId_idx" on "oauthAccessToken" ("userId")`,
  sql`create index if not exists "oauthAccessToken_authorizationCodeId_idx" on "oauthAccessToken" ("authorizationCodeId")`,
  sql`create index if not exists "oauthAccessToken_refreshId_idx" on "oauthAccessToken" ("refreshId")`,
  sql`create index if not exists "oauthConsent_clientId_idx" on "oauthConsent" ("clientId")`,
  sql`create index if not exists "oauthConsent_userId_idx" on "oauthConsent" ("userId")`,
  sql`create unique index if not exists "oauthClientResource_clientId_resourceId_uidx" on "oauthClientResource" ("clientId", "resourceId")`,
]

export async function up(db: Kysely<any>): Promise<void> {
  for (const statement of statements)
    await statement.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of [
    'oauthClientAssertion',
    'oauthConsent',
    'oauthAccessToken',
    'oauthRefreshToken',
    'oauthClientResource',
    'oauthResource',
    'oauthClient',
    'jwks',
    'verification',
    'account',
    'session',
    'user',
  ])
    await db.schema.dropTable(table).ifExists().execute()
}
