import type { Logger } from './logger.ts'
import type { Services } from './services/index.ts'

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
}

/** What a transport hands the auth resolver: the request's headers, and for WebSockets the connection params. */
export interface AuthInput {
  headers: Headers
  connectionParams?: Record<string, string | undefined> | null
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
export type ProcedureServices = Pick<Services, 'billing' | 'characters' | 'chats' | 'config' | 'fluxGrants' | 'llmGateway' | 'meta' | 'providers' | 'sessionGuard' | 'streamingSpeech' | 'stripe'>

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
  adminEmails: ReadonlySet<string>
}
