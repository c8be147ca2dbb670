import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose'

import type { Clock } from '../clock.ts'
import type { AuthInput, RequestAuth, RequestAuthResolver } from '../context.ts'
import { ApiError, outageError } from '../errors.ts'
import { isApiKey, keySessionId, type ApiKeyService } from '../services/api-keys/index.ts'
import type { Logger } from '../logger.ts'
import type { Auth } from './auth.ts'
import { credentialKey, type IdentityCache } from './identity-cache.ts'
import { surfaceOutage } from './outage.ts'

/** How long the JWKS read from the database is trusted before it is read again. */
const JWKS_TTL_MS = 5 * 60_000
/**
 * The least time between two reloads for a token whose key we do not know. A key
 * rotated in the meantime is picked up by then; tokens naming made-up keys cannot
 * turn every request into a database read.
 */
const JWKS_RELOAD_COOLDOWN_MS = 30_000

interface UserRow {
  id: string
  email: string
  emailVerified: boolean
  name: string
}

interface SessionRow {
  id: string
  userId: string
  expiresAt: Date
}

/** A caller, and until when these credentials authorize by themselves (session or token expiry). */
interface Resolved {
  auth: RequestAuth
  until: number
}

/** A JWT has three dot-separated parts; session tokens (plain or signed) have at most two. */
function isJwt(token: string): boolean {
  return token.split('.').length === 3
}

function bearerToken(authorization: string): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(authorization)?.[1]
}

export interface RequestAuthResolverOptions {
  auth: Auth
  issuer: string
  audience: string
  logger: Logger
  /** The JWKS cache's age and the expiry of tokens and sessions are read against it. */
  clock: Clock
  /** Callers already resolved, by credential; without it every request asks Postgres. */
  identities?: IdentityCache
  /** Personal API keys; without it a key is an unknown bearer token. */
  apiKeys?: Pick<ApiKeyService, 'authenticate'>
}

/**
 * The one request-auth resolver for HTTP, tRPC (HTTP and WebSocket) and raw
 * WebSockets. A bearer JWT access token is verified locally against our JWKS
 * (signature, issuer, audience, expiry), then its user and session rows are read;
 * anything else is a better-auth session (cookie, or bearer session token).
 * WebSocket clients pass their token as the `token` connection param. Answers
 * are kept in the identity cache, so a known credential costs no SQL.
 */
