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

/**
 * Upserts the env-configured clients into the provider's client table, linked to
 * our API resource, so their ids and secrets come from configuration rather than
 * registration. They skip the consent screen: they are ours.
 */
export async function seedTrustedClients(auth: Auth, clients: TrustedClient[], resource: string): Promise<void> {
  if (clients.length === 0)
    return
  const { adapter } = await auth.$context

  for (const client of clients) {
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
}
