import { withMigrationLock, type Db } from '@airi/db'

import type { Auth } from './auth.ts'
import { hashClientSecret } from './options.ts'

/** A first-party OAuth client configured by env (web, desktop, mobile). */
export interface TrustedClient {
  clientId: string
  name: string
  /** Matched exactly at the authorize and token endpoints. */
  redirectUris: string[]
  /** Confidential clients authenticate at the token endpoint; without a secret the client is public (PKCE only). */
  clientSecret?: string
  /** `native` allows loopback and custom-scheme redirects (desktop, mobile). */
  applicationType: 'web' | 'native'
}

const GRANT_TYPES = ['authorization_code', 'refresh_token']

export interface SeedTrustedClientsInput {
  auth: Auth
  /** Where the migration lock is taken; the seeding itself goes through better-auth's adapter. */
  db: Db
  clients: TrustedClient[]
  /** Our API resource (its identifier, the base URL), which the clients are linked to. */
  resource: string
}

/**
 * Upserts the env-configured clients into the provider's client table, linked to
 * our API resource, so their ids and secrets come from configuration rather than
 * registration. They skip the consent screen: they are ours. Every other client
 * (one removed from env) is disabled: only env-configured clients exist.
 *
 * Runs under the migration lock, so instances starting together take turns
 * instead of racing to create the same rows. The lock holds one pooled connection
 * while the adapter uses another, so the pool needs at least two.
 */
export async function seedTrustedClients({ auth, db, clients, resource }: SeedTrustedClientsInput): Promise<void> {
  const { adapter } = await auth.$context
  await withMigrationLock(db, async () => {
    for (const client of clients)
      await upsertClient(adapter, client, resource)
    const kept = clients.map(client => client.clientId)
    await adapter.updateMany({
      model: 'oauthClient',
      where: [
        ...(kept.length > 0 ? [{ field: 'clientId', operator: 'not_in' as const, value: kept }] : []),
        { field: 'disabled', value: false },
      ],
      update: { disabled: true, updatedAt: new Date() },
    })
  })
}

type AuthAdapter = Awaited<Auth['$context']>['adapter']

async function upsertClient(adapter: AuthAdapter, client: TrustedClient, resource: string): Promise<void> {
  const fields = {
    clientId: client.clientId,
    clientSecret: client.clientSecret ? hashClientSecret(client.clientSecret) : null,
    name: client.name,
    redirectUris: client.redirectUris,
    tokenEndpointAuthMethod: client.clientSecret ? 'client_secret_post' : 'none',
    applicationType: client.applicationType,
    grantTypes: GRANT_TYPES,
    responseTypes: ['code'],
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    requirePKCE: true,
    skipConsent: true,
    disabled: false,
    updatedAt: new Date(),
  }
  const existing = await adapter.findOne<{ id: string }>({ model: 'oauthClient', where: [{ field: 'clientId', value: client.clientId }] })
  if (existing)
    await adapter.update({ model: 'oauthClient', where: [{ field: 'id', value: existing.id }], update: fields })
  else
    await adapter.create({ model: 'oauthClient', data: { ...fields, createdAt: new Date() } })

  // The provider only issues tokens for resources a client is linked to (by identifier).
  const link = await adapter.findOne({
    model: 'oauthClientResource',
    where: [{ field: 'clientId', value: client.clientId }, { field: 'resourceId', value: resource }],
  })
  if (!link)
    await adapter.create({ model: 'oauthClientResource', data: { clientId: client.clientId, resourceId: resource, createdAt: new Date() } })
}
