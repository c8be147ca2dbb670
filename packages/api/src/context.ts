import type { Logger } from './logger.ts'
import type { Services } from './services/index.ts'
import type { ApiKeyScope, KeyIdentity } from './services/api-keys/index.ts'

export interface AuthUser {
  id: string
  email: string
  emailVerified: boolean
  name: string
}

export interface AuthSession {
  id: string
  userId: string
  expiresAt: Date
  /** A JWT access token's own expiry: it stops authorizing then, whatever its session does. */
  tokenExpiresAt?: Date
}

/** What every transport knows about the caller once the request is authenticated. */
export interface RequestAuth {
  user: AuthUser
  session: AuthSession
  /** Set when the credential is a personal API key (SPEC §4.17): its scopes, budget and rate limit. */
  apiKey?: KeyIdentity
}

/** What a transport hands the auth resolver: the request's headers, and for WebSockets the connection params. */
export interface AuthInput {
  headers: Headers
  connectionParams?: Record<string, string | undefined> | null
  /**
   * The gateway scope of the route asking, on the REST gateways only: a personal API
   * key authenticates there when it has the scope (403 `KEY_SCOPE` otherwise), and
   * nowhere without it.
   */
  keyScope?: ApiKeyScope
}

/**
 * Turns a request into `{ user, session }`, or null for an anonymous caller. One
 * resolver serves HTTP, tRPC (HTTP and WS) and raw WebSockets; it is pluggable so
 * the host decides how identities are proven.
 */
export type RequestAuthResolver = (input: AuthInput) => Promise<RequestAuth | null>

/** A long-lived connection (tRPC over WebSocket): its identity is re-checked on every call. */
export interface LiveConnection {
  /** Subscriptions open on this connection now. */
  subscriptions: number
  maxSubscriptions: number
}

/** The services procedures (and trpc.ts's middleware) call; the host reaches the rest through `api.services`. */
export type ProcedureServices = Pick<Services, 'apiKeys' | 'billing' | 'characters' | 'chats' | 'config' | 'fluxGrants' | 'llmGateway' | 'memory' | 'meta' | 'operator' | 'providers' | 'sessionGuard' | 'streamingSpeech' | 'streamingTranscription' | 'stripe' | 'usage'>

export interface Context {
  /**
   * The caller, or null when anonymous. Resolved on the first call and memoised for
   * the request (a WebSocket's: for the connection), so public procedures that never
   * ask cost no auth work; `protectedProcedure` puts the result in `ctx.auth`.
   */
  getAuth: () => Promise<RequestAuth | null>
  /** Set for WebSocket connections, whose context outlives many calls. */
  connection?: LiveConnection
  services: ProcedureServices
  logger: Logger
  requestId: string
  /** The caller's languages from `Accept-Language`, most preferred first (for a character's prompts). */
  languages: string[]
}

/** The language tags of an `Accept-Language` header, by their `q` (at most 8; `*` left out). */
export function acceptedLanguages(header: string | null | undefined): string[] {
  if (!header)
    return []
  return header.split(',').slice(0, 32).map((part, index) => {
    const [tag = '', ...params] = part.trim().split(';')
    const q = Number(params.map(param => param.trim()).find(param => param.startsWith('q='))?.slice(2) ?? 1)
    return { tag: tag.trim(), q: Number.isFinite(q) ? q : 0, index }
  }).filter(entry => /^[a-z]{1,8}(?:-[a-z0-9]{1,8})*$/i.test(entry.tag) && entry.q > 0)
    .sort((a, b) => b.q - a.q || a.index - b.index).slice(0, 8).map(entry => entry.tag)
}