export function createRequestAuthResolver({ auth, issuer, audience, logger, clock, identities, apiKeys }: RequestAuthResolverOptions): RequestAuthResolver {
  let keySet: { verify: ReturnType<typeof createLocalJWKSet>, loadedAt: number } | undefined
  // One load at a time: concurrent requests that need keys share it.
  let loading: Promise<NonNullable<typeof keySet>> | undefined

  /** The key set; `force` (a token named an unknown key) reloads it unless it was loaded within the cooldown. */
  async function loadKeys(force: boolean) {
    const age = keySet ? clock.now() - keySet.loadedAt : Number.POSITIVE_INFINITY
    if (age > JWKS_TTL_MS || (force && age >= JWKS_RELOAD_COOLDOWN_MS)) {
      loading ??= (async () => {
        try {
          const jwks = await auth.api.getJwks() as JSONWebKeySet
          keySet = { verify: createLocalJWKSet(jwks), loadedAt: clock.now() }
          return keySet
        }
        finally {
          loading = undefined
        }
      })()
      return (await loading).verify
    }
    return keySet!.verify
  }

  async function verifyAccessToken(token: string): Promise<JWTPayload | null> {
    const options = { issuer, audience, algorithms: ['EdDSA', 'ES256', 'ES512', 'RS256', 'PS256'], currentDate: new Date(clock.now()) }
    try {
      return (await jwtVerify(token, await loadKeys(false), options)).payload
    }
    catch (error) {
      // A key rotated since we loaded the set: reload (at most once per cooldown) and retry.
      if (error instanceof joseErrors.JWKSNoMatchingKey) {
        try {
          return (await jwtVerify(token, await loadKeys(true), options)).payload
        }
        catch {
          return null
        }
      }
      // Our key store out of reach says nothing about the token: the caller answers 503.
      if (outageError(error))
        throw error
      if (!(error instanceof joseErrors.JOSEError))
        logger.warn({ err: error }, 'unexpected error verifying an access token')
      return null
    }
  }

  async function fromAccessToken(token: string): Promise<Resolved | null> {
    const payload = await verifyAccessToken(token)
    if (!payload?.sub)
      return null
    const { adapter } = await auth.$context
    const user = await adapter.findOne<UserRow>({ model: 'user', where: [{ field: 'id', value: payload.sub }] })
    if (!user)
      return null
    // A token bound to a session dies with it (sign-out, password reset, revocation).
    const sid = typeof payload.sid === 'string' ? payload.sid : undefined
    const tokenExpiresAt = (payload.exp ?? 0) * 1000
    let until = tokenExpiresAt
    if (sid) {
      const session = await adapter.findOne<SessionRow>({ model: 'session', where: [{ field: 'id', value: sid }] })
      if (!session || new Date(session.expiresAt).getTime() <= clock.now())
        return null
      until = Math.min(until, new Date(session.expiresAt).getTime())
    }
    return {
      auth: {
        user: { id: user.id, email: user.email, emailVerified: user.emailVerified, name: user.name },
        session: { id: sid ?? `jwt:${payload.jti ?? payload.iat}`, userId: user.id, expiresAt: new Date(tokenExpiresAt), tokenExpiresAt: new Date(tokenExpiresAt) },
      },
      until,
    }
  }

  /** A personal API key: its user, under a session id of its own (revoking the key drops it from every cache). */
  async function fromApiKey(token: string): Promise<Resolved | null> {
    const key = await apiKeys?.authenticate(token)
    if (!key)
      return null
    const { adapter } = await auth.$context
    const user = await adapter.findOne<UserRow>({ model: 'user', where: [{ field: 'id', value: key.userId }] })
    if (!user)
      return null
    const until = key.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY
    return {
      auth: {
        user: { id: user.id, email: user.email, emailVerified: user.emailVerified, name: user.name },
        session: { id: keySessionId(key.keyId), userId: user.id, expiresAt: key.expiresAt ?? new Date(8.64e15) },
        apiKey: key,
      },
      until,
    }
  }

  async function resolveUncached(headers: Headers, authorization: string): Promise<Resolved | null> {
    const token = bearerToken(authorization)
    if (token && isJwt(token))
      return fromAccessToken(token)
    if (token && isApiKey(token))
      return fromApiKey(token)

    const requestHeaders = new Headers(headers)
    if (authorization && !requestHeaders.has('authorization'))
      requestHeaders.set('authorization', authorization)
    const result = await auth.api.getSession({ headers: requestHeaders })
    if (!result)
      return null
    const { user, session } = result
    const expiresAt = new Date(session.expiresAt)
    return {
      auth: {
        user: { id: user.id, email: user.email, emailVerified: user.emailVerified, name: user.name },
        session: { id: session.id, userId: session.userId, expiresAt },
      },
      until: expiresAt.getTime(),
    }
  }

  let sessionCookieName: string | undefined
  // Resolutions under way, by credential: a burst of requests with one new token reads Postgres once.
  const pending = new Map<string, { since: number, result: Promise<RequestAuth | null> }>()

  /**
   * A key answers only where a gateway asks with the key's scope: anywhere else
   * (tRPC, account operations, sockets) it is no caller at all.
   */
  function admit(resolved: RequestAuth | null, keyScope: AuthInput['keyScope']): RequestAuth | null {
    if (!resolved?.apiKey)
      return resolved
    if (!keyScope)
      return null
    if (!resolved.apiKey.scopes.includes(keyScope))
      throw new ApiError(403, 'KEY_SCOPE', `This API key may not be used for ${keyScope}; make a key with that scope`, { scope: keyScope })
    return resolved
  }

  return async (input: AuthInput) => admit(await resolveAny(input), input.keyScope)

  async function resolveAny({ headers, connectionParams }: AuthInput): Promise<RequestAuth | null> {
    const paramToken = connectionParams?.token
    const authorization = headers.get('authorization') ?? (paramToken ? `Bearer ${paramToken}` : '')
    const cookie = headers.get('cookie') ?? ''
    sessionCookieName ??= (await auth.$context).authCookies.sessionToken.name
    // No credentials: anonymous, without asking better-auth.
    if (!bearerToken(authorization) && !cookie.includes(sessionCookieName))
      return null
    // A read that failed because Postgres is out of reach throws the database's own
    // error (the caller answers 503), not better-auth's generic one.
    const resolve = () => surfaceOutage(() => resolveUncached(headers, authorization))
    if (!identities)
      return (await resolve())?.auth ?? null

    // Everything the answer depends on is in the key; a bad bearer beside a good cookie is its own entry.
    const key = credentialKey(authorization, cookie)
    const cached = identities.get(key)
    if (cached)
      return cached
    const shared = pending.get(key)
    // Joined only if nothing was revoked since it began (it may have read the revoked row).
    if (shared && identities.current(shared.since))
      return shared.result
    const since = identities.begin()
    const result = resolve().then((resolved) => {
      if (!resolved)
        return null
      identities.fill(key, resolved.auth, resolved.until, since)
      return resolved.auth
    })
    const entry = { since, result }
    pending.set(key, entry)
    void result.then(() => {}, () => {}).finally(() => {
      if (pending.get(key) === entry)
        pending.delete(key)
    })
    return result
  }
}
